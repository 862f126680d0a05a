/**
 * The recipe's difficulty filter (keep questions a model sometimes, but not usually, solves) and a
 * check for overlap between training data and benchmarks.
 *
 * @module
 */
import { arquero as aq } from "../util/deps.ts";
import type { Table } from "../data/dataset.ts";
import { checkOptionKeys } from "../util/options.ts";

export type { Table };

/** Options of {@linkcode filter}. */
export interface FilterOptions {
  /** Keep rows with at least this many passes (a count out of the row's `n`). Overrides `minRate`. */
  minPass?: number;
  /** Keep rows with at most this many passes. Overrides `maxRate`. */
  maxPass?: number;
  /** Lowest pass rate kept. Default 1/16 (the recipe: at least 1 of 16). */
  minRate?: number;
  /** Highest pass rate kept. Default 7/16 (the recipe: at most 7 of 16; for n = 4 that leaves exactly 1). */
  maxRate?: number;
  /**
   * Row order of the result: `original` (default), `easy-to-hard` (pass rate high to low: the
   * curriculum), or `hard-to-easy`. Ties keep their original order.
   */
  order?: "original" | "easy-to-hard" | "hard-to-easy";
}

/** What the filter kept and dropped, and why. */
export interface FilterReport {
  /** Rows in. */
  total: number;
  /** Rows kept. */
  kept: number;
  /** Dropped with a pass rate below the band (never-solved questions among them). */
  droppedTooHard: number;
  /** Of those, never solved. */
  droppedNeverSolved: number;
  /** Dropped with a pass rate above the band. */
  droppedTooEasy: number;
  /** The band applied, as pass rates. */
  band: { minRate: number; maxRate: number; minPass?: number; maxPass?: number };
  /** Questions per pass count before filtering (key: `passCount/n`). */
  histogram: Record<string, number>;
}

const EPS = 1e-9; // 1/16 and 7/16 in floating point must not drop a boundary row

function checkColumns(table: Table, need: string[]): void {
  const names = table.columnNames();
  for (const c of need) {
    if (!names.includes(c)) {
      throw new Error(
        `The table has no '${c}' column; filter needs probe results (columns ${
          need.join(", ")
        }), e.g. from probe().`,
      );
    }
  }
}

/**
 * Filter by pass rate and report what was kept and dropped.
 *
 * @example
 * ```ts
 * import { arquero as aq } from "../util/deps.ts";
 * import { filterWithReport } from "./filter.ts";
 * const probed = aq.table({ id: ["a", "b", "c"], passCount: [0, 1, 3], n: [4, 4, 4] });
 * const { table, report } = filterWithReport(probed);
 * console.assert(table.numRows() === 1 && report.droppedNeverSolved === 1);
 * ```
 */
export function filterWithReport(
  table: Table,
  options: FilterOptions = {},
): { table: Table; report: FilterReport } {
  checkOptionKeys(options, ["minPass", "maxPass", "minRate", "maxRate", "order"], "filter options");
  checkColumns(table, ["passCount", "n"]);
  const { minPass, maxPass, order = "original" } = options;
  const minRate = options.minRate ?? 1 / 16;
  const maxRate = options.maxRate ?? 7 / 16;
  if (!["original", "easy-to-hard", "hard-to-easy"].includes(order)) {
    throw new Error(`filter option order must be original, easy-to-hard or hard-to-easy, got '${order}'.`);
  }
  const passCount = table.array("passCount") as ArrayLike<number>;
  const nCol = table.array("n") as ArrayLike<number>;
  const keep: number[] = [];
  const histogram: Record<string, number> = {};
  let tooHard = 0, neverSolved = 0, tooEasy = 0;
  for (let i = 0; i < table.numRows(); i++) {
    const p = Number(passCount[i]);
    const n = Number(nCol[i]);
    if (!Number.isFinite(p) || !Number.isFinite(n) || n <= 0 || p < 0 || p > n) {
      throw new Error(
        `Row ${i} of the probe table has passCount ${passCount[i]} out of n ${nCol[i]}, which is not valid.`,
      );
    }
    const key = `${p}/${n}`;
    histogram[key] = (histogram[key] ?? 0) + 1;
    const rate = p / n;
    const low = minPass !== undefined ? p < minPass : rate < minRate - EPS;
    const high = maxPass !== undefined ? p > maxPass : rate > maxRate + EPS;
    if (low) {
      tooHard++;
      if (p === 0) neverSolved++;
    } else if (high) tooEasy++;
    else keep.push(i);
  }
  if (order !== "original") {
    const rate = (i: number) => Number(passCount[i]) / Number(nCol[i]);
    const sign = order === "easy-to-hard" ? -1 : 1;
    keep.sort((a, b) => sign * (rate(a) - rate(b)) || a - b);
  }
  // Rebuild through column arrays so that the result's row order is exactly `keep`.
  const columns: Record<string, unknown[]> = {};
  for (const name of table.columnNames()) {
    const col = table.array(name) as ArrayLike<unknown>;
    columns[name] = keep.map((i) => col[i]);
  }
  return {
    table: aq.table(columns),
    report: {
      total: table.numRows(),
      kept: keep.length,
      droppedTooHard: tooHard,
      droppedNeverSolved: neverSolved,
      droppedTooEasy: tooEasy,
      band: {
        minRate,
        maxRate,
        ...(minPass !== undefined ? { minPass } : {}),
        ...(maxPass !== undefined ? { maxPass } : {}),
      },
      histogram,
    },
  };
}

/**
 * Keep rows whose pass rate lies in a band, by default the recipe's [1/16, 7/16].
 *
 * @example
 * ```ts
 * import { arquero as aq } from "../util/deps.ts";
 * import { filter } from "./filter.ts";
 * const probed = aq.table({ id: ["a", "b", "c"], passCount: [2, 7, 9], n: [16, 16, 16] });
 * const kept = filter(probed, { order: "easy-to-hard" });
 * console.assert(kept.array("id").join() === "b,a");
 * ```
 */
export function filter(table: Table, options: FilterOptions = {}): Table {
  return filterWithReport(table, options).table;
}

/** A filter report as a few Markdown lines. */
export function formatFilterReport(report: FilterReport): string {
  const band = report.band.minPass !== undefined || report.band.maxPass !== undefined
    ? `pass count ${report.band.minPass ?? 0}..${report.band.maxPass ?? "n"}`
    : `pass rate ${report.band.minRate.toFixed(4)}..${report.band.maxRate.toFixed(4)}`;
  const hist = Object.entries(report.histogram)
    .sort(([a], [b]) => Number(a.split("/")[0]) - Number(b.split("/")[0]))
    .map(([k, v]) => `${k}: ${v}`).join(", ");
  return [
    `Filter (${band}): kept ${report.kept} of ${report.total}.`,
    `- dropped as too hard: ${report.droppedTooHard} (never solved: ${report.droppedNeverSolved})`,
    `- dropped as too easy: ${report.droppedTooEasy}`,
    `- questions per pass count: ${hist}`,
  ].join("\n");
}

/** Options of {@linkcode attachProbe}. */
export interface AttachProbeOptions {
  /** A dataset row without a probe result: `error` (default) or `drop` (e.g. a probe run with a limit). */
  missing?: "error" | "drop";
}

/**
 * Join probe results (`id, passCount, n, passRate, ...`) onto a dataset by `id`, so that `filter`
 * returns dataset rows.
 *
 * @example
 * ```ts
 * import { arquero as aq } from "../util/deps.ts";
 * import { attachProbe } from "./filter.ts";
 * const data = aq.table({ id: ["x", "y"], question: ["Q1", "Q2"] });
 * const probed = aq.table({ id: ["y"], passCount: [1], n: [4] });
 * console.assert(attachProbe(data, probed, { missing: "drop" }).numRows() === 1);
 * ```
 */
export function attachProbe(dataset: Table, probed: Table, options: AttachProbeOptions = {}): Table {
  checkOptionKeys(options, ["missing"], "attachProbe options");
  checkColumns(probed, ["id", "passCount", "n"]);
  const byId = new Map<string, number>();
  const ids = probed.array("id") as ArrayLike<unknown>;
  for (let i = 0; i < probed.numRows(); i++) byId.set(String(ids[i]), i);
  const dataIds = dataset.array("id") as ArrayLike<unknown>;
  const extra = probed.columnNames().filter((c) => c !== "id" && !dataset.columnNames().includes(c));
  const columns: Record<string, unknown[]> = {};
  for (const c of [...dataset.columnNames(), ...extra]) columns[c] = [];
  for (let i = 0; i < dataset.numRows(); i++) {
    const j = byId.get(String(dataIds[i]));
    if (j === undefined) {
      if (options.missing === "drop") continue;
      throw new Error(`Dataset row ${i} (id ${dataIds[i]}) has no probe result; probe every row first.`);
    }
    for (const c of dataset.columnNames()) columns[c].push((dataset.array(c) as ArrayLike<unknown>)[i]);
    for (const c of extra) columns[c].push((probed.array(c) as ArrayLike<unknown>)[j]);
  }
  return aq.table(columns);
}

/** Options of {@linkcode findOverlap}. */
export interface OverlapOptions {
  /** Return the training table without the overlapping rows. Default false. */
  remove?: boolean;
}

/** One training row found in a benchmark. */
export interface OverlapMatch {
  /** Id of the training row. */
  trainId: string;
  /** Name of the benchmark it was found in. */
  benchmark: string;
  /** Id of the benchmark row it matches. */
  benchmarkId: string;
  /** `question` (same normalised question text) or `hash` (same `hash` column value). */
  by: "question" | "hash";
}

/** Result of {@linkcode findOverlap}. */
export interface OverlapResult {
  /** Every match found (a training row may match several benchmarks). */
  matches: OverlapMatch[];
  /** Distinct training ids that overlap. */
  trainIds: string[];
  /** The training table, without those rows when `remove` was set, else unchanged. */
  table: Table;
}

/**
 * The form in which two questions count as the same: Unicode-normalised, lower-case, punctuation
 * and runs of whitespace folded to one space.
 */
export function normalizeQuestion(text: string): string {
  return text.normalize("NFKC").toLowerCase().replace(/[^\p{L}\p{N}]+/gu, " ").trim();
}

function keysOf(table: Table): { ids: string[]; questions: string[]; hashes: (string | null)[] } {
  const names = table.columnNames();
  if (!names.includes("question")) throw new Error("A table given to findOverlap has no 'question' column.");
  const n = table.numRows();
  const idCol = names.includes("id") ? table.array("id") as ArrayLike<unknown> : undefined;
  const q = table.array("question") as ArrayLike<unknown>;
  const h = names.includes("hash") ? table.array("hash") as ArrayLike<unknown> : undefined;
  const ids: string[] = [], questions: string[] = [], hashes: (string | null)[] = [];
  for (let i = 0; i < n; i++) {
    ids.push(idCol ? String(idCol[i]) : String(i));
    questions.push(normalizeQuestion(String(q[i] ?? "")));
    const hv = h?.[i];
    hashes.push(hv === undefined || hv === null || hv === "" ? null : String(hv));
  }
  return { ids, questions, hashes };
}

/**
 * Find training rows that also appear in benchmarks (same normalised question text, or same `hash`),
 * and optionally remove them.
 *
 * @example
 * ```ts
 * import { arquero as aq } from "../util/deps.ts";
 * import { findOverlap } from "./filter.ts";
 * const train = aq.table({ id: ["t1", "t2"], question: ["What is  X?", "Other"] });
 * const bench = aq.table({ id: ["b1"], question: ["what is x"] });
 * const { trainIds, table } = findOverlap(train, { medqa: bench }, { remove: true });
 * console.assert(trainIds[0] === "t1" && table.numRows() === 1);
 * ```
 */
export function findOverlap(
  train: Table,
  benchmarks: Table | Table[] | Record<string, Table>,
  options: OverlapOptions = {},
): OverlapResult {
  checkOptionKeys(options, ["remove"], "findOverlap options");
  const named: [string, Table][] = Array.isArray(benchmarks)
    ? benchmarks.map((t, i) => [`benchmark ${i}`, t])
    : typeof (benchmarks as Table).numRows === "function"
    ? [["benchmark", benchmarks as Table]]
    : Object.entries(benchmarks as Record<string, Table>);
  const tr = keysOf(train);
  const matches: OverlapMatch[] = [];
  for (const [name, table] of named) {
    const b = keysOf(table);
    const byQuestion = new Map<string, string[]>();
    const byHash = new Map<string, string[]>();
    for (let i = 0; i < b.ids.length; i++) {
      if (b.questions[i] !== "") {
        byQuestion.set(b.questions[i], [...(byQuestion.get(b.questions[i]) ?? []), b.ids[i]]);
      }
      if (b.hashes[i] !== null) byHash.set(b.hashes[i]!, [...(byHash.get(b.hashes[i]!) ?? []), b.ids[i]]);
    }
    for (let i = 0; i < tr.ids.length; i++) {
      const found = new Set<string>();
      for (const id of byQuestion.get(tr.questions[i]) ?? []) {
        found.add(id);
        matches.push({ trainId: tr.ids[i], benchmark: name, benchmarkId: id, by: "question" });
      }
      const h = tr.hashes[i];
      for (const id of h !== null ? byHash.get(h) ?? [] : []) {
        if (!found.has(id)) {
          matches.push({ trainId: tr.ids[i], benchmark: name, benchmarkId: id, by: "hash" });
        }
      }
    }
  }
  const trainIds = [...new Set(matches.map((m) => m.trainId))];
  let table = train;
  if (options.remove && trainIds.length > 0) {
    const drop = new Set(trainIds);
    const keep: number[] = [];
    for (let i = 0; i < tr.ids.length; i++) if (!drop.has(tr.ids[i])) keep.push(i);
    const columns: Record<string, unknown[]> = {};
    for (const c of train.columnNames()) {
      const col = train.array(c) as ArrayLike<unknown>;
      columns[c] = keep.map((i) => col[i]);
    }
    table = aq.table(columns);
  }
  return { matches, trainIds, table };
}
