/**
 * The paper's best multimodal recipe on a vision-language model: GRPO on text-only questions, then
 * evaluation on image questions (VQA-RAD closed). MedVLThinker found text-only RL on m23k beats
 * image-text RL on PMC-VQA for Qwen2.5-VL; `--train-images 0` (the YAML config's setting) is exactly
 * that recipe. By default a few VQA-RAD image questions (never among the evaluated ones) are mixed into
 * the GRPO batches, so that image rows go through `grpo()` too: sampling with the image, old and
 * reference log-probs, and the loss, with gradients into the vision tower (`freezeVision` keeps it).
 *
 *   deno run -A examples/grpo_image.ts                    # medthink-tiny-vl, lab-value task + 8 image rows, bundled VQA-RAD
 *   deno run -A examples/grpo_image.ts --quick            # CI-sized (also when CI=true)
 *   deno run -A examples/grpo_image.ts --train-images 0   # text-only GRPO: the paper's best recipe
 *   deno run -A examples/grpo_image.ts --model path/to/Qwen2.5-VL-3B-Instruct \
 *     --data m23k_filtered.parquet --eval-data path/to/vqa_rad_closed/test.jsonl \
 *     --config examples/configs/grpo_image.yaml
 *
 * Writes `runs/grpo_image/` (or `--out`): `metrics.jsonl` and `completions.jsonl` (GRPO),
 * `grpo_curves.svg` (reward, KL, length, clip fraction), `before/` and `after/` evaluations
 * (`report.md`, `accuracy.svg`, `predictions.jsonl`).
 *
 * @module
 */
import {
  evaluate,
  type EvaluateOptions,
  grpo,
  type GrpoOptions,
  labTaskSplits,
  loadDataset,
  loadModel,
  loadTokenizer,
  MEDVLTHINKER_GRPO,
  namedReward,
  plot,
  PUBLISHED_ACCURACY,
  rewardByName,
  type Row,
  tableRows,
  visionInputBuilder,
} from "../mod.ts";
import { findDataDir, outDir, parseExampleArgs, readYamlConfig, section, since } from "./_common.ts";

const USAGE = `
examples/grpo_image.ts: GRPO on text questions with a vision-language model, evaluated on VQA-RAD images.

  --model DIR         Qwen2.5-VL checkpoint folder or medthink-tiny-vl (default)
  --data FILE         GRPO questions (text; e.g. the filtered m23k); default: the built-in lab-value task
  --eval-data FILE    image benchmark (default: the bundled VQA-RAD closed test set)
  --train-images N    image questions of the benchmark (after the evaluated ones) mixed into GRPO
                      (default 8, --quick 2; 0 = text-only GRPO, the paper's best recipe)
  (grpo: {freezeVision: true} in the config keeps the vision tower fixed during GRPO)
  --config FILE     YAML (see examples/configs/grpo_image.yaml): grpo: {...}, evaluate: {...}
  --out DIR         output folder (default runs/grpo_image)
  --backend NAME    auto | tensorflow | wasm | webgpu | cpu
  --quick           CI-sized run (also when CI=true)
`;

const args = parseExampleArgs(USAGE, ["eval-data", "train-images"]);
const config = await readYamlConfig(args.config);
const grpoConfig = section(config, "grpo", args.config) as Partial<GrpoOptions>;
const evalConfig = section(config, "evaluate", args.config) as Partial<EvaluateOptions>;
const out = await outDir(args, "grpo_image");
const modelName = args.model ?? (config.model as string | undefined) ?? "medthink-tiny-vl";
const dataPath = args.data ?? (config.data as string | undefined);

const t0 = performance.now();
const model = await loadModel(modelName, { backend: (args.backend ?? config.backend ?? "auto") as never });
if (!model.config.modelType.includes("vl")) {
  throw new Error(
    `--model ${modelName} is a ${model.config.modelType} checkpoint; this example needs Qwen2.5-VL.`,
  );
}
const tokenizer = await loadTokenizer(model.dir);
console.log(`model ${modelName} on ${model.backend} (${since(t0)} s)`);

// The benchmark: VQA-RAD closed (yes/no questions about radiology images).
const dataDir = findDataDir();
const evalPath = (args.extra["eval-data"] as string | undefined) ?? (config.evalData as string | undefined) ??
  (dataDir ? `${dataDir}/vqa_rad_closed/test.jsonl` : undefined);
const evalLimit = args.quick ? 8 : (config.evalLimit as number | undefined) ?? 40;
const benchmark = evalPath ? await loadDataset(evalPath) : null;
const evalTable = benchmark ? benchmark.slice(0, evalLimit) : null;
if (!evalTable) {
  console.log("no VQA-RAD data found (set MEDTHINK_DATA or --eval-data): skipping the image evaluation");
}
const images = visionInputBuilder(model);

async function evaluateImages(stage: string) {
  if (!evalTable) return null;
  const t = performance.now();
  const report = await evaluate(model, [{ name: "VQA-RAD", table: evalTable }], {
    tokenizer,
    maxNewTokens: args.quick ? 16 : 48,
    batchSize: 4,
    ...evalConfig,
    images,
    outputDir: `${out}/${stage}`,
    overwrite: true,
    modelName: `${modelName} (${stage} GRPO)`,
    reference: { "VQA-RAD": PUBLISHED_ACCURACY["Qwen2.5-VL-3B"]["VQA-RAD"] },
    progress: false,
  });
  const b = report.benchmarks[0];
  console.log(
    `VQA-RAD ${stage} GRPO: ${(100 * b.accuracy).toFixed(1)}% ` +
      `(95% CI ${(100 * b.ci.low).toFixed(1)}-${(100 * b.ci.high).toFixed(1)}, ${b.n} questions, ${
        since(t)
      } s)`,
  );
  return report;
}

await evaluateImages("before");

// Text GRPO questions: the lab-value task by default (the recipe: the filtered m23k).
const train: Row[] = dataPath
  ? tableRows(await loadDataset(dataPath, { format: config.format as never }))
  : labTaskSplits({ train: args.quick ? 16 : 64, test: 3, seed: 2 }).train.map((r) => ({ ...r, images: [] }));
const textOnly = train.filter((r) => (r.images ?? []).length === 0);
if (textOnly.length === 0) throw new Error(`${dataPath} holds no text-only question to train on.`);

// The recipe's GRPO settings (MEDVLTHINKER_GRPO: n 8, lr 1e-6, beta 0.01, clip 0.2, token-mean loss)
// scaled down to two CPU cores: short completions, few prompts per step. The recipe's full sizes
// are in examples/configs/grpo_image.yaml.
const small: Partial<GrpoOptions> = args.quick
  ? { maxSteps: 2, numGenerations: 4, promptsPerStep: 4, microBatchSize: 16, maxNewTokens: 24 }
  : {
    maxSteps: 8,
    numGenerations: 8,
    promptsPerStep: 8,
    microBatchSize: 32,
    maxNewTokens: 48,
    learningRate: 1e-5,
  };

// Image questions for GRPO: benchmark rows after the evaluated ones, one at the head of each of the
// first generation batches (unshuffled), so that those batches mix image and text rows.
const trainImages = Number(
  args.extra["train-images"] ?? config.trainImages ?? (args.quick ? 2 : 8),
);
if (!Number.isInteger(trainImages) || trainImages < 0) {
  throw new Error(`--train-images must be a whole number, got ${args.extra["train-images"]}.`);
}
const imageRows = benchmark && trainImages > 0
  ? tableRows(benchmark).slice(evalLimit, evalLimit + trainImages)
  : [];
if (imageRows.length < trainImages) {
  throw new Error(
    `--train-images ${trainImages}: only ${imageRows.length} benchmark rows are left after the ${evalLimit} evaluated ones.`,
  );
}
const grpoRows: Row[] = [...textOnly];
const perStep = grpoConfig.promptsPerStep ?? small.promptsPerStep!;
imageRows.forEach((r, i) => grpoRows.splice(Math.min(i * perStep, grpoRows.length), 0, r));

const t1 = performance.now();
const result = await grpo(model, grpoRows, {
  ...MEDVLTHINKER_GRPO,
  promptsPerStep: undefined,
  miniBatchPrompts: undefined,
  ...(imageRows.length ? { shuffle: false } : {}),
  ...small,
  ...grpoConfig,
  images,
  tokenizer,
  rewards: [namedReward("medvlthinker", rewardByName("medvlthinker"))],
  outputDir: out,
  progress: false,
  onStep: (m) =>
    console.log(
      `step ${m.step}  reward ${m.reward.toFixed(3)}  kl ${m.kl.toExponential(2)}  ` +
        `length ${m.completion_length.toFixed(1)}  clip ${m.clip_ratio.toFixed(3)}`,
    ),
});
console.log(
  `GRPO: ${result.steps} steps on ${textOnly.length} text and ${imageRows.length} image questions in ${
    since(t1)
  } s`,
);
await plot.writeSvg(
  `${out}/grpo_curves.svg`,
  plot.grpoCurves(result.history, { title: `GRPO (${modelName})` }),
);

await evaluateImages("after");
model.dispose();
console.log(
  `\nwrote ${out}/ (metrics.jsonl, completions.jsonl, grpo_curves.svg, before/, after/) in ${since(t0)} s`,
);
