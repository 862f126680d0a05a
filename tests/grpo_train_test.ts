/**
 * GRPO moves a policy the right way: with 1-token completions and a reward for a set of tokens, a few
 * `grpo()` steps raise the probability of that set. Runs the whole loop (generation, rewards,
 * advantages, reference snapshot with beta > 0, mini-batches, micro-batch accumulation, metrics files).
 */
import { ok as assert, rejects as assertRejects } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import type { CausalLM } from "../lib/model/types.ts";
import type { Row } from "../lib/data/types.ts";
import { grpo, GRPO_PRESETS } from "../lib/train/grpo.ts";

const DIR = new URL("./fixtures/qwen2-tiny", import.meta.url).pathname;

// The fixture model has a 300-token vocabulary and no tokenizer: a prompt is its ids written out.
const tokenizer = {
  padTokenId: 0,
  encode: (text: string) => text.split(" ").map(Number),
  decode: (ids: number[]) => ids.join(" "),
};
const GOOD = new Set(Array.from({ length: 30 }, (_, i) => 100 + i)); // 10% of the vocabulary
const rows: Row[] = Array.from({ length: 16 }, (_, i) => ({
  id: `p${i}`,
  question: [5 + i, 40 + 2 * i, 77, 9 + i].join(" "),
  options: {},
  answerLabel: "",
  answer: "",
  images: [],
}));

/** Mean probability mass of GOOD at the next position after each prompt. */
async function goodMass(model: CausalLM): Promise<number> {
  const ids = rows.map((r) => tokenizer.encode(r.question));
  const mass = tf.tidy(() => {
    const logits = model.logits(ids);
    const [b, t, v] = logits.shape;
    const last = tf.softmax(logits.slice([0, t - 1, 0], [b, 1, v]).reshape([b, v]));
    const mask = tf.tensor1d(Array.from({ length: v }, (_, i) => (GOOD.has(i) ? 1 : 0)));
    return tf.mean(tf.sum(tf.mul(last, mask), 1));
  });
  const value = (await mass.data())[0];
  mass.dispose();
  return value;
}

Deno.test("grpo raises the probability of rewarded tokens (1-token completions)", async () => {
  const model = await loadModel(DIR, { backend: "wasm" });
  const before = await goodMass(model);
  const liveAfterStep: number[] = [];
  const out = await Deno.makeTempDir();
  const result = await grpo(model, rows, {
    tokenizer,
    promptText: (r) => r.question,
    rewards: [["good_token", (c: string) => (GOOD.has(Number(c)) ? 1 : 0), 1]],
    maxSteps: 6,
    numGenerations: 8,
    promptsPerStep: 8,
    miniBatchPrompts: 4, // 2 updates per step
    microBatchSize: 12, // accumulation over uneven micro-batches
    maxNewTokens: 1,
    temperature: 1,
    learningRate: 2e-2,
    weightDecay: 0,
    beta: 0.04,
    lossType: "dapo",
    seed: 3,
    outputDir: out,
    progress: false,
    onStep: () => {
      liveAfterStep.push(tf.memory().numTensors);
    },
  });
  const after = await goodMass(model);
  assert(result.steps === 6 && result.history.every((m) => m.updates === 2), "6 steps of 2 updates each");
  assert(after > before * 2 && after > 0.25, `mass of the rewarded set went from ${before} to ${after}`);
  const rewardFirst = result.history[0]["reward/good_token/mean"];
  const rewardLast = result.history.at(-1)!["reward/good_token/mean"];
  assert(rewardLast > rewardFirst, `reward ${rewardFirst} -> ${rewardLast}`);
  assert(result.history.some((m) => m.kl > 0), "KL to the reference must become positive");
  const lines = (await Deno.readTextFile(`${out}/metrics.jsonl`)).trim().split("\n");
  assert(lines.length === 6, `metrics.jsonl has ${lines.length} lines`);
  const m = JSON.parse(lines[0]);
  for (
    const k of [
      "reward",
      "reward_std",
      "frac_reward_zero_std",
      "kl",
      "clip_ratio_low",
      "clip_ratio_high",
      "completion_length",
      "truncated_ratio",
      "entropy",
      "learning_rate",
      "grad_norm",
      "gen_seconds",
      "train_seconds",
      "gen_tokens_per_s",
    ]
  ) assert(typeof m[k] === "number", `metrics.jsonl lacks ${k}`);
  assert(
    (await Deno.readTextFile(`${out}/completions.jsonl`)).trim().split("\n").length >= 6,
    "sampled completions",
  );
  // The resolved configuration is written next to the outputs, functions described by name.
  const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  assert(result.files.config === `${out}/config.json`, JSON.stringify(result.files));
  assert(config.trainer === "grpo" && config.learningRate === 2e-2 && config.maxSteps === 6, "config values");
  assert(config.epsilonHigh === 0.2 && config.miniBatchPrompts === 4 && config.seed === 3, "derived values");
  assert(
    config.onStep === "[function onStep]" && config.tokenizer.encode === "[function encode]",
    "functions",
  );
  assert(JSON.stringify(config.rewards).includes("good_token"), "rewards named");
  // The live tensor count must not grow from step to step (generation, reference swap, accumulation).
  assert(liveAfterStep.every((n) => n === liveAfterStep[0]), `live tensors per step: ${liveAfterStep}`);
  await Deno.remove(out, { recursive: true });
  model.dispose();
});

Deno.test("grpo drops zero-std groups and refills the batch; preset spells out the recipe", async () => {
  const model = await loadModel(DIR, { backend: "wasm" });
  const result = await grpo(model, rows, {
    tokenizer,
    promptText: (r) => r.question,
    // Rewards depend on the prompt only: every group is flat, so every round is dropped.
    rewards: [(_c: string, row: Row) => (row.id === "p1" ? 1 : 0)],
    maxSteps: 1,
    numGenerations: 2,
    promptsPerStep: 4,
    maxNewTokens: 1,
    learningRate: 1e-3,
    beta: 0,
    dropZeroStdGroups: true,
    maxRefillRounds: 3,
    progress: false,
  });
  const m = result.history[0];
  assert(m.frac_reward_zero_std === 1 && m.updates === 0, JSON.stringify(m));
  const p = GRPO_PRESETS.medvlthinker;
  assert(
    p.numGenerations === 8 && p.learningRate === 1e-6 && p.lossType === "dapo" && p.beta === 0.01 &&
      p.klClamp === 10,
  );
  assert(p.promptsPerStep! / p.miniBatchPrompts! === 2 && p.epsilonLow === 0.2 && p.epsilonHigh === 0.2);
  model.dispose();
});

Deno.test("grpo resumed from a checkpoint repeats the remaining steps of an uninterrupted run", async () => {
  const dir = await Deno.makeTempDir();
  const opts = {
    tokenizer,
    promptText: (r: Row) => r.question,
    rewards: [["good_token", (c: string) => (GOOD.has(Number(c)) ? 1 : 0), 1]] as [
      string,
      (c: string) => number,
      number,
    ][],
    maxSteps: 4,
    numGenerations: 4,
    promptsPerStep: 4,
    maxNewTokens: 1,
    learningRate: 1e-2,
    weightDecay: 0,
    beta: 0,
    seed: 5,
    progress: false,
  };
  const a = await loadModel(DIR, { backend: "wasm" });
  const full = await grpo(a, rows, { ...opts, outputDir: `${dir}/a`, saveSteps: 2 });
  a.dispose();
  const b = await loadModel(DIR, { backend: "wasm" });
  const resumed = await grpo(b, rows, {
    ...opts,
    outputDir: `${dir}/b`,
    resumeFrom: `${dir}/a/checkpoint-2`,
  });
  b.dispose();
  assert(
    resumed.history.length === 4 && resumed.history[2].step === 3,
    "resumed history continues at step 3",
  );
  for (const k of [2, 3]) {
    const x = full.history[k], y = resumed.history[k];
    assert(x.reward === y.reward, `step ${k + 1} reward ${x.reward} vs ${y.reward}`);
    assert(
      Math.abs(x.loss - y.loss) < 1e-5 && Math.abs(x.grad_norm - y.grad_norm) < 1e-4,
      `step ${k + 1} loss/grad norm`,
    );
  }
  const lines = (await Deno.readTextFile(`${dir}/b/metrics.jsonl`)).trim().split("\n");
  assert(lines.length === 4, `resumed metrics.jsonl has ${lines.length} lines`);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("grpo options: unknown keys name the closest known one; out-of-range values name the key", async () => {
  const model = await loadModel(DIR, { backend: "wasm" });
  const base = { tokenizer, promptText: (r: Row) => r.question, rewards: () => 1, progress: false };
  await assertRejects(
    () => grpo(model, rows, { ...base, learning_rate: 0.5 } as never),
    { message: "Unknown key 'learning_rate' in grpo options: did you mean 'learningRate'?" },
  );
  await assertRejects(() => grpo(model, rows, { ...base, outDir: "x" } as never), /did you mean 'outputDir'/);
  await assertRejects(
    () => grpo(model, rows, { ...base, topP: 2 }),
    /topP must be a number within \[0, 1\], got 2/,
  );
  await assertRejects(
    () => grpo(model, rows, { ...base, microBatchSize: 0 }),
    /microBatchSize must be an integer/,
  );
  await assertRejects(
    () => grpo(model, rows, { ...base, lossType: "ppo" as never }),
    /lossType must be one of/,
  );
  model.dispose();
});
