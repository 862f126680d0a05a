/**
 * One setting of the demo's GRPO stage (examples/grpo_text.ts on the embedded task), measured every few
 * steps: training reward, zero-variance groups, KL, and greedy held-out accuracy on a small held-out set.
 * The format-only warm-up is the demo's (each question once with each letter; `--warm-letters random` for
 * seeded random letters) and is cached per (seed, steps, lr, backend, letters) under /tmp, so settings of
 * the GRPO stage can be compared from the same start. GRPO's questions come in the demo's class-interleaved
 * order (`--shuffled` for the shuffled one).
 *
 *   deno run -A bench/demo_grpo_sweep.ts --seed 0 --steps 60 --grpo '{"adamEpsilon":1e-6}'
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  aq,
  evaluate,
  grpo,
  type GrpoOptions,
  LAB_DEMO_ANALYTES,
  labCompactPrompt,
  type LabRow,
  labTaskSplits,
  loadModel,
  loadTokenizer,
  medvlthinkerReward,
  type Row,
} from "../mod.ts";
import { demoWarmup } from "./_demo_warmup.ts";
import {
  classInterleaved,
  LAB_DEMO_WARMUP,
  labDemoGrpo,
  uniformLetterExamples,
  warmupLetter,
} from "../examples/_lab_demo.ts";

const { values: a } = parseArgs({
  args: Deno.args,
  options: {
    seed: { type: "string", default: "0" },
    steps: { type: "string", default: "60" },
    every: { type: "string", default: "10" },
    "eval-size": { type: "string", default: "150" },
    "warm-steps": { type: "string", default: String(LAB_DEMO_WARMUP.steps) },
    "warm-lr": { type: "string", default: String(LAB_DEMO_WARMUP.learningRate) },
    backend: { type: "string", default: "tensorflow" },
    grpo: { type: "string", default: "{}" },
    "min-reward": { type: "string", default: "0" },
    // The warm-up's think block: fixed words, or a template restating the question ({analyte}, {value},
    // {lead}: the value's integer part). The answer letters stay random either way (format only).
    "warm-think": { type: "string", default: LAB_DEMO_WARMUP.reasoning },
    // Keep the (tied) embedding fixed during GRPO: its 151,936 rows then take no noisy updates.
    "freeze-embed": { type: "boolean", default: false },
    // Greedy held-out completions printed at each check.
    show: { type: "string", default: "0" },
    // "all": every warm-up question three times in the same batch, once with each letter, so the letter's
    // target is uniform with no noise (the demo's); "random": one seeded random letter per example.
    "warm-letters": { type: "string", default: "all" },
    "warm-batch": { type: "string", default: String(LAB_DEMO_WARMUP.batchSize) },
    // GRPO's questions in the shuffled order instead of the demo's class-interleaved one (A, B, C, A, ...).
    shuffled: { type: "boolean", default: false },
  },
});
const seed = Number(a.seed);
const t0 = performance.now();
const log = (m: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(5)}s] ${m}`);
const model = await loadModel("medthink-tiny", { backend: a.backend as never });
const tok = await loadTokenizer();
const evalSize = Number(a["eval-size"]);
const splits = labTaskSplits({ train: 20000, test: 600, seed, analytes: LAB_DEMO_ANALYTES });
const train: Row[] = splits.train.map((r) => ({ ...r, images: [] }) as unknown as Row);
const test: Row[] = splits.test.slice(0, evalSize).map((r) => ({ ...r, images: [] }) as unknown as Row);
const prompt = (row: Row) => labCompactPrompt(row as unknown as LabRow);

const randomLetter = (row: Row, position: number) => warmupLetter(seed, row, position);

const warmThink = a["warm-think"]!;
function think(row: Row): string {
  const lab = row as unknown as LabRow;
  return warmThink.replaceAll("{analyte}", String(lab.analyte)).replaceAll("{value}", String(lab.valueText))
    .replaceAll("{lead}", String(lab.valueText).split(".")[0]);
}
const warmup = {
  seed,
  steps: Number(a["warm-steps"]),
  batchSize: Number(a["warm-batch"]),
  learningRate: Number(a["warm-lr"]),
  letters: a["warm-letters"] === "all" ? "all" as const : "random" as const,
  think: warmThink,
  defaultThink: LAB_DEMO_WARMUP.reasoning,
};
const count = warmup.steps * warmup.batchSize;
const warmExamples = warmup.letters === "all"
  ? uniformLetterExamples(train, count)
  : train.slice(0, count).map((row, i) => ({ row, letter: randomLetter(row, i) }));
const warm = await demoWarmup(model, tok, warmup, warmExamples, prompt, think);
log(
  warm.cached
    ? `warm-up from ${warm.cache}`
    : `warm-up trained (${warmup.steps} steps), saved to ${warm.cache}`,
);

const promptTokenizer = {
  applyChatTemplate: (messages: { content: unknown }[]) => String(messages[0].content),
  encodeBatch: tok.encodeBatch.bind(tok),
  decode: tok.decode.bind(tok),
};
async function heldOut(): Promise<string> {
  const r = await evaluate(model, [{ name: "lab", table: aq.from(test) }], {
    tokenizer: promptTokenizer,
    prompt: (row: Row) => [{ role: "user" as const, content: prompt(row) }],
    maxNewTokens: 24,
    batchSize: 150,
    seed,
    outDir: `/tmp/demo_sweep_eval_${Deno.pid}`,
    overwrite: true,
    progress: false,
  });
  const b = r.benchmarks[0];
  // Which letters the greedy policy answers: a fixed letter scores 1/3 whatever the question.
  const letters: Record<string, number> = {};
  const shown: string[] = [];
  for (const line of (await Deno.readTextFile(r.files!.predictions)).split("\n").filter(Boolean)) {
    const p = JSON.parse(line) as { predictedLabel: string | null; completion?: string };
    if (p.completion !== undefined && shown.length < Number(a.show)) shown.push(JSON.stringify(p.completion));
    letters[p.predictedLabel ?? "-"] = (letters[p.predictedLabel ?? "-"] ?? 0) + 1;
  }
  return `acc ${(100 * b.accuracy).toFixed(1)}% fmt ${(100 * (b.formatRate ?? 0)).toFixed(0)}% ${
    JSON.stringify(letters)
  }${shown.length ? "\n    " + shown.join("\n    ") : ""}`;
}
log(`warm-up held-out (${test.length}): ${await heldOut()}`);

const overrides = JSON.parse(a.grpo!);
const every = Number(a.every);
const minReward = Number(a["min-reward"]);
let win: { r: number; z: number; kl: number; g: number }[] = [];
const settings: Partial<GrpoOptions> = {
  ...labDemoGrpo(false),
  maxSteps: Number(a.steps),
  ...overrides,
};
if (a["freeze-embed"]) model.params["model.embed_tokens.weight"].trainable = false;
log(`GRPO ${JSON.stringify(overrides)}${a["freeze-embed"] ? " (embedding frozen)" : ""}`);
const grpoRows = train.slice(warmExamples.length);
await grpo(model, a.shuffled ? grpoRows : classInterleaved(grpoRows), {
  shuffle: false,
  ...settings,
  tokenizer: tok,
  promptText: prompt,
  rewards: [["medvlthinker", (text: string, row: Row) => medvlthinkerReward(text, row).reward, 1]],
  seed,
  progress: false,
  onStep: async (m) => {
    win.push({ r: m.reward, z: m.frac_reward_zero_std, kl: m.kl, g: Number(m.grad_norm ?? NaN) });
    if (m.step % every !== 0) return;
    const mean = (f: (x: typeof win[0]) => number) => win.reduce((s, x) => s + f(x), 0) / win.length;
    const line = `step ${m.step}: reward ${
      mean((x) => x.r).toFixed(3)
    } zero-std ${mean((x) => x.z).toFixed(2)} ` +
      `kl ${mean((x) => x.kl).toFixed(3)} grad ${mean((x) => x.g).toFixed(4)}`;
    const rew = mean((x) => x.r);
    win = [];
    log(`${line} | held-out ${await heldOut()}`);
    if (minReward > 0 && m.step >= 30 && rew < minReward) {
      log(`FLAT: reward ${rew.toFixed(3)} < ${minReward} at step ${m.step}; stopping`);
      Deno.exit(0);
    }
  },
} as GrpoOptions);
log("done");
