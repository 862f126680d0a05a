/**
 * Loading datasets into arquero tables of one canonical shape (see {@linkcode Row}):
 * `id`, `question`, `options` (ordered letter -> text), `answerLabel`, `answer`, `images` (lazy
 * {@linkcode ImageRef}s), optional `reasoning`, `datasetName`, and `hash` when the data has one.
 *
 * Layouts (recognised by themselves when no `format` is given):
 * - `medvlthinker`: the MedVLThinker / Hugging Face schema (`question`, `options` as a JSON string,
 *   `answer_label`, `answer`, `images` as relative paths or `{bytes, path}` structs, `reasoning`,
 *   `dataset_name`, `dataset_index`, `hash`), in parquet, JSONL, JSON or CSV.
 * - `medagents`: medagents-benchmark JSONL (`question`, `options` object, `answer_idx`, `answer`, `realidx`).
 * - `pubmedqa`: PubMedQA's `ori_pqal.json` (object keyed by PMID: `QUESTION`, `CONTEXTS`, `LABELS`,
 *   `final_decision`); options A Yes / B No / C Maybe, the contexts appended to the question.
 * - `closed_vqa`: closed (yes/no) VQA rows (`question`, `answer` yes/no, `image`/`images`); options A Yes / B No.
 * - `columns`: anything else, through a {@linkcode ColumnMapping}.
 *
 * Bad rows (answer label not among the options, empty question, missing or undecodable image, an image
 * path leaving the dataset's folder, unparseable line, duplicate id) are an error of one sentence naming
 * the file and row, or with `onBadRow: "skip"` are skipped and counted in the table's
 * {@linkcode LoadReport} (read it with {@linkcode loadReport}). Nothing is read over the network.
 *
 * @module
 */
import { arquero } from "../util/deps.ts";
import { hubDatasetFiles } from "../hub/datasets.ts";
import { parseHubRef } from "../hub/resolve.ts";
import { decodeImage, imageBytes, sniffImageFormat } from "./images.ts";
import { asText, fileTypeOf, type RawRecord, readRecords } from "./readers.ts";
import type { ImageRef, Row } from "./types.ts";
import {
  closedVqaDraft,
  type ColumnMapping,
  columnsDraft,
  type DatasetFormat,
  detectFormat,
  type Draft,
  type FileContext,
  medagentsDraft,
  medvlthinkerDraft,
  pubmedqaDraft,
  renameColumns,
  str,
} from "./formats.ts";
import { existsSync as exists } from "../util/fs.ts";
import { checkOptionKeys } from "../util/options.ts";
import { tableRows as rowsOf } from "../util/table.ts";

export type { ColumnMapping, DatasetFormat, ImageRef, Row };

/** An arquero table (the type `arquero.table()` returns). */
export type Table = arquero.ColumnTable;

/** How image references are checked while loading (decoding itself stays lazy). */
export type ImageCheck = "none" | "exists" | "header" | "decode";

/** Options of {@linkcode loadDataset}. */
export interface LoadDatasetOptions {
  /** The layout; recognised from each file's first rows when absent (and `columns` is not given). */
  format?: DatasetFormat;
  /** Column mapping for format `columns` (implied when given without a format). */
  columns?: ColumnMapping;
  /** `error` (default): the first bad row throws. `skip`: bad rows are skipped and counted. */
  onBadRow?: "error" | "skip";
  /** For a folder: load only files named `<split>.<ext>` or `<split>-*.<ext>` (Hugging Face shards). */
  split?: string;
  /** For a Hub dataset (`hf://datasets/ORG/NAME`): the config (its top folder; default `data/`). */
  config?: string;
  /** `datasetName` for rows whose data names none (default: the file's folder name; PubMedQA: `pubmedqa`). */
  datasetName?: string;
  /** PubMedQA: append the abstract's contexts to the question. Default true. */
  includeContexts?: boolean;
  /**
   * How images are checked at load time: `exists` (the file is there), `header` (default: also the
   * first bytes are a known image format), `decode` (fully decoded once; slow), `none`.
   */
  checkImages?: ImageCheck;
  /** Keep at most this many rows (the first ones, after bad rows are dropped). */
  limit?: number;
}

/** One skipped row. */
export interface SkippedRow {
  /** The dataset file. */
  file: string;
  /** 1-based row in that file. */
  row: number;
  /** Category: `bad_label`, `empty_question`, `bad_options`, `missing_image`, `undecodable_image`,
   * `image_outside_folder`, `bad_record`, `duplicate_id`. */
  reason: string;
  /** The one-sentence message that `onBadRow: "error"` would have thrown. */
  message: string;
}

/** What loading did: files, formats, kept and skipped rows (see {@linkcode loadReport}). */
export interface LoadReport {
  /** The files read, in order. */
  files: string[];
  /** The layout used for each file. */
  formats: Record<string, DatasetFormat>;
  /** Rows in the table. */
  rows: number;
  /** Rows skipped (only with `onBadRow: "skip"`). */
  skipped: number;
  /** Skipped rows per reason. */
  skippedByReason: Record<string, number>;
  /** Every skipped row. */
  skippedRows: SkippedRow[];
}

/** A bad row: carries the file, row and reason; the message is one sentence naming file and row. */
export class BadRowError extends Error {
  /** The dataset file. */
  readonly file: string;
  /** 1-based row. */
  readonly row: number;
  /** See {@linkcode SkippedRow.reason}. */
  readonly reason: string;
  /** Builds the error; `message` is the part after "FILE row N: ". */
  constructor(file: string, row: number, reason: string, message: string) {
    super(`${file} row ${row}: ${message}`);
    this.name = "BadRowError";
    this.file = file;
    this.row = row;
    this.reason = reason;
  }
}

const REPORTS = new WeakMap<object, LoadReport>();

/** The {@linkcode LoadReport} of a table returned by {@linkcode loadDataset} (undefined for derived tables). */
export function loadReport(table: Table): LoadReport | undefined {
  return REPORTS.get(table);
}

// ---------------------------------------------------------------------------------------------
// Paths

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

function basename(path: string): string {
  return path.replace(/\/+$/, "").split("/").pop() ?? path;
}

function stem(path: string): string {
  return basename(path).replace(/\.[^.]+$/, "");
}

function absolute(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** Lexical normalisation of an absolute path (`.` and `..` resolved). */
function normalize(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return "/" + out.join("/");
}

function isInside(child: string, folder: string): boolean {
  return child === folder || child.startsWith(folder.endsWith("/") ? folder : folder + "/");
}

const DATA_EXT_PREFERENCE = ["parquet", "jsonl", "json", "csv", "tsv"];

/** The data files of a folder (and of its `data/` subfolder, the Hugging Face layout). */
function filesOfFolder(dir: string, split?: string): string[] {
  const candidates: string[] = [];
  for (const sub of [dir, `${dir}/data`]) {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(sub)];
    } catch {
      continue;
    }
    for (const e of entries) {
      if (!e.isFile || !fileTypeOf(e.name) || e.name.startsWith(".")) continue;
      if (split !== undefined) {
        const s = stem(e.name);
        if (s !== split && !s.startsWith(`${split}-`) && !s.startsWith(`${split}_`)) continue;
      }
      candidates.push(`${sub}/${e.name}`);
    }
  }
  // One kind of file: a folder often holds the same rows twice (parquet shards and a JSONL export).
  for (const ext of DATA_EXT_PREFERENCE) {
    const files = candidates.filter((f) => fileTypeOf(f) === (ext === "jsonl" ? "jsonl" : ext)).sort();
    if (files.length) return files;
  }
  throw new Error(
    `The folder ${dir} holds no ${
      split ? `'${split}' ` : ""
    }data files (.parquet, .jsonl, .json, .csv, .tsv).`,
  );
}

/** A data file and the dataset folder it belongs to (the folder given, else the file's own). */
interface DataFile {
  file: string;
  root: string;
}

function expandPaths(pathOrPaths: string | string[], split?: string): DataFile[] {
  const out: DataFile[] = [];
  for (const p of Array.isArray(pathOrPaths) ? pathOrPaths : [pathOrPaths]) {
    let stat: Deno.FileInfo;
    try {
      stat = Deno.statSync(p);
    } catch {
      throw new Error(`The dataset path ${p} does not exist.`);
    }
    if (stat.isDirectory) {
      const dir = p.replace(/\/+$/, "");
      out.push(...filesOfFolder(dir, split).map((file) => ({ file, root: dir })));
    } else out.push({ file: p, root: dirname(p) });
  }
  if (!out.length) throw new Error("loadDataset was given no dataset files.");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Validation: a draft -> a canonical row, or a BadRowError

function parseOptions(raw: unknown): Record<string, string> | string {
  let o = raw;
  if (typeof o === "string") {
    try {
      o = JSON.parse(o);
    } catch {
      return "its options are not a JSON object of letter -> text";
    }
  }
  if (Array.isArray(o)) {
    return Object.fromEntries(o.map((text, i) => [String.fromCharCode(65 + i), String(text)]));
  }
  if (o === null || typeof o !== "object") return "it has no options";
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(o as Record<string, unknown>)) {
    if (v === null || v === undefined) continue; // parquet structs fill absent letters with null
    out[k.trim()] = String(asText(v));
  }
  if (!Object.keys(out).length) return "it has no options";
  return out;
}

interface ImageCheckContext {
  file: string;
  row: number;
  /** The data file's folder: relative image paths resolve against it first. */
  fileFolder: string;
  /** The dataset folder (given folder, or the file's): images must stay inside it. */
  folder: string;
  folderReal: string;
  check: ImageCheck;
}

async function resolveImage(entry: unknown, c: ImageCheckContext): Promise<ImageRef> {
  const bad = (reason: string, msg: string) => new BadRowError(c.file, c.row, reason, msg);
  let path: string | undefined;
  let bytes: Uint8Array | undefined;
  let name: string | undefined;
  if (typeof entry === "string") path = entry;
  else if (entry instanceof Uint8Array) bytes = entry;
  else if (entry && typeof entry === "object") {
    const e = entry as Record<string, unknown>;
    const b = e.bytes;
    if (b instanceof Uint8Array && b.length) bytes = b;
    else if (Array.isArray(b) && b.length) bytes = Uint8Array.from(b as number[]);
    const p = str(e.path);
    if (bytes) name = p;
    else if (p) path = p;
  }
  if (!bytes && (path === undefined || path.trim() === "")) {
    throw bad("missing_image", "an image entry has neither a path nor bytes.");
  }
  let ref: ImageRef;
  if (bytes) {
    ref = { bytes, name, file: c.file, row: c.row };
  } else {
    // Images live beside the dataset file (or, for a folder's data/ shards, under the folder); a path
    // that leaves the dataset folder is refused (no reading of arbitrary files through a crafted dataset).
    let resolved = normalize(path!.startsWith("/") ? path! : `${c.fileFolder}/${path}`);
    if (!path!.startsWith("/") && c.fileFolder !== c.folder && !exists(resolved)) {
      resolved = normalize(`${c.folder}/${path}`);
    }
    if (!isInside(resolved, c.folder)) {
      throw bad("image_outside_folder", `the image path ${path} leaves the dataset folder ${c.folder}.`);
    }
    let real: string;
    try {
      real = Deno.realPathSync(resolved);
    } catch {
      if (c.check === "none") return { path: resolved, file: c.file, row: c.row };
      throw bad("missing_image", `the image ${path} does not exist.`);
    }
    if (!isInside(real, c.folderReal)) {
      throw bad(
        "image_outside_folder",
        `the image path ${path} leads outside the dataset folder ${c.folder}.`,
      );
    }
    ref = { path: resolved, file: c.file, row: c.row };
  }
  if (c.check === "header" || c.check === "decode") {
    let head: Uint8Array;
    if (bytes) head = bytes.subarray(0, 32);
    else {
      const f = await Deno.open(ref.path!);
      try {
        const buf = new Uint8Array(32);
        const n = await f.read(buf);
        head = buf.subarray(0, n ?? 0);
      } finally {
        f.close();
      }
    }
    if (!sniffImageFormat(head)) {
      throw bad(
        "undecodable_image",
        `the image ${path ?? name ?? "(embedded bytes)"} is not a known image format.`,
      );
    }
  }
  if (c.check === "decode") {
    try {
      await decodeImage(ref);
    } catch (e) {
      throw bad(
        "undecodable_image",
        `the image ${path ?? name ?? "(embedded bytes)"} cannot be decoded (${
          String((e as Error).message).replace(/^.*?cannot be decoded \(/, "").replace(/\)\.$/, "")
        }).`,
      );
    }
  } else if (c.check === "exists" && bytes === undefined) {
    await imageBytes(ref).catch(() => {
      throw bad("missing_image", `the image ${path} cannot be read.`);
    });
  }
  return ref;
}

async function toRow(draft: Draft, rec: RawRecord, ctx: FileContext, check: ImageCheckContext): Promise<Row> {
  const bad = (reason: string, msg: string) => new BadRowError(ctx.file, rec.row, reason, msg);
  const question = typeof draft.question === "string" ? draft.question : str(draft.question);
  if (question === undefined || question.trim() === "") throw bad("empty_question", "the question is empty.");
  const options = parseOptions(draft.options);
  if (typeof options === "string") throw bad("bad_options", `${options}.`);
  let label = draft.answerLabel === undefined ? undefined : String(draft.answerLabel).trim();
  const answerText = draft.answer === undefined ? undefined : String(draft.answer);
  if ((label === undefined || label === "") && answerText !== undefined) {
    // Only the answer text is given: find its option.
    const t = answerText.trim().toLowerCase();
    label = Object.keys(options).find((k) => options[k].trim().toLowerCase() === t);
    if (label === undefined) {
      throw bad(
        "bad_label",
        `the answer "${answerText}" is not among the options (${Object.keys(options).join(", ")}).`,
      );
    }
  }
  if (label === undefined || label === "") throw bad("bad_label", "it has no answer label.");
  if (!(label in options)) {
    const upper = label.toUpperCase();
    if (upper in options) label = upper;
    else {
      throw bad(
        "bad_label",
        `the answer label "${label}" is not among the options (${Object.keys(options).join(", ")}).`,
      );
    }
  }
  const images: ImageRef[] = [];
  for (const entry of draft.images) images.push(await resolveImage(entry, check));
  const row: Row = {
    id: draft.id ?? `${ctx.options.datasetName ?? ctx.defaultName}-${stem(ctx.file)}-${rec.row}`,
    question,
    options,
    answerLabel: label,
    answer: options[label],
    images,
    datasetName: draft.datasetName ?? ctx.defaultName,
  };
  const reasoning = str(draft.reasoning);
  if (reasoning !== undefined) row.reasoning = reasoning;
  const hash = str(draft.hash);
  if (hash !== undefined) row.hash = hash;
  return row;
}

// ---------------------------------------------------------------------------------------------

const LOAD_DATASET_OPTION_KEYS = [
  "format",
  "columns",
  "onBadRow",
  "split",
  "datasetName",
  "includeContexts",
  "checkImages",
  "limit",
  "config",
];

/**
 * Loads one or more dataset files (or folders) into an arquero table in the canonical shape.
 *
 * @example
 * ```ts ignore
 * import { loadDataset, loadReport } from "./dataset.ts";
 * const medqa = await loadDataset("data/medqa_4opt/test.jsonl");              // medagents layout, recognised
 * const vqa = await loadDataset("data/vqa_rad_closed/test.jsonl", { onBadRow: "skip" });
 * console.log(medqa.numRows(), loadReport(vqa)?.skipped);
 * const row = medqa.object(0);  // { id, question, options: {A, B, C, D}, answerLabel, answer, images: [], ... }
 * ```
 */
export async function loadDataset(
  pathOrPaths: string | string[],
  options: LoadDatasetOptions = {},
): Promise<Table> {
  checkOptionKeys(options, LOAD_DATASET_OPTION_KEYS, "loadDataset options");
  if (typeof pathOrPaths === "string" && pathOrPaths.startsWith("hf://") && parseHubRef(pathOrPaths)) {
    // A Hub dataset: its files come from the Hugging Face cache (downloaded there when missing).
    const { config, ...rest } = options;
    const hub = await hubDatasetFiles(pathOrPaths, { split: options.split, config });
    return await loadDataset(hub.files, { ...rest, datasetName: options.datasetName ?? hub.name });
  }
  if (Array.isArray(pathOrPaths) && pathOrPaths.some((p) => p.startsWith("hf://"))) {
    throw new Error("loadDataset takes a Hub dataset (hf://datasets/...) alone, not in a list of paths.");
  }
  const files = expandPaths(pathOrPaths, options.split);
  const onBad = options.onBadRow ?? "error";
  if (onBad !== "error" && onBad !== "skip") {
    throw new Error(`onBadRow must be "error" or "skip", not "${onBad}".`);
  }
  const check = options.checkImages ?? "header";
  const report: LoadReport = {
    files: files.map((f) => f.file),
    formats: {},
    rows: 0,
    skipped: 0,
    skippedByReason: {},
    skippedRows: [],
  };
  const rows: Row[] = [];
  const ids = new Map<string, number>(); // id -> times seen
  const explicitIds = new Set<string>();
  const limit = options.limit ?? Infinity;

  const skip = (e: BadRowError) => {
    if (onBad === "error") throw e;
    report.skipped++;
    report.skippedByReason[e.reason] = (report.skippedByReason[e.reason] ?? 0) + 1;
    report.skippedRows.push({ file: e.file, row: e.row, reason: e.reason, message: e.message });
  };

  for (const { file, root } of files) {
    if (rows.length >= limit) break;
    const records = await readRecords(file);
    const fileFolder = normalize(absolute(dirname(file)));
    const folder = normalize(absolute(root));
    let folderReal = folder;
    try {
      folderReal = Deno.realPathSync(folder);
    } catch { /* the folder exists: we just read a file from it */ }
    let format = options.format ?? (options.columns && !options.format ? "columns" : undefined);
    if (!format) format = detectFormat(file, records);
    if (format === "columns" && !options.columns) {
      throw new Error(`Format 'columns' needs a columns mapping (for ${file}).`);
    }
    report.formats[file] = format;
    const ctx: FileContext = {
      file,
      folder,
      defaultName: format === "pubmedqa" ? "pubmedqa" : basename(folder === "/" ? fileFolder : folder),
      options,
    };
    for (const rec of records) {
      if (rows.length >= limit) break;
      try {
        if (rec.error) throw new BadRowError(file, rec.row, "bad_record", `${rec.error}.`);
        let value = rec.value;
        if (options.columns && format !== "columns") value = renameColumns(value, options.columns);
        const draft = format === "medvlthinker"
          ? medvlthinkerDraft(value, ctx)
          : format === "medagents"
          ? medagentsDraft(value, ctx)
          : format === "pubmedqa"
          ? pubmedqaDraft(value, ctx, rec.key)
          : format === "closed_vqa"
          ? closedVqaDraft(value, ctx)
          : columnsDraft(value, ctx, options.columns!);
        const row = await toRow(draft, rec, ctx, {
          file,
          row: rec.row,
          fileFolder,
          folder,
          folderReal,
          check,
        });
        // Ids key seeds and resumable runs, so they must be unique. An id the data states twice is a
        // bad row; a derived one (name + index) gets a stable suffix.
        const seen = ids.get(row.id) ?? 0;
        if (seen > 0) {
          if (draft.explicitId || explicitIds.has(row.id)) {
            throw new BadRowError(
              file,
              rec.row,
              "duplicate_id",
              `the id "${row.id}" was already used by an earlier row.`,
            );
          }
          let k = seen + 1;
          while (ids.has(`${row.id}~${k}`)) k++;
          ids.set(row.id, k);
          row.id = `${row.id}~${k}`;
        }
        ids.set(row.id, Math.max(1, ids.get(row.id) ?? 0));
        if (draft.explicitId) explicitIds.add(row.id);
        rows.push(row);
      } catch (e) {
        if (e instanceof BadRowError) skip(e);
        else throw e;
      }
    }
  }

  const columns: Record<string, unknown[]> = {
    id: rows.map((r) => r.id),
    question: rows.map((r) => r.question),
    options: rows.map((r) => r.options),
    answerLabel: rows.map((r) => r.answerLabel),
    answer: rows.map((r) => r.answer),
    images: rows.map((r) => r.images),
    datasetName: rows.map((r) => r.datasetName),
  };
  if (rows.some((r) => r.reasoning !== undefined)) columns.reasoning = rows.map((r) => r.reasoning ?? null);
  if (rows.some((r) => r.hash !== undefined)) columns.hash = rows.map((r) => r.hash ?? null);
  const table = arquero.table(columns);
  report.rows = rows.length;
  REPORTS.set(table, report);
  return table;
}

/** The rows of a table as canonical {@linkcode Row} objects. */
export function tableRows(table: Table): Row[] {
  return rowsOf<Row>(table);
}
