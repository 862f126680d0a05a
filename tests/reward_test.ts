import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";
import { medvlthinkerReward, medvlthinkerRewardFn } from "../lib/reward/medvlthinker.ts";
import { extractAnswer, lenientGrade } from "../lib/reward/lenient.ts";
import { softFormatReward } from "../lib/reward/soft_format.ts";
import { namedReward, normalizeRewards, scoreCompletions } from "../lib/reward/types.ts";
import { BUILTIN_REWARDS, rewardByName } from "../lib/reward/registry.ts";
import type { Row } from "../lib/data/types.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

function readJsonl(name: string): any[] {
  return Deno.readTextFileSync(`${FIXTURES}/${name}`).split("\n").filter((l) => l.trim()).map((l) =>
    JSON.parse(l)
  );
}

const ROW: Row = {
  id: "q1",
  question: "Which organ secretes insulin?",
  options: { A: "Liver", B: "Pancreas", C: "Spleen", D: "Kidney" },
  answerLabel: "B",
  answer: "Pancreas",
  images: [],
};

Deno.test("medvlthinkerReward: every case of reward_cases.jsonl (snake_case rows)", () => {
  const cases = readJsonl("reward_cases.jsonl");
  assertEquals(cases.length, 20);
  for (const c of cases) {
    const got = medvlthinkerReward(c.response, c);
    assertEquals(got, { format: c.format, accuracy: c.accuracy, reward: c.reward }, c.note);
  }
});

Deno.test("medvlthinkerReward: every case with canonical rows (answerLabel, answer from options)", () => {
  for (const c of readJsonl("reward_cases.jsonl")) {
    const row = { ...ROW, answerLabel: c.answer_label, answer: c.answer };
    assertEquals(medvlthinkerRewardFn(c.response, row), c.reward, c.note);
    // Without `answer`, the text comes from the options.
    const { answer: _drop, ...noAnswer } = row;
    assertEquals(medvlthinkerReward(c.response, noAnswer).accuracy, c.accuracy, c.note);
  }
});

Deno.test("medvlthinkerReward: Python semantics at the edges", () => {
  // A special token left in the decoded text fails the format check.
  assertEquals(medvlthinkerReward("<think>x</think><answer>B</answer><|im_end|>", ROW).format, 0);
  // `.` in the accuracy regex does not match "\n" but does match "\r" (Python), unlike JavaScript's `.`.
  assertEquals(medvlthinkerReward("<think>x</think><answer>B\r</answer>", ROW).accuracy, 1);
  // Python's strip() removes \x1c..\x1f and \x85 and keeps \ufeff.
  assertEquals(medvlthinkerReward("<think>x</think><answer>\x1fB\x85</answer>", ROW).accuracy, 1);
  assertEquals(medvlthinkerReward("<think>x</think><answer>\ufeffB</answer>", ROW).accuracy, 0);
  // \s between the blocks is Python's: \x1c counts as whitespace.
  assertEquals(medvlthinkerReward("<think>x</think>\x1c<answer>B</answer>", ROW).format, 1);
  assertEquals(medvlthinkerReward("<think>x</think>\ufeff<answer>B</answer>", ROW).format, 0);
  assertThrows(() => medvlthinkerReward("B", { answer: "x" }), /no answerLabel/);
});

Deno.test("lenientGrade: every case of lenient_cases.jsonl", () => {
  const cases = readJsonl("lenient_cases.jsonl");
  assertEquals(cases.length, 15);
  for (const c of cases) {
    const got = lenientGrade(c.response, c);
    assertEquals(
      got,
      { extracted: c.extracted, predictedLabel: c.predicted_label, correct: c.correct },
      c.response,
    );
    assertEquals(lenientGrade(c.response, { ...ROW, options: c.options }).correct, c.correct);
  }
  assertEquals(extractAnswer("answer is x\nand the answer: C"), "C");
  assertEquals(lenientGrade("answer: b", { ...ROW, options: JSON.stringify(ROW.options) } as any).correct, 1);
  assertThrows(() => lenientGrade("B", { answerLabel: "B", answer: "x" }), /needs the row's options/);
});

Deno.test("softFormatReward: partial credit, 1 for the strict format", () => {
  assertEquals(softFormatReward("<think>x</think>\n<answer>B</answer>"), 1);
  assertEquals(softFormatReward("B"), 0);
  assertEquals(softFormatReward("<think>x</think> B"), 0.25);
  assertEquals(softFormatReward("<answer>B</answer>"), 0.25);
  assertEquals(softFormatReward("<think>x</think><answer>B</answer> trailing"), 0.75);
  assertEquals(softFormatReward("Sure. <think>x</think><answer>B</answer>"), 0.75);
  assertEquals(softFormatReward("<answer>B</answer><think>x</think>"), 0.5);
  assertEquals(softFormatReward("<think>x</think>\n<answer>B</answer>\n"), 0.75);
  assertEquals(softFormatReward("<think>x</think>so<answer>B</answer>"), 0.75);
  for (const c of readJsonl("reward_cases.jsonl")) {
    if (c.format === 1) assertEquals(softFormatReward(c.response), 1, c.note);
    else assert(softFormatReward(c.response) < 1, c.note);
  }
});

Deno.test("scoreCompletions: named, weighted, sync and async rewards", async () => {
  const completions = ["<think>x</think><answer>B</answer>", "<think>x</think><answer>A</answer>", "B"];
  const rows = [ROW, ROW, ROW];
  const asyncLen = async (c: string) => {
    await Promise.resolve();
    return c.length > 5 ? 1 : 0;
  };
  const { total, byName } = await scoreCompletions(completions, rows, [
    namedReward("recipe", medvlthinkerRewardFn),
    namedReward("soft", softFormatReward, { weight: 0.5 }),
    ["long", asyncLen, 0.1],
  ]);
  assertEquals(byName.recipe, [1, 0, 0]);
  assertEquals(byName.soft, [1, 1, 0]);
  assertEquals(byName.long, [1, 1, 0]);
  assertEquals(total.map((x) => Math.round(x * 1e9) / 1e9), [1.6, 0.6, 0]);
  assertEquals(normalizeRewards(medvlthinkerRewardFn)[0].name, "medvlthinkerRewardFn");
  assertThrows(() => normalizeRewards([medvlthinkerRewardFn, medvlthinkerRewardFn]), /Two reward functions/);
  await assertRejects(
    () => scoreCompletions(["a"], [ROW, ROW], medvlthinkerRewardFn),
    /1 completions but 2 rows/,
  );
  await assertRejects(() => scoreCompletions(["a"], [ROW], () => NaN), /must be a number/);
});

Deno.test("registry: built-in rewards by name", () => {
  assertEquals(Object.keys(BUILTIN_REWARDS).sort(), [
    "accuracy",
    "format",
    "lenient",
    "medvlthinker",
    "soft_format",
  ]);
  assertEquals(rewardByName("medvlthinker")("<think>x</think><answer>Pancreas</answer>", ROW), 1);
  assertEquals(rewardByName("lenient")("The answer is B", ROW), 1);
  assertThrows(() => rewardByName("nope"), /Unknown reward 'nope'/);
});
