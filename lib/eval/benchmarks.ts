/**
 * The benchmark registry: named benchmarks (one file may hold several, split by `dataset_name`), the
 * recipe's published accuracies for reference, and the resolution of names and specs into question
 * lists that `evaluate` runs.
 *
 * @module
 */
import type { Row } from "../data/types.ts";
import { type ColumnMapping, type DatasetFormat, loadDataset, type Table } from "../data/dataset.ts";
import { env } from "../util/env.ts";
import { tableRows } from "../util/table.ts";

/** Which grader's verdict is the headline accuracy. */
export type GraderName = "lenient" | "strict";

/** A benchmark: where its questions come from and how they are graded. */
export interface BenchmarkSpec {
  /** Name in reports (for split files: the prefix, unless `splitByDatasetName` names come out as is). */
  name: string;
  /** Data file(s) for `loadDataset`, relative to `dataDir` unless absolute. */
  path?: string | string[];
  /** Rows already loaded (instead of `path`): a table or an array of rows. */
  table?: Table | Row[];
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

/**
 * Turn benchmark names (from the registry), specs or `{ name, table }` into row lists, splitting
 * files by `datasetName` where asked.
 */
export async function resolveBenchmarks(
  benchmarks: (string | BenchmarkSpec)[],
  options: ResolveOptions = {},
): Promise<ResolvedBenchmark[]> {
  const dataDir = options.dataDir ?? env("MEDTHINK_DATA") ?? "data";
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
    if (spec.table) rows = tableRows<Row>(spec.table);
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
      rows = tableRows<Row>(table);
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
