/**
 * Evaluation as the recipe does it, and a bit more: a registry of benchmarks (one file may hold
 * several, split by `dataset_name`), greedy decoding by default (sampled runs on request), strict
 * and lenient grading, per-benchmark accuracy with a bootstrap 95% interval, the plain mean over
 * benchmarks, paired comparison of two models on the same questions, every prediction written to
 * JSONL (which also makes a run resumable), and a report as Markdown, JSON and a bar chart.
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import { type CompletionEngine, isCompletionEngine } from "../engine/types.ts";
import type { Row } from "../data/types.ts";
import { buildPrompt } from "../data/prompt.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { type ColumnMapping, type DatasetFormat, loadDataset, type Table } from "../data/dataset.ts";
import { medvlthinkerReward } from "../reward/medvlthinker.ts";
import { lenientGrade } from "../reward/lenient.ts";
import { createProgress } from "../util/progress.ts";
import { accuracyBars, comparisonChart, writeSvg } from "./plot.ts";
import {
  type ChatTokenizer,
  generateCompletions,
  type ImageInputBuilder,
  isVisionModel,
  type PromptBuilder,
  rowHasImages,
} from "../engine/generate_batch.ts";
import { openJsonlStore } from "../data/jsonl_store.ts";
import { bootstrapMeanCI, bootstrapMeanOfMeansCI, type Interval, mean, pairedBootstrapCI } from "./stats.ts";

export type { Table };

/** Which grader's verdict is the headline accuracy. */
export type GraderName = "lenient" | "strict";

/** A benchmark: where its questions come from and how they are graded. */
export interface BenchmarkSpec {
  /** Name in reports (for split files: the prefix, unless `splitByDatasetName` names come out as is). */
  name: string;
  /** Data file(s) for `loadDataset`, relative to `dataDir` unless absolute. */
  path?: string | string[];
  /** Rows already loaded (instead of `path`). */
  table?: Table;
  /** `loadDataset` format (default: recognised from the file). */
  format?: DatasetFormat;
  /** `loadDataset` column mapping. */
  columns?: ColumnMapping;
  /** For a folder: only files of this split (`test.parquet`, `test-00000-of-00001.parquet`, ...). */
  split?: string;
  /** Keep only rows whose `datasetName` equals this. */
  datasetName?: string;
  /** One file holding several benchmarks: one benchmark per distinct `datasetName`. */
  splitByDatasetName?: boolean;
  /** Headline grader. Default `lenient` (the recipe's evaluation). */
  grader?: GraderName;
  /** Evaluate only the first `limit` rows (per benchmark after splitting). */
  limit?: number;
  /** Free text: what the benchmark is. */
  description?: string;
}

/** The built-in benchmarks, by name (paths relative to `dataDir`). Extend with {@linkcode registerBenchmark}. */
export const BENCHMARKS: Map<string, BenchmarkSpec> = new Map([
  ["medqa", {
    name: "medqa",
    path: "medqa_4opt/test.jsonl",
    description: "MedQA-USMLE 4-option test set (medagents-benchmark JSONL), 1273 questions",
  }],
  ["pubmedqa", {
    name: "pubmedqa",
    path: "pubmedqa/ori_pqal.json",
    description: "PubMedQA PQA-L (question with contexts; yes / no / maybe), 1000 questions",
  }],
  ["vqa_rad_closed", {
    name: "vqa_rad_closed",
    path: "vqa_rad_closed/test.jsonl",
    description: "VQA-RAD closed (yes/no) test questions with images, 251 questions",
  }],
  ["medvlthinker_eval", {
    name: "medvlthinker_eval",
    path: "medvlthinker_eval",
    split: "test",
    splitByDatasetName: true,
    description:
      "The recipe's evaluation set (six benchmarks, 8,220 questions, in one table split by dataset_name): " +
      "download the UCSC-VLAA/MedVLThinker-Eval dataset folder into <dataDir>/medvlthinker_eval",
  }],
]);

/** Add or replace a benchmark of the registry. */
export function registerBenchmark(spec: BenchmarkSpec): void {
  if (!spec.name) throw new Error("A benchmark needs a name.");
  BENCHMARKS.set(spec.name, spec);
}

/**
 * The recipe's published accuracies (percent) per model, benchmark names as the paper prints them
 * (RECIPE.md); for reference marks on plots, never as our results.
 */
export const PUBLISHED_ACCURACY: Readonly<Record<string, Readonly<Record<string, number>>>> = Object.freeze({
  "Qwen2.5-VL-3B": {
    "PMC-VQA": 44.77,
    MMMU: 44.12,
    "MedXpertQA-MM": 20.69,
    PathVQA: 61.96,
    SLAKE: 61.30,
    "VQA-RAD": 62.01,
    mean: 49.14,
  },
  "MedVLThinker-3B-RL-m23k": {
    "PMC-VQA": 47.32,
    MMMU: 52.16,
    "MedXpertQA-MM": 22.90,
    PathVQA: 62.28,
    SLAKE: 63.38,
    "VQA-RAD": 71.08,
    mean: 53.19,
  },
  "Qwen2.5-VL-7B": {
    "PMC-VQA": 49.30,
    MMMU: 52.94,
    "MedXpertQA-MM": 18.89,
    PathVQA: 65.39,
    SLAKE: 65.71,
    "VQA-RAD": 68.75,
    mean: 53.50,
  },
  "MedVLThinker-7B-RL-m23k": {
    "PMC-VQA": 50.67,
    MMMU: 56.86,
    "MedXpertQA-MM": 24.43,
    PathVQA: 66.83,
    SLAKE: 65.79,
    "VQA-RAD": 64.71,
    mean: 54.88,
  },
  "MedVLThinker-32B-RL-m23k": {
    "PMC-VQA": 54.37,
    MMMU: 70.00,
    "MedXpertQA-MM": 34.60,
    PathVQA: 68.82,
    SLAKE: 73.96,
    "VQA-RAD": 76.96,
    mean: 63.12,
  },
});

/** A benchmark ready to run. */
export interface ResolvedBenchmark {
  /** Name in reports. */
  name: string;
  /** Its questions, in order. */
  rows: Row[];
  /** The headline grader. */
  grader: GraderName;
}

/** Options of {@linkcode resolveBenchmarks}. */
export interface ResolveOptions {
  /** Folder that relative benchmark paths are read from. Default `$MEDTHINK_DATA`, else `data`. */
  dataDir?: string;
  /** At most this many rows per benchmark (overrides a larger spec limit). */
  limit?: number;
  /** `loadDataset`'s bad-row policy. */
  onBadRow?: "error" | "skip";
}

function envGet(key: string): string | undefined {
  try {
    return Deno.env.get(key) || undefined;
  } catch {
    return undefined;
  }
}

function tableRows(table: { objects(): unknown[] }): Row[] {
  return table.objects() as Row[];
}

/**
 * Turn benchmark names (from the registry), specs or `{ name, table }` into row lists, splitting
 * files by `datasetName` where asked.
 */
export async function resolveBenchmarks(
  benchmarks: (string | BenchmarkSpec)[],
  options: ResolveOptions = {},
): Promise<ResolvedBenchmark[]> {
  const dataDir = options.dataDir ?? envGet("MEDTHINK_DATA") ?? "data";
  const out: ResolvedBenchmark[] = [];
  for (const b of benchmarks) {
    let spec: BenchmarkSpec;
    if (typeof b === "string") {
      // A Hub dataset by id (hf://datasets/ORG/NAME): its parquet files, named by the repository.
      const found = BENCHMARKS.get(b) ??
        (b.startsWith("hf://datasets/") ? { name: b.slice(14).split(/[/@]/)[1] ?? b, path: b } : undefined);
      if (!found) {
        throw new Error(
          `Unknown benchmark '${b}'; known: ${[...BENCHMARKS.keys()].join(", ")} (or give {name, path}).`,
        );
      }
      spec = found;
    } else spec = b;
    const limit = Math.min(spec.limit ?? Infinity, options.limit ?? Infinity);
    let rows: Row[];
    if (spec.table) rows = tableRows(spec.table);
    else if (spec.path) {
      const paths = (Array.isArray(spec.path) ? spec.path : [spec.path]).map((p) =>
        p.startsWith("/") || p.startsWith("hf://") || /^[A-Za-z]:[\\/]/.test(p)
          ? p
          : `${dataDir.replace(/\/$/, "")}/${p}`
      );
      // Reading stops at the limit, unless rows are picked or split by dataset name afterwards.
      const early = !spec.splitByDatasetName && spec.datasetName === undefined && Number.isFinite(limit);
      const table = await loadDataset(paths.length === 1 ? paths[0] : paths, {
        format: spec.format,
        columns: spec.columns,
        split: spec.split,
        onBadRow: options.onBadRow,
        ...(early ? { limit } : {}),
      });
      rows = tableRows(table);
    } else throw new Error(`Benchmark '${spec.name}' has neither a path nor a table.`);
    if (spec.datasetName !== undefined) rows = rows.filter((r) => r.datasetName === spec.datasetName);
    const grader = spec.grader ?? "lenient";
    if (grader !== "lenient" && grader !== "strict") {
      throw new Error(`Benchmark '${spec.name}' asks for grader '${grader}'; use lenient or strict.`);
    }
    const groups: [string, Row[]][] = [];
    if (spec.splitByDatasetName) {
      const by = new Map<string, Row[]>();
      for (const r of rows) {
        const key = r.datasetName;
        if (key === undefined || key === null || key === "") {
          throw new Error(`Benchmark '${spec.name}' is split by dataset_name, but row ${r.id} has none.`);
        }
        by.set(key, [...(by.get(key) ?? []), r]);
      }
      groups.push(...by.entries());
    } else groups.push([spec.name, rows]);
    for (const [name, list] of groups) {
      if (out.some((o) => o.name === name)) {
        throw new Error(`Two benchmarks are named '${name}'; names must be unique.`);
      }
      if (list.length === 0) throw new Error(`Benchmark '${name}' has no rows.`);
      out.push({ name, rows: Number.isFinite(limit) ? list.slice(0, limit) : list, grader });
    }
  }
  return out;
}

/** Options of {@linkcode evaluate}. */
export interface EvaluateOptions extends ResolveOptions {
  /** The model's tokenizer. Default: `loadTokenizer(model.dir)` (the folder's own, else the embedded Qwen2.5 one). */
  tokenizer?: ChatTokenizer;
  /** 0 = greedy (default, the recipe); above 0 samples. */
  temperature?: number;
  /** Default 1. */
  topP?: number;
  /** Default 0 (off). */
  topK?: number;
  /** Default 4096 (the recipe). */
  maxNewTokens?: number;
  /** Runs per question (the recipe reports the mean of 3); run r of question q draws seed (seed, q, r). Default 1. */
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
  outDir?: string;
  /** Start over even if `outDir` holds predictions. Default false. */
  overwrite?: boolean;
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

/** One graded completion, as written to `predictions.jsonl`. */
export interface Prediction {
  /** Benchmark name. */
  benchmark: string;
  /** Question id. */
  id: string;
  /** Run index (0-based). */
  run: number;
  /** The completion, decoded without special tokens. */
  completion: string;
  /** Generated tokens (stop token included). */
  length: number;
  /** `stop` (an end token) or `length` (hit `maxNewTokens`). */
  finishReason: "stop" | "length";
  /** The correct option's letter. */
  answerLabel: string;
  /** Lenient grader: the extracted answer. */
  extracted: string;
  /** Lenient grader: the option the extracted answer names, or null. */
  predictedLabel: string | null;
  /** 1 when the lenient grader says correct. */
  lenient: number;
  /** The recipe's strict reward (format and accuracy). */
  strict: number;
  /** The strict format check alone. */
  format: number;
}

/** Per-benchmark results. */
export interface BenchmarkResult {
  /** Benchmark name. */
  name: string;
  /** Questions evaluated. */
  n: number;
  /** Headline accuracy (grader below), mean over questions of the mean over runs. */
  accuracy: number;
  /** Bootstrap interval of `accuracy` (questions resampled). */
  ci: Interval;
  /** Which grader gives the headline accuracy. */
  grader: GraderName;
  /** Accuracy under the lenient grader (the recipe's evaluation). */
  lenientAccuracy: number;
  /** Accuracy under the recipe's strict reward (format and answer). */
  strictAccuracy: number;
  /** Bootstrap interval of `strictAccuracy`. */
  strictCi: Interval;
  /** Share of completions passing the strict format check. */
  formatRate: number;
  /** Share of completions that hit `maxNewTokens`. */
  truncationRate: number;
  /** Mean generated tokens per completion. */
  meanResponseLength: number;
  /** Accuracy of each run separately. */
  accuracyByRun: number[];
}

/** A paired comparison of two evaluations on their shared questions. */
export interface Comparison {
  /** The other evaluation's model name. */
  other: string;
  /** Per shared benchmark: shared questions, both accuracies, and the paired difference (this minus other). */
  benchmarks: { name: string; n: number; accuracy: number; otherAccuracy: number; diff: Interval }[];
  /** Difference of the means over the compared benchmarks. */
  mean: Interval | null;
}

/** What {@linkcode evaluate} returns (and writes as report.json). */
export interface EvalReport {
  /** The model's name. */
  model: string;
  /** Decoding settings (temperature, topP, topK, maxNewTokens, seed, template, runs). */
  settings: Record<string, unknown>;
  /** One entry per benchmark, in the order given. */
  benchmarks: BenchmarkResult[];
  /** Plain mean over benchmarks, with a bootstrap interval (each benchmark resampled). */
  mean: { accuracy: number; ci: Interval; strictAccuracy: number } | null;
  /** False when the run was stopped before every question was answered. */
  complete: boolean;
  /** Per benchmark, question id -> headline score (mean over runs): what paired comparisons use. */
  scores: Record<string, Record<string, number>>;
  /** The paired comparison asked for with `compareWith`. */
  comparison?: Comparison;
  /** Files written (when `outDir` was given). */
  files?: { predictions: string; json: string; markdown: string; svg: string; comparisonSvg?: string };
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

/**
 * Evaluate `model` on benchmarks (registry names or specs) and write a report.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * const model = await loadModel("medthink-tiny");
 * const report = await evaluate(model, ["medqa", "pubmedqa"], {
 *   dataDir: "data", limit: 20, maxNewTokens: 64, outDir: "runs/eval",
 * });
 * console.log(report.benchmarks.map((b) => `${b.name}: ${b.accuracy}`), report.mean);
 * ```
 */
export async function evaluate(
  model: CausalLM | CompletionEngine,
  benchmarks: (string | BenchmarkSpec)[],
  options: EvaluateOptions = {},
): Promise<EvalReport> {
  const {
    temperature = 0,
    topP = 1,
    topK = 0,
    maxNewTokens = 4096,
    runs = 1,
    seed = 0,
    batchSize = 8,
    template,
    images,
    outDir,
    overwrite = false,
    bootstrapSamples = 2000,
    level = 0.95,
    signal,
  } = options;
  if (!Number.isInteger(runs) || runs < 1) {
    throw new Error(`evaluate option runs must be a positive integer, got ${runs}.`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`evaluate option batchSize must be a positive integer, got ${batchSize}.`);
  }
  const modelName = options.modelName ??
    (isCompletionEngine(model) ? model.name : model.dir ?? model.config.modelType);
  const resolved = await resolveBenchmarks(benchmarks, options);
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
  const predictionsPath = outDir ? `${outDir.replace(/\/$/, "")}/predictions.jsonl` : undefined;
  const store = predictionsPath
    ? await openJsonlStore<Prediction>(predictionsPath, {
      meta: { kind: "evaluate", ...settings },
      overwrite,
    })
    : undefined;
  const key = (b: string, id: string, run: number) => `${b}\u0000${id}\u0000${run}`;
  const preds = new Map<string, Prediction>();
  for (const p of store?.records ?? []) preds.set(key(p.benchmark, p.id, p.run), p);
  const isDone = (b: string, row: Row) => {
    for (let r = 0; r < runs; r++) if (!preds.has(key(b, String(row.id), r))) return false;
    return true;
  };
  const total = resolved.reduce((s, b) => s + b.rows.length, 0);
  let done = resolved.reduce((s, b) => s + b.rows.filter((r) => isDone(b.name, r)).length, 0);
  const bar = createProgress({
    total,
    label: "evaluate",
    start: done,
    bar: options.progress,
    show: ["benchmark"],
  });
  let stopped = false;
  outer: for (const b of resolved) {
    const pending = b.rows.filter((r) => !isDone(b.name, r));
    for (let start = 0; start < pending.length; start += batchSize) {
      if (signal?.aborted) {
        stopped = true;
        break outer;
      }
      const batch = pending.slice(start, start + batchSize);
      const outs = await generateCompletions(model, batch, {
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
          const p = gradeOne(b.name, batch[i], r, o.completions[r], o.lengths[r], o.finishReasons[r]);
          records.push(p);
          preds.set(key(b.name, p.id, r), p);
        }
      }
      await store?.append(records);
      done += batch.length;
      bar.update(done, { benchmark: b.name });
      options.onProgress?.({ done, total });
    }
  }
  bar.close();
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
  if (outDir) {
    const dir = outDir.replace(/\/$/, "");
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

function summarize(
  modelName: string,
  settings: Record<string, unknown>,
  resolved: ResolvedBenchmark[],
  preds: Map<string, Prediction>,
  runs: number,
  boot: { samples: number; level: number; seed: number },
): EvalReport {
  const results: BenchmarkResult[] = [];
  const scores: Record<string, Record<string, number>> = {};
  const headlineGroups: number[][] = [];
  for (const b of resolved) {
    const headline: number[] = [], lenient: number[] = [], strict: number[] = [];
    const byRun: number[][] = Array.from({ length: runs }, () => []);
    let format = 0, truncated = 0, length = 0, count = 0;
    const perQuestion: Record<string, number> = {};
    for (const row of b.rows) {
      const ps: Prediction[] = [];
      for (let r = 0; r < runs; r++) {
        const p = preds.get(`${b.name}\u0000${row.id}\u0000${r}`);
        if (p) ps.push(p);
      }
      if (ps.length < runs) continue; // not answered yet (a stopped run)
      const l = mean(ps.map((p) => p.lenient));
      const s = mean(ps.map((p) => p.strict));
      lenient.push(l);
      strict.push(s);
      const h = b.grader === "lenient" ? l : s;
      headline.push(h);
      perQuestion[String(row.id)] = h;
      ps.forEach((p, r) => byRun[r].push(b.grader === "lenient" ? p.lenient : p.strict));
      for (const p of ps) {
        format += p.format;
        truncated += p.finishReason === "length" ? 1 : 0;
        length += p.length;
        count++;
      }
    }
    if (headline.length === 0) continue;
    scores[b.name] = perQuestion;
    headlineGroups.push(headline);
    results.push({
      name: b.name,
      n: headline.length,
      accuracy: mean(headline),
      ci: bootstrapMeanCI(headline, boot),
      grader: b.grader,
      lenientAccuracy: mean(lenient),
      strictAccuracy: mean(strict),
      strictCi: bootstrapMeanCI(strict, boot),
      formatRate: format / count,
      truncationRate: truncated / count,
      meanResponseLength: length / count,
      accuracyByRun: byRun.map((x) => mean(x)),
    });
  }
  const meanResult = results.length > 0
    ? {
      accuracy: mean(results.map((r) => r.accuracy)),
      ci: bootstrapMeanOfMeansCI(headlineGroups, boot),
      strictAccuracy: mean(results.map((r) => r.strictAccuracy)),
    }
    : null;
  return {
    model: modelName,
    settings: { ...settings },
    benchmarks: results,
    mean: meanResult,
    complete: true,
    scores,
  };
}

/** Options of {@linkcode compareReports}. */
export interface CompareOptions {
  /** Bootstrap resamples. Default 2000. */
  samples?: number;
  /** Interval coverage. Default 0.95. */
  level?: number;
  /** Bootstrap seed. Default 0. */
  seed?: number;
}

/**
 * Paired comparison of two evaluations (`a` minus `b`) on the questions both answered, per benchmark
 * they share, with paired bootstrap intervals; and of the mean over those benchmarks.
 *
 * @example
 * ```ts
 * import { compareReports, type EvalReport } from "./evaluate.ts";
 * const base = { model: "base", scores: { medqa: { q1: 0, q2: 1, q3: 0 } } } as unknown as EvalReport;
 * const tuned = { model: "tuned", scores: { medqa: { q1: 1, q2: 1, q3: 1 } } } as unknown as EvalReport;
 * const c = compareReports(tuned, base);
 * console.assert(Math.abs(c.benchmarks[0].diff.estimate - 2 / 3) < 1e-12);
 * ```
 */
export function compareReports(a: EvalReport, b: EvalReport, options: CompareOptions = {}): Comparison {
  const { samples = 2000, level = 0.95, seed = 0 } = options;
  if (!a.scores || !b.scores) {
    throw new Error("compareReports needs reports with per-question scores (from evaluate).");
  }
  const out: Comparison["benchmarks"] = [];
  const diffs: number[][] = [];
  for (const [name, sa] of Object.entries(a.scores)) {
    const sb = b.scores[name];
    if (!sb) continue;
    const ids = Object.keys(sa).filter((id) => id in sb);
    if (ids.length === 0) continue;
    const xa = ids.map((id) => sa[id]);
    const xb = ids.map((id) => sb[id]);
    out.push({
      name,
      n: ids.length,
      accuracy: mean(xa),
      otherAccuracy: mean(xb),
      diff: pairedBootstrapCI(xa, xb, { samples, level, seed }),
    });
    diffs.push(ids.map((_, i) => xa[i] - xb[i]));
  }
  if (out.length === 0) {
    throw new Error(`Reports of ${a.model} and ${b.model} share no benchmark questions to compare.`);
  }
  return {
    other: b.model,
    benchmarks: out,
    mean: diffs.length > 0 ? bootstrapMeanOfMeansCI(diffs, { samples, level, seed }) : null,
  };
}

function pct(x: number): string {
  return Number.isFinite(x) ? (100 * x).toFixed(1) : "n/a";
}

function pctCi(i: Interval): string {
  return `${pct(i.estimate)} (${pct(i.low)}–${pct(i.high)})`;
}

function signedPct(i: Interval): string {
  const s = (x: number) => (x >= 0 ? "+" : "") + pct(x);
  return `${s(i.estimate)} (${s(i.low)} to ${s(i.high)})`;
}

/** The report as Markdown: settings, one table row per benchmark, the mean, and any comparison. */
export function formatReport(report: EvalReport): string {
  const s = report.settings;
  const level = report.benchmarks[0]?.ci.level ?? 0.95;
  const L = Math.round(level * 100);
  const lines = [
    `# Evaluation: ${report.model}`,
    "",
    `Decoding: ${
      Number(s.temperature) === 0 ? "greedy" : `temperature ${s.temperature}, top-p ${s.topP}`
    }, ` +
    `up to ${s.maxNewTokens} new tokens, ${s.runs ?? 1} run(s), seed ${s.seed}.` +
    (report.complete
      ? ""
      : " **Incomplete: the run was stopped; the numbers cover the questions answered.**"),
    "",
    `Accuracy in percent with ${L}% bootstrap intervals. Headline grader per benchmark as listed; ` +
    `strict = the recipe's reward (format and answer).`,
    "",
    `| benchmark | questions | grader | accuracy (${L}% CI) | lenient | strict (${L}% CI) | format ok | truncated | mean length |`,
    "| --- | ---: | --- | --- | ---: | --- | ---: | ---: | ---: |",
  ];
  for (const b of report.benchmarks) {
    lines.push(
      `| ${b.name} | ${b.n} | ${b.grader} | ${pctCi(b.ci)} | ${pct(b.lenientAccuracy)} | ${
        pctCi(b.strictCi)
      } | ` +
        `${pct(b.formatRate)} | ${pct(b.truncationRate)} | ${b.meanResponseLength.toFixed(1)} |`,
    );
  }
  if (report.mean) {
    lines.push(
      `| **mean of ${report.benchmarks.length}** | ${report.benchmarks.reduce((t, b) => t + b.n, 0)} | | ` +
        `${pctCi(report.mean.ci)} | | ${pct(report.mean.strictAccuracy)} | | | |`,
    );
  }
  if (report.comparison) {
    const c = report.comparison;
    lines.push(
      "",
      `## Paired comparison: ${report.model} minus ${c.other}`,
      "",
      `Same questions in both runs; difference in percentage points with a paired ${L}% bootstrap interval.`,
      "",
      `| benchmark | shared questions | this | other | difference (${L}% CI) |`,
      "| --- | ---: | ---: | ---: | --- |",
    );
    for (const b of c.benchmarks) {
      lines.push(
        `| ${b.name} | ${b.n} | ${pct(b.accuracy)} | ${pct(b.otherAccuracy)} | ${signedPct(b.diff)} |`,
      );
    }
    if (c.mean) lines.push(`| **mean** | | | | ${signedPct(c.mean)} |`);
  }
  return lines.join("\n") + "\n";
}
