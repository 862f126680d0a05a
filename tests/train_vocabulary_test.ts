/**
 * `sft` and `grpo` speak one vocabulary: unknown option keys are errors naming the closest known key,
 * both write the resolved configuration to `config.json` (re-readable, functions named), both return the
 * same result shape with TRL's metric names, and their LoRA checkpoints hold the same tensor names
 * (adapters and optimizer moments). Runs on the fixture checkpoint (vocabulary 300), one step each.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert/strict";
import { loadModel } from "../lib/model/load.ts";
import { readSafetensors } from "../lib/model/safetensors.ts";
import type { Row } from "../lib/data/types.ts";
import { sft, sftPromptText, sftText } from "../lib/train/sft.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { buildPrompt } from "../lib/data/prompt.ts";
import { loadDataset, tableRows } from "../lib/data/dataset.ts";
import { promptRenderer } from "../lib/train/grpo_rollouts.ts";
import { grpo } from "../lib/train/grpo.ts";
import { describeConfig } from "../lib/train/trainer.ts";

const FIXTURE = new URL("./fixtures/qwen2-tiny", import.meta.url).pathname;
const LORA = { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"] };

// Pre-tokenized SFT rows, and GRPO prompts written as their ids (the fixture has no tokenizer).
const SFT_ROWS = Array.from({ length: 4 }, (_, i) => {
  const inputIds = Array.from({ length: 8 }, (_, t) => 3 + ((i * 37 + t * 11) % 290));
  return { inputIds, labels: inputIds.map((x, t) => (t < 4 ? -100 : x)) };
});
const idsTokenizer = {
  padTokenId: 0,
  encode: (text: string) => text.split(" ").map(Number),
  decode: (ids: number[]) => ids.join(" "),
};
const GRPO_ROWS: Row[] = Array.from({ length: 4 }, (_, i) => ({
  id: `p${i}`,
  question: [5 + i, 40 + 2 * i, 77].join(" "),
  options: {},
  answerLabel: "",
  answer: "",
  images: [],
}));
const grpoBase = {
  tokenizer: idsTokenizer,
  promptText: (r: Row) => r.question,
  rewards: [["odd", (c: string) => Number(c) % 2, 1]] as [string, (c: string) => number, number][],
  numGenerations: 2,
  promptsPerStep: 2,
  maxNewTokens: 1,
  progress: false,
};

Deno.test("sft and grpo: unknown keys name the closest known key; renamed keys their new name; ranges the key", async () => {
  const model = await loadModel(FIXTURE, { backend: "wasm" });
  try {
    await assertRejects(() => sft(model, SFT_ROWS, { learning_rate: 0.5 } as never), {
      message: "Unknown key 'learning_rate' in sft options: did you mean 'learningRate'?",
    });
    await assertRejects(() => grpo(model, GRPO_ROWS, { ...grpoBase, learning_rate: 0.5 } as never), {
      message: "Unknown key 'learning_rate' in grpo options: did you mean 'learningRate'?",
    });
    await assertRejects(
      () => sft(model, SFT_ROWS, { lr: 1e-3 } as never),
      /Unknown key 'lr' in sft options: did you mean 'learningRate'\? \(renamed\)/,
    );
    await assertRejects(
      () => grpo(model, GRPO_ROWS, { ...grpoBase, steps: 2 } as never),
      /Unknown key 'steps' in grpo options: did you mean 'maxSteps'\? \(renamed\)/,
    );
    await assertRejects(
      () => sft(model, SFT_ROWS, { eps: 1e-6 } as never),
      /Unknown key 'eps' in sft options: did you mean 'adamEpsilon'\? \(renamed\)/,
    );
    await assertRejects(
      () => grpo(model, GRPO_ROWS, { ...grpoBase, adamEpsilon: -1 }),
      /grpo options: adamEpsilon must be a number >= 0, got -1/,
    );
    // a model in the options (grpo's `reference`) is described by its architecture, never its weights
    assertEquals(describeConfig({ reference: model, x: NaN }), {
      reference: `[model qwen2 ${FIXTURE}]`,
      x: "NaN",
    });
    await assertRejects(
      () => sft(model, SFT_ROWS, { batchSize: 0 }),
      /sft options: batchSize must be an integer >= 1/,
    );
    await assertRejects(
      () => sft(model, SFT_ROWS, { warmupRatio: 2 }),
      /warmupRatio must be a number within/,
    );
    await assertRejects(
      () => grpo(model, GRPO_ROWS, { ...grpoBase, beta: -1 }),
      /grpo options: beta must be a number >= 0, got -1/,
    );
  } finally {
    model.dispose();
  }
});

Deno.test("sft and grpo: adamEpsilon reaches AdamW (a huge epsilon leaves the weights almost still)", async () => {
  // Adam's step is lr * m / (sqrt(v) + eps): with eps far above every gradient the step shrinks by
  // about |g| / eps, so one update moves the weights orders of magnitude less than at the default.
  const moved = async (train: (m: Awaited<ReturnType<typeof loadModel>>) => Promise<unknown>) => {
    const model = await loadModel(FIXTURE, { backend: "wasm" });
    try {
      const before = Object.fromEntries(
        Object.entries(model.params).map(([k, v]) => [k, (v.dataSync() as Float32Array).slice()]),
      );
      await train(model);
      let most = 0;
      for (const [k, v] of Object.entries(model.params)) {
        const after = v.dataSync() as Float32Array;
        for (let i = 0; i < after.length; i++) most = Math.max(most, Math.abs(after[i] - before[k][i]));
      }
      return most;
    } finally {
      model.dispose();
    }
  };
  const sftRun = (adamEpsilon?: number) => (m: Awaited<ReturnType<typeof loadModel>>) =>
    sft(m, SFT_ROWS, {
      batchSize: 4,
      maxSteps: 1,
      learningRate: 1e-2,
      lrSchedulerType: "constant",
      warmupRatio: 0,
      progress: false,
      adamEpsilon,
    });
  const grpoRun = (adamEpsilon?: number) => (m: Awaited<ReturnType<typeof loadModel>>) =>
    grpo(m, GRPO_ROWS, {
      ...grpoBase,
      numGenerations: 8,
      beta: 0,
      weightDecay: 0, // decay moves every weight whatever the epsilon
      maxSteps: 1,
      learningRate: 1e-2,
      seed: 1,
      adamEpsilon,
    });
  for (const [name, run] of [["sft", sftRun], ["grpo", grpoRun]] as const) {
    const usual = await moved(run());
    const damped = await moved(run(1e3));
    assert(usual > 1e-3, `${name}: the default update moves the weights (max ${usual})`);
    assert(damped < usual / 100, `${name}: adamEpsilon 1e3 moves them by ${damped}, the default by ${usual}`);
  }
});

Deno.test("sft and grpo: config.json, metrics.jsonl, one result shape, the same LoRA tensor names", async () => {
  const dir = await Deno.makeTempDir({ prefix: "medthink_vocab_" });
  try {
    let model = await loadModel(FIXTURE, { backend: "wasm" });
    const s = await sft(model, SFT_ROWS, {
      batchSize: 4,
      maxSteps: 1,
      learningRate: 1e-3,
      lora: LORA,
      outputDir: `${dir}/sft`,
      progress: false,
      onStep: function countStep() {},
    });
    model.dispose();
    model = await loadModel(FIXTURE, { backend: "wasm" });
    const g = await grpo(model, GRPO_ROWS, {
      ...grpoBase,
      maxSteps: 1,
      learningRate: 1e-3,
      lora: LORA,
      outputDir: `${dir}/grpo`,
      saveSteps: 1,
    });
    model.dispose();

    // One result shape, one set of metric names for the shared ideas.
    assertEquals(Object.keys(s).sort(), Object.keys(g).sort());
    for (const r of [s, g]) {
      assert(
        r.steps === 1 && r.totalSteps === 1 && r.history.length === 1 && r.checkpointDir,
        "one step run",
      );
      for (const k of ["step", "epoch", "loss", "learning_rate", "grad_norm"]) {
        assert(typeof r.history[0][k] === "number", `${k} in ${Object.keys(r.history[0])}`);
      }
    }
    assertEquals([s.history[0].epoch, g.history[0].epoch], [1, 0.5]);

    // config.json: the resolved settings, re-readable, with functions named.
    for (const [name, r] of [["sft", s], ["grpo", g]] as const) {
      assertEquals(r.files.config, `${dir}/${name}/config.json`);
      assertEquals(r.files.metrics, `${dir}/${name}/metrics.jsonl`);
      const config = JSON.parse(await Deno.readTextFile(r.files.config));
      assertEquals([config.trainer, config.learningRate, config.seed, config.lora], [name, 1e-3, 42, LORA]);
      const lines = (await Deno.readTextFile(r.files.metrics)).trim().split("\n").map((l) => JSON.parse(l));
      assertEquals(lines, JSON.parse(JSON.stringify(r.history)));
    }
    const sc = JSON.parse(await Deno.readTextFile(`${dir}/sft/config.json`));
    assertEquals([sc.lrSchedulerType, sc.warmupRatio, sc.microBatchSize, sc.totalSteps], [
      "cosine",
      0.05,
      4,
      1,
    ]);
    assertEquals(sc.onStep, "[function countStep]");
    const gc = JSON.parse(await Deno.readTextFile(`${dir}/grpo/config.json`));
    assertEquals([gc.lrSchedulerType, gc.epsilonHigh, gc.miniBatchPrompts], ["constant", 0.2, 2]);
    assertEquals(gc.promptText, "[function promptText]");
    assertEquals(gc.rewards[0][1], "[function anonymous]");

    // The same tensor names in both checkpoints: PEFT adapter names, and the optimizer moments of them.
    const names = async (file: string) => Object.keys(await readSafetensors(file)).sort();
    const sAdapters = await names(`${s.checkpointDir}/adapter_model.safetensors`);
    const gAdapters = await names(`${g.checkpointDir}/adapter_model.safetensors`);
    assert(sAdapters.length > 0 && sAdapters.every((n) => n.includes(".lora_")), `${sAdapters}`);
    assertEquals(gAdapters, sAdapters);
    const sMoments = await names(`${s.checkpointDir}/optimizer.safetensors`);
    assertEquals(await names(`${g.checkpointDir}/optimizer.safetensors`), sMoments);
    assertEquals(
      sMoments,
      [...sAdapters.map((n) => `exp_avg.${n}`), ...sAdapters.map((n) => `exp_avg_sq.${n}`)].sort(),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("prompt means one thing: buildPrompt options or a builder of chat messages, in sft and grpo alike", async () => {
  const tokenizer = await loadTokenizer();
  const table = await loadDataset(new URL("../data/medqa_4opt/test.jsonl", import.meta.url).pathname, {
    limit: 2,
  });
  const row = { ...tableRows(table)[0], reasoning: "r" };
  const options = { systemPrompt: "Be brief." };
  const builder = (r: Row) => buildPrompt(r, options);
  // sft: the builder's messages plus the recipe's target render as the options form does
  const expected = sftText(tokenizer, row, 0, options);
  assertEquals(await sftPromptText(tokenizer, row, 0, builder), expected);
  assertEquals(await sftPromptText(tokenizer, row, 0, options), expected);
  // grpo: the same two forms give the same generation prompt, which is the start of sft's text
  const fromBuilder = await promptRenderer(tokenizer, builder, undefined)(row);
  assertEquals(await promptRenderer(tokenizer, options, undefined)(row), fromBuilder);
  assert(expected.startsWith(fromBuilder), "the sft example continues the grpo prompt");
  await assertRejects(
    () => promptRenderer(tokenizer, (() => "text") as never, undefined)(row),
    /returned string for row .*pass a function that returns the rendered prompt string as promptText/,
  );
});
