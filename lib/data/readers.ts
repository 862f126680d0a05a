/**
 * Reading dataset files into raw records (one object per row, with the row's number), before any
 * layout is applied: JSONL, JSON (an array, or an object keyed by id as PubMedQA's `ori_pqal.json`),
 * CSV / TSV and parquet (Hugging Face `datasets` layout, images inline as `{bytes, path}`).
 *
 * @module
 */
import { arquero, hyparquet, parquetCompressors } from "../util/deps.ts";

/** One raw record of a file. */
export interface RawRecord {
  /** The record's fields as stored. */
  value: Record<string, unknown>;
  /** 1-based row number: the line for JSONL, the data row for CSV, the element for JSON and parquet. */
  row: number;
  /** For a JSON object keyed by id: the key. */
  key?: string;
  /** Set when the row could not even be parsed (the message says why). */
  error?: string;
}

/** The kinds of files the readers understand. */
export type FileType = "jsonl" | "json" | "csv" | "tsv" | "parquet";

/** The file type from the extension, or null. */
export function fileTypeOf(path: string): FileType | null {
  const m = /\.(jsonl|ndjson|json|csv|tsv|parquet)$/i.exec(path);
  if (!m) return null;
  const ext = m[1].toLowerCase();
  return ext === "ndjson" ? "jsonl" : ext as FileType;
}

function readJsonl(text: string): RawRecord[] {
  const out: RawRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    try {
      const value = JSON.parse(line);
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        out.push({ value: {}, row: i + 1, error: "the line is not a JSON object" });
      } else out.push({ value, row: i + 1 });
    } catch (e) {
      out.push({ value: {}, row: i + 1, error: `the line is not valid JSON (${(e as Error).message})` });
    }
  }
  return out;
}

function readJson(path: string, text: string): RawRecord[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path} is not valid JSON (${(e as Error).message}).`);
  }
  // {"data": [...]} and {"rows": [...]} wrappers are common exports.
  if (data && typeof data === "object" && !Array.isArray(data)) {
    const d = data as Record<string, unknown>;
    const keys = Object.keys(d);
    if (keys.length === 1 && Array.isArray(d[keys[0]]) && ["data", "rows", "examples"].includes(keys[0])) {
      data = d[keys[0]];
    }
  }
  const records: RawRecord[] = [];
  const push = (v: unknown, row: number, key?: string) => {
    if (v === null || typeof v !== "object" || Array.isArray(v)) {
      records.push({ value: {}, row, key, error: "the element is not a JSON object" });
    } else records.push({ value: v as Record<string, unknown>, row, key });
  };
  if (Array.isArray(data)) data.forEach((v, i) => push(v, i + 1));
  else if (data && typeof data === "object") {
    // JavaScript objects list integer-like keys (PubMedQA's PMIDs) in numeric order, not file order.
    const d = data as Record<string, unknown>;
    topLevelKeys(text).forEach((k, i) => push(d[k], i + 1, k));
  } else throw new Error(`${path} holds neither a JSON array nor a JSON object of rows.`);
  return records;
}

/** The keys of the top-level JSON object in `text`, in the order the file writes them. */
export function topLevelKeys(text: string): string[] {
  const keys: string[] = [];
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) {
        keys.push(JSON.parse(text.slice(i, j + 1)));
        expectKey = false;
      }
      i = j;
    } else if (ch === "{" || ch === "[") {
      depth++;
      if (depth === 1 && ch === "{") expectKey = true;
    } else if (ch === "}" || ch === "]") depth--;
    else if (ch === "," && depth === 1) expectKey = true;
  }
  return keys;
}

function readDelimited(text: string, delimiter: string): RawRecord[] {
  // No type inference: ids like "007" and answers like "1" must stay strings.
  const table = arquero.fromCSV(text, { delimiter, autoType: false });
  return (table.objects() as Record<string, unknown>[]).map((value, i) => ({ value, row: i + 1 }));
}

const decoder = new TextDecoder();

/** Parquet values as JSON-like values: bigint -> number; un-annotated byte strings stay bytes. */
function plainParquetValue(v: unknown): unknown {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(plainParquetValue);
  if (v instanceof Uint8Array || v === null || typeof v !== "object") return v;
  if (v instanceof Date) return v.toISOString();
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) out[k] = plainParquetValue(x);
  return out;
}

async function readParquet(path: string, bytes: Uint8Array, rowEnd?: number): Promise<RawRecord[]> {
  const file = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  let rows: Record<string, unknown>[];
  try {
    // utf8: false keeps binary columns (image bytes) as Uint8Array; columns annotated as strings are
    // still decoded to strings.
    rows = await hyparquet.parquetReadObjects({ file, utf8: false, compressors: parquetCompressors, rowEnd });
  } catch (e) {
    throw new Error(`${path} cannot be read as parquet (${(e as Error).message}).`);
  }
  return rows.map((r, i) => ({ value: plainParquetValue(r) as Record<string, unknown>, row: i + 1 }));
}

/** Options of {@linkcode readRecords}. */
export interface ReadRecordsOptions {
  /** Read at most this many rows (parquet stops decoding there). */
  limit?: number;
}

/** Reads every raw record of one file. A file that cannot be read at all is an error naming it. */
export async function readRecords(path: string, options: ReadRecordsOptions = {}): Promise<RawRecord[]> {
  const type = fileTypeOf(path);
  if (!type) throw new Error(`${path} is not a .jsonl, .json, .csv, .tsv or .parquet file.`);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`The dataset file ${path} does not exist.`);
    throw new Error(`The dataset file ${path} cannot be read (${(e as Error).message}).`);
  }
  // an empty file is named here, not left to fail later as a TypeError on a row that is not there
  const empty = () => new Error(`The dataset file ${path} is empty: it holds no rows (write at least one).`);
  if (type === "parquet") {
    const rows = await readParquet(path, bytes, options.limit);
    if (rows.length === 0 && options.limit !== 0) throw empty();
    return rows;
  }
  const text = decoder.decode(bytes).replace(/^\uFEFF/, "");
  if (text.trim() === "") throw empty();
  let records: RawRecord[];
  if (type === "jsonl") records = readJsonl(text);
  else if (type === "json") records = readJson(path, text);
  else {
    try {
      records = readDelimited(text, type === "tsv" ? "\t" : ",");
    } catch (e) {
      throw new Error(
        `The dataset file ${path} cannot be read as ${type.toUpperCase()} (${(e as Error).message}).`,
      );
    }
  }
  if (records.length === 0) {
    throw new Error(
      `The dataset file ${path} holds no rows${
        type === "csv" || type === "tsv" ? " (only a header line)" : ""
      }.`,
    );
  }
  return options.limit !== undefined ? records.slice(0, options.limit) : records;
}

/** Decodes a byte string to text (parquet columns without a string annotation arrive as bytes). */
export function asText(v: unknown): unknown {
  return v instanceof Uint8Array ? decoder.decode(v) : v;
}
