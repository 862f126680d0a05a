/**
 * Supervised fine-tuning on reasoning traces (the recipe's SFT), then a held-out evaluation.
 *
 *   deno run -A examples/sft_text.ts                      # embedded default: medthink-tiny on the lab-value task
 *   deno run -A examples/sft_text.ts --quick              # CI-sized (also when CI=true)
 *   deno run -A examples/sft_text.ts --model path/to/Qwen2.5-0.5B-Instruct \
 *     --data m23k.parquet --config examples/configs/sft.yaml
 *
 * Writes `runs/sft_text/` (or `--out`): `config.json`, `metrics.jsonl` (one line per update), `loss.svg`, checkpoints,
 * the exported model (`model/`, Hub layout) and the evaluation (`eval/report.md`, `eval/accuracy.svg`).
 *
 * @module
 */
import {
  aq,
  evaluate,
  formatReport,
  labTaskSplits,
  loadDataset,
  loadModel,
  loadTokenizer,
  plot,
  sft,
  type SftOptions,
  type Table,
} from "../mod.ts";
import { outDir, parseExampleArgs, readYamlConfig, section, since } from "./_common.ts";

const USAGE = `
examples/sft_text.ts: SFT on reasoning traces, then evaluate on held-out questions.

  --model DIR      checkpoint folder (Hub layout) or medthink-tiny (default)
  --data FILE      training data (parquet/JSONL/JSON/CSV with reasoning); default: the built-in lab-value task
  --eval FILE      held-out questions; default: the lab task's held-out split (or none with --data)
  --config FILE    YAML (see examples/configs/sft.yaml); flags override it
  --out DIR        output folder (default runs/sft_text)
  --backend NAME   auto | tensorflow | wasm | webgpu | cpu
  --quick          CI-sized run (also when CI=true)
`;

const args = parseExampleArgs(USAGE, ["eval"]);
const config = await readYamlConfig(args.config);
const sftConfig = section(config, "sft", args.config);
const evalConfig = section(config, "evaluate", args.config);
const out = await outDir(args, "sft_text");
const modelName = args.model ?? (config.model as string | undefined) ?? "medthink-tiny";
const embedded = modelName === "medthink-tiny" && !args.data && !config.data;

// The embedded default is tiny and starts from random weights: it needs a high learning rate and
// many short steps to learn the answer format; the recipe's settings (lr 1e-5, batch 16, 3 epochs)
// are for real checkpoints and live in examples/configs/sft.yaml.
const defaults: Partial<SftOptions> = embedded
  ? { learningRate: 3e-3, batchSize: 8, microBatchSize: 8, epochs: 1, warmupRatio: 0.05, maxLength: 256 }
  : {};
const quick = args.quick ? { maxSteps: 12 } : {};
const trainSize = args.quick ? 96 : 480;
const testSize = args.quick ? 30 : 120;

const t0 = performance.now();
const backend = args.backend ?? (config.backend as string | undefined) ?? "auto";
const model = await loadModel(modelName, { backend: backend as never });
const tokenizer = await loadTokenizer(model.dir);
console.log(`model ${modelName} on ${model.backend} (${since(t0)} s)`);

let train: unknown;
let heldOut: Table | null = null;
const dataPath = args.data ?? (config.data as string | undefined);
if (dataPath) {
  train = await loadDataset(dataPath, { format: config.format as never });
  const evalPath = args.extra.eval as string | undefined ?? (config.eval as string | undefined);
  if (evalPath) heldOut = await loadDataset(evalPath, { format: config.format as never });
} else {
  const splits = labTaskSplits({ train: trainSize, test: testSize, seed: 0 });
  train = splits.train;
  heldOut = aq.from(splits.test);
}

const t1 = performance.now();
const result = await sft(model, train, {
  tokenizer,
  ...defaults,
  ...(sftConfig as Partial<SftOptions>),
  ...quick,
  outputDir: out,
  exportDir: `${out}/model`,
  progress: false,
  onStep: (r) => {
    if (r.step === 1 || r.step % 5 === 0) {
      console.log(
        `step ${r.step}  loss ${r.loss.toFixed(4)}  lr ${r.learning_rate.toExponential(2)}  ${
          r.tokens_per_second.toFixed(0)
        } tok/s`,
      );
    }
  },
});
console.log(`SFT: ${result.steps} updates on ${result.numExamples} examples in ${since(t1)} s`);
const lossRows = result.history.map((m) => ({ step: m.step, loss: m.loss }));
await plot.writeSvg(`${out}/loss.svg`, plot.lossCurve(lossRows, { title: `SFT loss (${modelName})` }));

if (heldOut) {
  const t2 = performance.now();
  const report = await evaluate(model, [{ name: embedded ? "lab_task" : "held_out", table: heldOut }], {
    tokenizer,
    maxNewTokens: args.quick ? 48 : 64,
    batchSize: 16,
    ...(evalConfig as Record<string, unknown>),
    outputDir: `${out}/eval`,
    overwrite: true,
    modelName: `${modelName} + SFT`,
    progress: false,
  });
  console.log(formatReport(report));
  console.log(`evaluation: ${since(t2)} s`);
}
model.dispose();
console.log(`\nwrote ${out}/ (config.json, metrics.jsonl, loss.svg, model/, eval/) in ${since(t0)} s`);
