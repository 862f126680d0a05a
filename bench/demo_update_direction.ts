/**
 * What ONE update of the demo's GRPO stage does to how the answer letter depends on the question,
 * against one SFT update on the answer key of the same questions, from the demo's format-only warm-up.
 *
 * For 90 held-out questions (a third per class) it reads the log-probabilities of the letters ` A`, ` B`,
 * ` C` right after `<answer>` and prints `disc`: the mean over questions of log p(right letter) minus the
 * mean log p of the three letters. A warm-up that answers every letter with probability 1/3 has disc 0;
 * an update that teaches the task raises it, one that only moves all answers toward one letter does not.
 * Each GRPO draw (`--draws`) samples fresh completions for the same 16 training questions.
 *
 *   deno run -A bench/demo_update_direction.ts --generations 4,16,64 --draws 4
 *   deno run -A bench/demo_update_direction.ts --adam    # Adam's first step (lr x sign of the gradient)
 *
 * By default the update is a plain gradient step of size `--eta` (Adam with epsilon 100 and learning rate
 * eta x 100: its first step is then eta x g, since every |g| is far below 100), so the two updates are
 * compared in the gradient's own scale; `--adam` takes Adam's first step at the demo's learning rate.
 * The warm-up is trained once and cached under /tmp (as bench/demo_grpo_sweep.ts caches it).
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  grpo,
  LAB_DEMO_ANALYTES,
  labCompactPrompt,
  type LabRow,
  labTaskSplits,
  loadModel,
  loadTokenizer,
  medvlthinkerReward,
  type Row,
  sft,
  tf,
} from "../mod.ts";
import { demoWarmup, restoreWeights } from "./_demo_warmup.ts";
import { LAB_DEMO_WARMUP, labDemoGrpo, labDemoTarget, uniformLetterExamples } from "../examples/_lab_demo.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    seed: { type: "string", default: "0" },
    generations: { type: "string", default: "4,16" },
    draws: { type: "string", default: "3" },
    eta: { type: "string", default: "3" },
    adam: { type: "boolean", default: false },
    backend: { type: "string", default: "tensorflow" },
  },
});
const seed = Number(a.seed);
const model = await loadModel("medthink-tiny", { backend: a.backend as never });
const tok = await loadTokenizer();
const splits = labTaskSplits({ train: 20000, test: 600, seed, analytes: LAB_DEMO_ANALYTES });
const train = splits.train.map((r) => ({ ...r, images: [] }) as unknown as Row);
const prompt = (row: Row) => labCompactPrompt(row as unknown as LabRow);
const target = (letter: string) => tok.encode(labDemoTarget(LAB_DEMO_WARMUP.reasoning, letter));

// The demo's warm-up (each question once with each letter), cached.
const { steps, batchSize, learningRate, reasoning } = LAB_DEMO_WARMUP;
const { weights: warm } = await demoWarmup(
  model,
  tok,
  { seed, steps, batchSize, learningRate, letters: "all", think: reasoning, defaultThink: reasoning },
  uniformLetterExamples(train, steps * batchSize),
  prompt,
  () => reasoning,
);
const restore = () => restoreWeights(model, warm);

// Held-out letter log-probabilities right after `<answer>`.
const test = splits.test.slice(0, 90);
const full = target("A");
const prefix = full.slice(0, full.indexOf(tok.encode(" A")[0]));
const letterIds = ["A", "B", "C"].map((l) => tok.encode(` ${l}`)[0]);
const encoded = test.map((r) => [...tok.encode(labCompactPrompt(r)), ...prefix]);
const width = Math.max(...encoded.map((e) => e.length));
const ids = encoded.map((e) => [...new Array(width - e.length).fill(tok.padTokenId), ...e]);
const mask = encoded.map((e) => [...new Array(width - e.length).fill(0), ...e.map(() => 1)]);
function letterStats(): string {
  const lp = tf.tidy(() => {
    const logits = model.logits(ids, { attentionMask: mask });
    const last = tf.squeeze(tf.slice(logits, [0, width - 1, 0], [-1, 1, -1]), [1]);
    return tf.logSoftmax(last).arraySync() as number[][];
  });
  let disc = 0;
  const mean = [0, 0, 0];
  test.forEach((r, i) => {
    const l = letterIds.map((id) => lp[i][id]);
    disc += l["ABC".indexOf(r.answerLabel)] - (l[0] + l[1] + l[2]) / 3;
    l.forEach((x, j) => mean[j] += x / test.length);
  });
  return `disc ${(disc / test.length).toFixed(4)}  mean log p A/B/C ${
    mean.map((x) => x.toFixed(2)).join(" / ")
  }`;
}

// One update: Adam's first step at the demo's rate, or a plain gradient step of size eta.
const EPS = 100;
const step = a.adam
  ? { learningRate: labDemoGrpo(false).learningRate!, adamEpsilon: 1e-8 }
  : { learningRate: Number(a.eta) * EPS, adamEpsilon: EPS };
const batch = train.slice(7000, 7016);
console.log(`warm-up          ${letterStats()}`);
await sft(
  model,
  batch.map((r) => {
    const p = tok.encode(prompt(r));
    const c = target(r.answerLabel);
    return { inputIds: [...p, ...c], labels: [...p.map(() => -100), ...c] };
  }),
  {
    ...step,
    maxSteps: 1,
    batchSize: batch.length,
    microBatchSize: batch.length,
    lrSchedulerType: "constant",
    warmupRatio: 0,
    weightDecay: 0,
    maxGradNorm: 1e6,
    shuffle: false,
    seed,
    padTokenId: tok.padTokenId,
    progress: false,
  },
);
console.log(`SFT update       ${letterStats()}`);
restore();
for (const n of a.generations!.split(",").map(Number)) {
  for (let d = 0; d < Number(a.draws); d++) {
    let reward = 0;
    await grpo(model, batch, {
      ...labDemoGrpo(false),
      ...step,
      numGenerations: n,
      promptsPerStep: batch.length,
      miniBatchPrompts: batch.length,
      microBatchSize: 128,
      maxSteps: 1,
      beta: 0,
      warmupRatio: 0,
      maxGradNorm: 1e6,
      shuffle: false,
      tokenizer: tok,
      promptText: prompt,
      rewards: [["medvlthinker", (text: string, row: Row) => medvlthinkerReward(text, row).reward, 1]],
      seed: seed * 1000 + d,
      progress: false,
      onStep: (m) => {
        reward = m.reward;
      },
    });
    console.log(
      `GRPO n=${String(n).padEnd(3)} draw ${d}  ${letterStats()}  (batch reward ${reward.toFixed(3)})`,
    );
    restore();
  }
}
