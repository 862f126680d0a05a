/** The built-in lab-value task: labels agree with the ranges, splits are disjoint and balanced, the reward grades it. */
import { ok as assert } from "node:assert/strict";
import {
  classifyLabValue,
  LAB_ANALYTES,
  labCompactPrompt,
  labRow,
  labTaskSplits,
} from "../lib/data/lab_task.ts";
import { medvlthinkerReward } from "../lib/reward/medvlthinker.ts";

Deno.test("lab task: labels follow each analyte's reference range", () => {
  const k = LAB_ANALYTES.find((a) => a.name === "Potassium")!;
  assert(classifyLabValue(k, 3.4) === "low" && classifyLabValue(k, 3.5) === "normal");
  assert(classifyLabValue(k, 5.0) === "normal" && classifyLabValue(k, 5.1) === "high");
  const row = labRow(k, 6.2);
  assert(row.answerLabel === "C" && row.answer === "high" && row.options.C === "high");
  assert(row.question.startsWith("Potassium 6.2 mmol/L"), row.question);
  const { test, train } = labTaskSplits({ train: 500, test: 300, seed: 2 });
  for (const r of [...train, ...test]) {
    const a = LAB_ANALYTES.find((x) => x.name === r.analyte)!;
    const cls = classifyLabValue(a, r.value);
    assert(r.answer === cls && r.options[r.answerLabel] === cls, `${r.question} -> ${r.answerLabel}`);
  }
});

Deno.test("lab task: held-out split is distinct, disjoint from training, a third per class, reproducible", () => {
  const a = labTaskSplits({ train: 3000, test: 600, seed: 1 });
  const b = labTaskSplits({ train: 3000, test: 600, seed: 1 });
  assert(JSON.stringify(a) === JSON.stringify(b), "same seed, same splits");
  const c = labTaskSplits({ train: 3000, test: 600, seed: 2 });
  assert(JSON.stringify(a.test) !== JSON.stringify(c.test), "another seed, another split");
  const ids = new Set(a.test.map((r) => r.id));
  assert(ids.size === 600, `held-out questions must be distinct, got ${ids.size}`);
  assert(!a.train.some((r) => ids.has(r.id)), "no held-out question is in the training split");
  for (const label of ["A", "B", "C"]) {
    assert(a.test.filter((r) => r.answerLabel === label).length === 200, `class ${label}`);
  }
  let msg = "";
  try {
    labTaskSplits({ test: 100000 });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("held-out") && msg.includes("distinct"), msg);
});

Deno.test("lab task: the recipe's reward grades it; compact prompt has no system prompt", () => {
  const row = labRow(LAB_ANALYTES[0], 2.1);
  assert(medvlthinkerReward("<think> low </think>\n<answer> A </answer>", row).reward === 1);
  assert(medvlthinkerReward("<think> x </think>\n<answer> low </answer>", row).reward === 1);
  assert(medvlthinkerReward("<think> x </think>\n<answer> B </answer>", row).reward === 0);
  const p = labCompactPrompt(row);
  assert(p.startsWith("<|im_start|>user\nPotassium 2.1 mmol/L?\nA. low\nB. normal\nC. high<|im_end|>"), p);
  assert(p.endsWith("<|im_start|>assistant\n") && !p.includes("system"), p);
});

Deno.test("lab task: demo analytes share one shape and a leading-digit rule that depends on the analyte", async () => {
  const { LAB_DEMO_ANALYTES } = await import("../lib/data/lab_task.ts");
  const { train, test } = labTaskSplits({ train: 2000, test: 600, seed: 0, analytes: LAB_DEMO_ANALYTES });
  const rule = new Map<string, string>();
  for (const r of [...train, ...test]) {
    assert(/^\d\.\d\d$/.test(r.valueText) && r.unit === "mmol/L", r.question);
    const key = `${r.analyte}:${r.valueText[0]}`;
    assert(!rule.has(key) || rule.get(key) === r.answer, `${key} is both ${rule.get(key)} and ${r.answer}`);
    rule.set(key, r.answer);
  }
  // 3.xx: low glucose, normal potassium.
  assert(rule.get("Glucose:3") === "low" && rule.get("Potassium:3") === "normal");
});
