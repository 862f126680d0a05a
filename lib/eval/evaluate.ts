/**
 * Evaluation as the recipe does it, and a bit more: greedy decoding by default (sampled runs on
 * request), strict and lenient grading of every completion, every prediction written to JSONL (which
 * also makes a run resumable: the row job of `lib/engine/row_job.ts`), and the report as JSON, Markdown
 * and a bar chart. The benchmark registry is in `benchmarks.ts`, the report's statistics in `report.ts`.
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import { type CompletionEngine, isCompletionEngine } from "../engine/types.ts";
import type { Row } from "../data/types.ts";
import type { Table } from "../data/dataset.ts";
import { buildPrompt } from "../data/prompt.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { medvlthinkerReward } from "../reward/medvlthinker.ts";
import { lenientGrade } from "../reward/lenient.ts";
import { accuracyBars, comparisonChart, writeSvg } from "./plot.ts";
import {
  type ChatTokenizer,
  generateCompletions,
  type ImageInputBuilder,
  isVisionModel,
  type PromptBuilder,
  rowHasImages,
} from "../engine/generate_batch.ts";
import { openRowJob } from "../engine/row_job.ts";
import type { SamplingOptions } from "../engine/sampling.ts";
import { checkOptionKeys } from "../util/options.ts";
import { type BenchmarkSpec, resolveBenchmarks, type ResolveOptions } from "./benchmarks.ts";
import { compareReports, type EvalReport, formatReport, type Prediction, summarize } from "./report.ts";

export type { Table };
export {
  BENCHMARKS,
  type BenchmarkSpec,
  type GraderName,
  PUBLISHED_ACCURACY,
  registerBenchmark,
  resolveBenchmarks,
  type ResolvedBenchmark,
  type ResolveOptions,
} from "./benchmarks.ts";
export {
  type BenchmarkResult,
  type CompareOptions,
  compareReports,
  type Comparison,
  type EvalReport,
  formatReport,
  type Prediction,
} from "./report.ts";

/** Options of {@linkcode evaluate}. */
export interface EvaluateOptions extends ResolveOptions, SamplingOptions {
  /** The model's tokenizer. Default: `loadTokenizer(model.dir)` (the folder's own, else the embedded Qwen2.5 one). */
  tokenizer?: ChatTokenizer;
  /**
   * Runs per question, the sample count of every generating function (the recipe reports the mean of 3);
   * run r of question q draws seed (seed, q, r). Default 1. Decoding defaults: `temperature` 0 (greedy, the
   * recipe's evaluation; above 0 samples), `topP` 1, `topK` 0, `maxNewTokens` 4096.
   */
  numGenerations?: number;
  /** Alias of `numGenerations` (the CLI's `--runs`, the report's `settings.runs`); give one of the two. */
  runs?: number;
  /** Base seed. Default 0. */
  seed?: number;
  /** Questions per `generate` call. Default 8. */
  batchSize?: number;
  /** Prompt template for `buildPrompt`. */
  template?: string;
  /** Custom prompt builder (overrides `template`). */
  prompt?: PromptBuilder;
  /** Multimodal inputs for image rows (Qwen2.5-VL). */
  images?: ImageInputBuilder;
  /**
   * Folder for `predictions.jsonl` (every completion, graded), `report.json`, `report.md` and
   * `accuracy.svg`. An existing `predictions.jsonl` with the same settings is resumed.
   */
  outputDir?: string;
  /** Alias of `outputDir` (the name before the toolkit settled on one vocabulary); give one of the two. */
  outDir?: string;
  /** Start over even if `outputDir` holds predictions. Default false. */
  overwrite?: boolean;
  /** Name of the benchmark when `evaluate` is given a table of rows instead of benchmarks. Default `eval`. */
  benchmarkName?: string;
  /** Headline grader when `evaluate` is given a table of rows. Default `lenient` (the recipe's). */
  grader?: "lenient" | "strict";
  /** Name of the model in reports. Default: its folder. */
  modelName?: string;
  /** Bootstrap resamples. Default 2000. */
  bootstrapSamples?: number;
  /** Interval coverage. Default 0.95. */
  level?: number;
  /** Another evaluation (a report, or the path of its report.json) to compare with, question by question. */
  compareWith?: EvalReport | string;
  /** Published accuracies (percent) per benchmark, drawn as "published" marks on the bar chart. */
  reference?: Record<string, number>;
  /** Stop after the batch in flight; the report then covers what was done (`complete: false`). */
  signal?: AbortSignal;
  /** Draw a progress bar on stderr. Default: when stderr is a terminal. */
  progress?: boolean;
  /** Called after every batch. */
  onProgress?: (info: { done: number; total: number }) => void;
}

function gradeOne(
  benchmark: string,
  row: Row,
  run: number,
  completion: string,
  length: number,
  reason: "stop" | "length",
): Prediction {
  const strict = medvlthinkerReward(completion, row);
  const lenient = lenientGrade(completion, row);
  return {
    benchmark,
    id: String(row.id),
    run,
    completion,
    length,
    finishReason: reason,
    answerLabel: row.answerLabel,
    extracted: lenient.extracted,
    predictedLabel: lenient.predictedLabel,
    lenient: lenient.correct,
    strict: strict.reward,
    format: strict.format,
  };
}

const EVALUATE_OPTION_KEYS = [
  "dataDir",
  "limit",
  "onBadRow",
  "tokenizer",
  "temperature",
  "topP",
  "topK",
  "maxNewTokens",
  "numGenerations",
  "runs",
  "seed",
  "batchSize",
  "template",
  "prompt",
  "images",
  "outputDir",
  "outDir",
  "overwrite",
  "benchmarkName",
  "grader",
  "modelName",
  "bootstrapSamples",
  "level",
  "compareWith",
  "reference",
  "signal",
  "progress",
  "onProgress",
];

/** A table of rows (arquero) or an array of question rows, rather than a list of benchmarks. */
function isRowSource(x: unknown): x is Table | Row[] {
  if (Array.isArray(x)) {
    const first = x[0];
    return typeof first === "object" && first !== null && "question" in first;
  }
  return typeof x === "object" && x !== null && typeof (x as { objects?: unknown }).objects === "function";
}

/**
 * Evaluate `model` on benchmarks (registry names or specs), or on a table of rows (one benchmark named
 * `benchmarkName`), and write a report when `outputDir` is given.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * const model = await loadModel("medthink-tiny");
 * const report = await evaluate(model, ["medqa", "pubmedqa"], {
 *   dataDir: "data", limit: 20, maxNewTokens: 64, outputDir: "runs/eval",
 * });
 * console.log(report.benchmarks.map((b) => `${b.name}: ${b.accuracy}`), report.mean);
 * // a held-out table in memory: per-question scores in report.scores.held_out
 * const heldOut = await evaluate(model, rows, { benchmarkName: "held_out", maxNewTokens: 64 });
 * ```
 */
export async function evaluate(
  model: CausalLM | CompletionEngine,
  benchmarks: (string | BenchmarkSpec)[] | Table | Row[],
  options: EvaluateOptions = {},
): Promise<EvalReport> {
  checkOptionKeys(options, EVALUATE_OPTION_KEYS, "evaluate options");
  if (options.outputDir !== undefined && options.outDir !== undefined) {
    throw new Error("evaluate options give both outputDir and its alias outDir; keep outputDir.");
  }
  const {
    temperature = 0,
    topP = 1,
    topK = 0,
    maxNewTokens = 4096,
    seed = 0,
    batchSize = 8,
    template,
    images,
    overwrite = false,
    bootstrapSamples = 2000,
    level = 0.95,
  } = options;
  const outputDir = options.outputDir ?? options.outDir;
  if (options.numGenerations !== undefined && options.runs !== undefined) {
    throw new Error("evaluate options give both numGenerations and its alias runs; keep numGenerations.");
  }
  const runs = options.numGenerations ?? options.runs ?? 1;
  if (!Number.isInteger(runs) || runs < 1) {
    throw new Error(`evaluate option numGenerations (runs) must be a positive integer, got ${runs}.`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`evaluate option batchSize must be a positive integer, got ${batchSize}.`);
  }
  const modelName = options.modelName ??
    (isCompletionEngine(model) ? model.name : model.dir ?? model.config.modelType);
  const specs: (string | BenchmarkSpec)[] = isRowSource(benchmarks)
    ? [{ name: options.benchmarkName ?? "eval", table: benchmarks, grader: options.grader }]
    : benchmarks as (string | BenchmarkSpec)[];
  const resolved = await resolveBenchmarks(specs, options);
  // an engine's server decides whether it takes images
  if (!isCompletionEngine(model) && !isVisionModel(model)) {
    for (const b of resolved) {
      const withImages = b.rows.filter(rowHasImages).length;
      if (withImages > 0) {
        throw new Error(
          `Benchmark '${b.name}' has ${withImages} question(s) with images, but the model ${modelName} ` +
            `(${model.config.modelType}) is text-only; evaluate image benchmarks with a Qwen2.5-VL checkpoint.`,
        );
      }
    }
  }
  for (const b of resolved) {
    const ids = new Set<string>();
    for (const r of b.rows) {
      if (ids.has(String(r.id))) {
        throw new Error(`Benchmark '${b.name}' repeats question id ${r.id}; ids must be unique.`);
      }
      ids.add(String(r.id));
    }
  }
  const prompt: PromptBuilder = options.prompt ?? ((row) => buildPrompt(row, { template }));
  const tokenizer = options.tokenizer ??
    (isCompletionEngine(model) ? undefined : await loadTokenizer(model.dir));
  const settings = {
    temperature,
    topP,
    topK,
    maxNewTokens,
    seed,
    template: template ?? null,
    model: modelName,
  };
  const dir = outputDir?.replace(/\/$/, "");
  const predictionsPath = dir !== undefined ? `${dir}/predictions.jsonl` : undefined;
  // one item per (benchmark, question); it is done once all its runs are graded
  const items = resolved.flatMap((b) => b.rows.map((row) => ({ benchmark: b.name, row })));
  const itemKey = (benchmark: string, id: string) => `${benchmark}\u0000${id}`;
  const job = await openRowJob<{ benchmark: string; row: Row }, Prediction>({
    name: "evaluate",
    items,
    key: (item) => itemKey(item.benchmark, String(item.row.id)),
    recordKey: (p) => itemKey(p.benchmark, p.id),
    isDone: (_, records) => {
      for (let r = 0; r < runs; r++) if (!records.some((p) => p.run === r)) return false;
      return true;
    },
    out: predictionsPath,
    meta: { kind: "evaluate", ...settings },
    overwrite,
  });
  const { stopped } = await job.run(async (batch) => {
    const benchmark = batch[0].benchmark;
    const rows = batch.map((item) => item.row);
    const outs = await generateCompletions(model, rows, {
      tokenizer,
      prompt,
      images,
      n: runs,
      temperature,
      topP,
      topK,
      maxNewTokens,
      seed,
    });
    const records: Prediction[] = [];
    for (const [i, o] of outs.entries()) {
      for (let r = 0; r < runs; r++) {
        records.push(gradeOne(benchmark, rows[i], r, o.completions[r], o.lengths[r], o.finishReasons[r]));
      }
    }
    return records;
  }, {
    batchSize,
    groupOf: (item) => item.benchmark,
    signal: options.signal,
    progress: options.progress,
    show: ["benchmark"],
    status: (batch) => ({ benchmark: batch[0].benchmark }),
    onProgress: options.onProgress,
  });
  // later records of a (benchmark, question, run) replace earlier ones, as a rerun's do
  const preds = new Map<string, Prediction>();
  for (const list of job.records.values()) {
    for (const p of list) preds.set(`${itemKey(p.benchmark, p.id)}\u0000${p.run}`, p);
  }
  const report = summarize(modelName, settings, resolved, preds, runs, {
    samples: bootstrapSamples,
    level,
    seed,
  });
  report.settings.runs = runs;
  report.complete = !stopped;
  if (options.compareWith) {
    const other = typeof options.compareWith === "string"
      ? JSON.parse(await Deno.readTextFile(options.compareWith)) as EvalReport
      : options.compareWith;
    report.comparison = compareReports(report, other, { samples: bootstrapSamples, level, seed });
  }
  if (dir !== undefined) {
    report.files = {
      predictions: predictionsPath!,
      json: `${dir}/report.json`,
      markdown: `${dir}/report.md`,
      svg: `${dir}/accuracy.svg`,
      ...(report.comparison ? { comparisonSvg: `${dir}/comparison.svg` } : {}),
    };
    await Deno.writeTextFile(report.files.json, JSON.stringify(report, null, 2) + "\n");
    await Deno.writeTextFile(report.files.markdown, formatReport(report));
    if (report.comparison) {
      await writeSvg(
        report.files.comparisonSvg!,
        comparisonChart(report.comparison, { title: `${modelName} minus ${report.comparison.other}` }),
      );
    }
    if (report.benchmarks.length > 0) {
      await writeSvg(
        report.files.svg,
        accuracyBars(report, { title: `Accuracy: ${modelName}`, reference: options.reference }),
      );
    }
  }
  return report;
}
