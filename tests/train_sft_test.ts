/**
 * sft(): the assistant-only label mask (exact, on the fixture's SFT example), resume equality, no tensor
 * leaks, atomic checkpoints, LoRA training, and a short real run on MedQA with the embedded tiny model.
 * The loop runs on wasm (the numerics are checked on every backend by train_golden_test.ts).
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert/strict";
import { loadModel, saveModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { loadDataset, tableRows } from "../lib/data/dataset.ts";
import { assistantLabels, collate, encodeSftExample, sft, type SftResult } from "../lib/train/sft.ts";
import { sftLoss } from "../lib/train/losses.ts";
import { loadLora, loraParams, mergeLora } from "../lib/model/lora.ts";

const SHARED = new URL("../", import.meta.url).pathname; // the repository root: fixtures under tests/, data under data/
const tokenizer = await loadTokenizer();
const losses = (r: SftResult) => r.history.map((m) => m.loss);
const gradNorms = (r: SftResult) => r.history.map((m) => m.grad_norm);

Deno.test("sft labels: exactly the assistant turn after '<|im_start|>assistant\\n' through its <|im_end|>", () => {
  const cases = Deno.readTextFileSync(`${SHARED}tests/fixtures/chat_template_cases.jsonl`).trim().split("\n")
    .map((l) => JSON.parse(l));
  const c = cases.find((x) => x.messages.some((m: { role: string }) => m.role === "assistant"));
  assert(c, "the fixture has an SFT example");
  const text = tokenizer.applyChatTemplate(c.messages);
  assertEquals(text, c.expected);
  const { inputIds, labels } = encodeSftExample(tokenizer, { messages: c.messages });
  const first = labels.findIndex((l) => l !== -100);
  let last = labels.length - 1;
  while (labels[last] === -100) last--;
  // one contiguous labelled span, equal to the ids there
  for (let i = first; i <= last; i++) assertEquals(labels[i], inputIds[i]);
  const header = "<|im_start|>assistant\n";
  const prefix = c.expected.slice(0, c.expected.lastIndexOf(header) + header.length);
  assertEquals(tokenizer.decode(inputIds.slice(0, first)), prefix);
  assertEquals(
    tokenizer.decode(inputIds.slice(first, last + 1)),
    "<think> r </think>\n<answer> B </answer><|im_end|>",
  );
  assertEquals(tokenizer.decode(inputIds.slice(last + 1)), "\n");
  assertEquals(inputIds[last], tokenizer.imEndId);
});

Deno.test("sft labels: every assistant turn of a multi-turn chat, a truncated one to the end", () => {
  const messages = [
    { role: "user", content: "a" },
    { role: "assistant", content: "b" },
    { role: "user", content: "c" },
    { role: "assistant", content: "d e" },
  ];
  const { inputIds, labels } = encodeSftExample(tokenizer, { messages });
  const spans = tokenizer.decode(inputIds.filter((_, i) => labels[i] !== -100));
  assertEquals(spans, "b<|im_end|>d e<|im_end|>");
  const cut = assistantLabels(tokenizer, inputIds.slice(0, inputIds.length - 3));
  assert(cut.at(-1) !== -100, "a cut assistant turn is labelled up to the cut");
  const batch = collate([{ inputIds: [1, 2, 3], labels: [-100, 2, 3] }, { inputIds: [4], labels: [4] }], 0);
  assertEquals(batch, {
    inputIds: [[1, 2, 3], [4, 0, 0]],
    attentionMask: [[1, 1, 1], [1, 0, 0]],
    labels: [[-100, 2, 3], [4, -100, -100]],
  });
});

// Pre-tokenized rows on the fixture checkpoint (vocabulary 300, hidden 64): the loop itself, quickly.
const FIXTURE = `${SHARED}tests/fixtures/qwen2-tiny`;
const ROWS = Array.from({ length: 8 }, (_, i) => {
  const n = 8 + (i % 4) * 2;
  const inputIds = Array.from({ length: n }, (_, t) => 3 + ((i * 37 + t * 11) % 290));
  return { inputIds, labels: inputIds.map((x, t) => (t < n / 2 ? -100 : x)) };
});

async function tmpDir(): Promise<string> {
  return await Deno.makeTempDir({ prefix: "medthink_sft_" });
}

Deno.test("sft: a run stopped at step 3 and resumed gives the same losses; no leaks; atomic checkpoints", async () => {
  const common = {
    batchSize: 4,
    microBatchSize: 2,
    maxSteps: 6,
    learningRate: 1e-2,
    warmupSteps: 1,
    seed: 7,
    progress: false,
  };
  const dirA = await tmpDir(), dirB = await tmpDir();
  try {
    let model = await loadModel(FIXTURE, { backend: "wasm" });
    const counts: number[] = [];
    const full = await sft(model, ROWS, {
      ...common,
      outputDir: dirA,
      saveSteps: 2,
      onStep: (r) => counts.push(r.num_tensors),
    });
    model.dispose();
    assertEquals(full.steps, 6);
    assert(counts.every((c) => c === counts[0]), `live tensors per step: ${counts}`);
    const names = [...Deno.readDirSync(dirA)].map((e) => e.name).sort();
    assertEquals(names, ["checkpoint-2", "checkpoint-4", "checkpoint-6", "config.json", "metrics.jsonl"]);
    const ck = [...Deno.readDirSync(`${dirA}/checkpoint-6`)].map((e) => e.name).sort();
    for (const f of ["config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"]) {
      assert(ck.includes(f), `checkpoint has ${f}`);
    }
    const state = JSON.parse(Deno.readTextFileSync(`${dirA}/checkpoint-4/trainer_state.json`));
    assertEquals([state.step, state.dataPosition, state.rng], [4, { epoch: 2, batch: 0 }, {
      seed: 7,
      epoch: 2,
    }]);
    const log = Deno.readTextFileSync(`${dirA}/metrics.jsonl`).trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(log.length, 6);
    for (const k of ["loss", "learning_rate", "grad_norm", "tokens_per_second", "epoch"]) {
      assert(typeof log[0][k] === "number", k);
    }
    assertEquals(log[0].learning_rate, 0); // HF warmup: the first update has lr 0

    model = await loadModel(FIXTURE, { backend: "wasm" });
    const part = await sft(model, ROWS, { ...common, outputDir: dirB, saveSteps: 2, stopAfterSteps: 3 });
    model.dispose();
    assertEquals(part.steps, 3);
    assert(part.checkpointDir?.endsWith("checkpoint-3"), `${part.checkpointDir}`);
    model = await loadModel(FIXTURE, { backend: "wasm" });
    const rest = await sft(model, ROWS, { ...common, outputDir: dirB, saveSteps: 2, resumeFrom: true });
    model.dispose();
    assertEquals(rest.steps, 6);
    assertEquals(losses(rest), losses(full));
    assertEquals(gradNorms(rest), gradNorms(full));
    assert(losses(full)[5] < losses(full)[0], `loss goes down: ${losses(full)}`);
    assert([...Deno.readDirSync(dirB)].every((e) => !e.name.includes(".tmp-")), "no temporary folders left");
  } finally {
    await Deno.remove(dirA, { recursive: true });
    await Deno.remove(dirB, { recursive: true });
  }
});

Deno.test("sft with LoRA: base frozen, PEFT adapters saved and reloadable, merged Hub export", async () => {
  const dir = await tmpDir();
  try {
    const model = await loadModel(FIXTURE, { backend: "wasm" });
    const before = await model.params["model.layers.0.self_attn.q_proj.weight"].data();
    const res = await sft(model, ROWS, {
      batchSize: 4,
      microBatchSize: 4,
      maxSteps: 2,
      learningRate: 1e-2,
      warmupSteps: 0,
      lora: { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"] },
      outputDir: `${dir}/run`,
      progress: false,
    });
    assertEquals(res.steps, 2);
    assertEquals(await model.params["model.layers.0.self_attn.q_proj.weight"].data(), before);
    const ck = `${dir}/run/checkpoint-2`;
    const cfg = JSON.parse(Deno.readTextFileSync(`${ck}/adapter_config.json`));
    assertEquals([cfg.peft_type, cfg.r, cfg.lora_alpha, cfg.target_modules], ["LORA", 4, 8, [
      "q_proj",
      "v_proj",
    ]]);
    const ids = [ROWS[0].inputIds];
    const want = await model.logits(ids).data();
    assert("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in loraParams(model));
    const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      let md = 0;
      for (let i = 0; i < a.length; i++) md = Math.max(md, Math.abs(a[i] - b[i]));
      return md;
    };
    // a fresh model with the saved adapters computes the same logits
    const again = await loadModel(FIXTURE, { backend: "wasm" });
    await loadLora(again, ck);
    assert(maxDiff(await again.logits(ids).data(), want) < 1e-5, "reloaded adapters");
    // merged into the weights and exported in Hub layout: the same function without adapters
    mergeLora(again);
    assertEquals(Object.keys(again.lora).length, 0);
    assert(maxDiff(await again.logits(ids).data(), want) < 1e-4, "merged");
    await saveModel(again, `${dir}/export`);
    const exported = await loadModel(`${dir}/export`, { backend: "wasm" });
    assert(maxDiff(await exported.logits(ids).data(), want) < 1e-4, "exported");
    // sft's own export: the same run with exportDir merges the adapters and writes the Hub layout
    const third = await loadModel(FIXTURE, { backend: "wasm" });
    const res3 = await sft(third, ROWS, {
      batchSize: 4,
      microBatchSize: 4,
      maxSteps: 2,
      learningRate: 1e-2,
      warmupSteps: 0,
      lora: { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"] },
      exportDir: `${dir}/export2`,
      progress: false,
    });
    assertEquals(res3.exportDir, `${dir}/export2`);
    assertEquals(Object.keys(third.lora).length, 0);
    const exported2 = await loadModel(`${dir}/export2`, { backend: "wasm" });
    assert(maxDiff(await exported2.logits(ids).data(), want) < 1e-4, "sft exportDir");
    for (const m of [exported2, third, exported, again, model]) m.dispose();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sft on MedQA (synthesised reasoning) with medthink-tiny lowers the assistant-token loss", async () => {
  const table = await loadDataset(`${SHARED}data/medqa_4opt/test.jsonl`, { limit: 16 });
  const rows = tableRows(table).map((r) => ({
    ...r,
    reasoning: `The correct option is ${r.answerLabel}: ${r.answer}.`,
  }));
  const model = await loadModel("medthink-tiny", { backend: "wasm" });
  const evalRows = rows.slice(0, 8).map((r, i) => encodeSftExample(tokenizer, r, { index: i }));
  const evalLoss = async () => {
    const l = sftLoss(model, collate(evalRows, tokenizer.padTokenId));
    const v = (await l.data())[0];
    l.dispose();
    return v;
  };
  const before = await evalLoss();
  const t0 = performance.now();
  const res = await sft(model, rows, {
    batchSize: 4,
    microBatchSize: 4,
    maxSteps: 4,
    learningRate: 5e-3,
    warmupSteps: 0,
    lrSchedulerType: "constant",
    progress: false,
    tokenizer,
  });
  const seconds = (performance.now() - t0) / 1000;
  const after = await evalLoss();
  console.log(
    `medqa sft: ${res.steps} steps in ${seconds.toFixed(1)} s, loss ${before.toFixed(3)} -> ${
      after.toFixed(3)
    }`,
  );
  assertEquals(res.steps, 4);
  assert(after < before - 1, `assistant-token loss ${before} -> ${after}`);
  model.dispose();
});

Deno.test("sft: gradient accumulation is token-weighted (micro-batches of 1 = one batch of 4)", async () => {
  const run = async (microBatchSize: number) => {
    const model = await loadModel(FIXTURE, { backend: "wasm" });
    const res = await sft(model, ROWS, {
      batchSize: 4,
      microBatchSize,
      maxSteps: 2,
      learningRate: 1e-2,
      progress: false,
    });
    model.dispose();
    return res;
  };
  const one = await run(4), acc = await run(1);
  for (let i = 0; i < 2; i++) {
    assert(
      Math.abs(losses(one)[i] - losses(acc)[i]) < 1e-5 * losses(one)[i],
      `loss ${losses(one)[i]} vs ${losses(acc)[i]}`,
    );
    assert(Math.abs(gradNorms(one)[i] - gradNorms(acc)[i]) < 1e-4 * gradNorms(one)[i], "grad norm");
  }
});

Deno.test("sft inputs: an arquero table, a ready 'text' column; errors name the row", async () => {
  const table = await loadDataset(`${SHARED}data/medqa_4opt/test.jsonl`, { limit: 2 });
  const row = tableRows(table)[0];
  const text = tokenizer.applyChatTemplate([
    { role: "user", content: "Q" },
    { role: "assistant", content: "<think> r </think>\n<answer> B </answer>" },
  ]);
  const ex = encodeSftExample(tokenizer, { text });
  assertEquals(
    tokenizer.decode(ex.inputIds.filter((_, i) => ex.labels[i] !== -100)),
    "<think> r </think>\n<answer> B </answer><|im_end|>",
  );
  const model = await loadModel(FIXTURE, { backend: "wasm" });
  try {
    // a table without reasoning: the recipe's target cannot be built
    await assertRejects(() => sft(model, table, { tokenizer, progress: false }), /has no reasoning trace/);
    // Qwen token ids do not fit the fixture's 300-token vocabulary
    await assertRejects(
      () => sft(model, [{ ...row, reasoning: "r" }], { tokenizer, progress: false }),
      /row 0 has token id \d+, beyond the model's vocabulary of 300/,
    );
    await assertRejects(() => sft(model, [{ foo: 1 }], { tokenizer, progress: false }), /row 0 has neither/);
  } finally {
    model.dispose();
  }
});

Deno.test("sft with LoRA: stopped and resumed equals uninterrupted (adapters + moments restored)", async () => {
  const common = {
    batchSize: 4,
    microBatchSize: 4,
    maxSteps: 4,
    learningRate: 1e-2,
    warmupSteps: 0,
    progress: false,
    lora: { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"] },
  };
  const dirA = await tmpDir(), dirB = await tmpDir();
  try {
    let model = await loadModel(FIXTURE, { backend: "wasm" });
    const full = await sft(model, ROWS, { ...common, outputDir: dirA });
    model.dispose();
    model = await loadModel(FIXTURE, { backend: "wasm" });
    await sft(model, ROWS, { ...common, outputDir: dirB, stopAfterSteps: 2 });
    model.dispose();
    model = await loadModel(FIXTURE, { backend: "wasm" });
    const rest = await sft(model, ROWS, { ...common, outputDir: dirB, resumeFrom: `${dirB}/checkpoint-2` });
    model.dispose();
    assertEquals(losses(rest), losses(full));
  } finally {
    await Deno.remove(dirA, { recursive: true });
    await Deno.remove(dirB, { recursive: true });
  }
});
