/**
 * Evaluate a model on medical benchmarks the recipe's way (greedy decoding, lenient grading, 95%
 * bootstrap intervals), with the published MedVLThinker numbers drawn as labelled reference marks.
 *
 *   deno run -A examples/evaluate.ts                      # medthink-tiny: lab task + bundled MedQA / PubMedQA
 *   deno run -A examples/evaluate.ts --quick              # CI-sized (also when CI=true)
 *   deno run -A examples/evaluate.ts --model path/to/Qwen2.5-VL-3B-Instruct \
 *     --benchmarks vqa_rad_closed,medqa --data-dir path/to/data --config examples/configs/evaluate.yaml
 *   deno run -A examples/evaluate.ts --model runs/sft_text/model --data my_questions.jsonl
 *
 * Writes `runs/evaluate/` (or `--out`): `predictions.jsonl` (every completion, graded; `--resume` continues),
 * `report.json`, `report.md` and `accuracy.svg`.
 *
 * @module
 */
import {
  aq,
  type BenchmarkResult,
  type BenchmarkSpec,
  evaluate,
  type EvaluateOptions,
  formatReport,
  labTaskSplits,
  loadModel,
  loadTokenizer,
  PUBLISHED_ACCURACY,
  visionInputBuilder,
} from "../mod.ts";
import { findDataDir, outDir, parseExampleArgs, readYamlConfig, section, since } from "./_common.ts";

const USAGE = `
examples/evaluate.ts: accuracy per benchmark with 95% intervals, report and chart.

  --model DIR         checkpoint folder, medthink-tiny (default) or medthink-tiny-vl
  --data FILE         evaluate on this file (parquet/JSONL/JSON/CSV) instead of the defaults
  --benchmarks LIST   comma-separated registry names (medqa, pubmedqa, vqa_rad_closed, medvlthinker_eval)
  --data-dir DIR      folder the registry's paths are read from (default: the bundled data)
  --reference NAME    published results drawn on the chart (default Qwen2.5-VL-3B)
  --limit N           questions per benchmark
  --config FILE       YAML (see examples/configs/evaluate.yaml); flags override it
  --out DIR           output folder (default runs/evaluate)
  --backend NAME      auto | tensorflow | wasm | webgpu | cpu
  --resume            continue from predictions.jsonl in the output folder instead of starting over
  --quick             CI-sized run (also when CI=true)
`;

const args = parseExampleArgs(USAGE, ["benchmarks", "data-dir", "reference", "limit"], { resume: true });
const config = await readYamlConfig(args.config);
const evalConfig = section(config, "evaluate", args.config) as Partial<EvaluateOptions>;
const out = await outDir(args, "evaluate");
const modelName = args.model ?? (config.model as string | undefined) ?? "medthink-tiny";
const dataDir = (args.extra["data-dir"] as string | undefined) ?? (config.dataDir as string | undefined) ??
  findDataDir() ?? undefined;
const limitFlag = args.extra.limit as string | undefined;
// Without a config, a short run (40 per benchmark); a config without `limit` means every question.
const limit = limitFlag
  ? Number(limitFlag)
  : args.quick
  ? 10
  : args.config
  ? (config.limit as number | undefined)
  : 40;
const refName = (args.extra.reference as string | undefined) ?? (config.reference as string | undefined) ??
  "Qwen2.5-VL-3B";
if (!PUBLISHED_ACCURACY[refName]) {
  throw new Error(`--reference '${refName}' is not one of ${Object.keys(PUBLISHED_ACCURACY).join(", ")}.`);
}

const t0 = performance.now();
const model = await loadModel(modelName, { backend: (args.backend ?? config.backend ?? "auto") as never });
const tokenizer = await loadTokenizer(model.dir);
const vision = model.config.modelType.includes("vl");
console.log(`model ${modelName} (${model.config.modelType}) on ${model.backend} (${since(t0)} s)`);

// Benchmark names as the paper prints them where one exists, so that our bar and the published mark
// share a column of the chart.
const PAPER_NAMES: Record<string, string> = { vqa_rad_closed: "VQA-RAD" };
const specs: BenchmarkSpec[] = [];
const listed =
  (args.extra.benchmarks as string | undefined)?.split(",").map((s) => s.trim()).filter(Boolean) ??
    (config.benchmarks as string[] | undefined);
const dataPath = args.data ?? (config.data as string | undefined);
if (dataPath) {
  specs.push({ name: dataPath.replace(/^.*\//, "").replace(/\.[^.]*$/, ""), path: dataPath });
} else if (listed) {
  for (const name of listed) specs.push({ name: PAPER_NAMES[name] ?? name, path: registryPath(name) });
} else {
  // The embedded default: the lab task's held-out questions, plus the bundled public benchmarks
  // when they are found (VQA-RAD only for a vision-language model).
  specs.push({
    name: "lab_task",
    table: aq.from(labTaskSplits({ train: 3, test: args.quick ? 30 : 90 }).test),
  });
  if (dataDir) {
    specs.push({ name: "medqa", path: registryPath("medqa") });
    if (!args.quick) specs.push({ name: "pubmedqa", path: registryPath("pubmedqa") });
    if (vision) specs.push({ name: "VQA-RAD", path: registryPath("vqa_rad_closed") });
  } else {
    console.log("no bundled data found (set MEDTHINK_DATA or --data-dir): evaluating on the lab task only");
  }
}

function registryPath(name: string): string {
  const paths: Record<string, string> = {
    medqa: "medqa_4opt/test.jsonl",
    pubmedqa: "pubmedqa/ori_pqal.json",
    vqa_rad_closed: "vqa_rad_closed/test.jsonl",
    medvlthinker_eval: "medvlthinker_eval/test.parquet",
  };
  if (!paths[name]) throw new Error(`Benchmark '${name}' is not one of ${Object.keys(paths).join(", ")}.`);
  if (!dataDir) throw new Error(`Benchmark '${name}' needs --data-dir (no bundled data folder was found).`);
  return `${dataDir}/${paths[name]}`;
}

const t1 = performance.now();
const report = await evaluate(model, specs, {
  tokenizer,
  maxNewTokens: args.quick ? 32 : 64,
  batchSize: 8,
  ...evalConfig,
  limit,
  ...(vision ? { images: visionInputBuilder(model) } : {}),
  outputDir: out,
  overwrite: !args.resume,
  modelName,
  reference: { ...PUBLISHED_ACCURACY[refName] },
  progress: false,
  onProgress: ({ done, total }) => console.log(`answered ${done}/${total}`),
});
console.log(formatReport(report));
const line = report.benchmarks.map((b: BenchmarkResult) => `${b.name} ${(100 * b.accuracy).toFixed(1)}%`)
  .join(", ");
console.log(`evaluation: ${line} in ${since(t1)} s (published marks: ${refName}, not our results)`);
model.dispose();
console.log(`\nwrote ${out}/ (predictions.jsonl, report.json, report.md, accuracy.svg) in ${since(t0)} s`);
