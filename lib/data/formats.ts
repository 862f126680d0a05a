/**
 * The dataset layouts that `loadDataset` reads, each a function from a raw record to a draft row
 * (fields not yet validated), and the recognition of a file's layout from its records:
 * `medvlthinker` (the MedVLThinker / Hugging Face schema), `medagents` (medagents-benchmark JSONL),
 * `pubmedqa` (`ori_pqal.json`), `closed_vqa` (yes/no VQA) and `columns` (any table, through a
 * {@linkcode ColumnMapping}). Validation into canonical rows stays in `dataset.ts`.
 *
 * @module
 */
import { asText, type RawRecord } from "./readers.ts";

/** The dataset layouts {@linkcode loadDataset} reads. */
export type DatasetFormat = "medvlthinker" | "medagents" | "pubmedqa" | "closed_vqa" | "columns";

/**
 * Which source column feeds each canonical field (format `columns`, or to rename the fields of any
 * other layout's files). `options` is one column (an object, a JSON object string, a JSON array or an
 * array) or a list of columns, one per option (letters A, B, ... in that order; empty cells dropped).
 * `images` is one column (a path, a list of paths, `{bytes, path}` structs) or a list of columns.
 */
export interface ColumnMapping {
  /** Column of unique row ids (default: derived from the dataset name and row). */
  id?: string;
  /** Column of the question text. */
  question?: string;
  /** Column of all options, or one column per option (letters A, B, ... in order). */
  options?: string | string[];
  /** Column of the correct letter (derived from `answer` when absent). */
  answerLabel?: string;
  /** Column of the correct option's text. */
  answer?: string;
  /** Column(s) of image paths or `{bytes, path}` structs. */
  images?: string | string[];
  /** Column of the reasoning trace (SFT target). */
  reasoning?: string;
  /** Column of the benchmark / source name. */
  datasetName?: string;
  /** Column of a content hash (overlap checks). */
  hash?: string;
}

// ---------------------------------------------------------------------------------------------
// Layouts: a raw record -> a draft row (fields not yet validated)

/** A raw record read by a layout: fields not yet validated. */
export interface Draft {
  id?: string;
  question: unknown;
  options?: unknown;
  answerLabel?: unknown;
  answer?: unknown;
  images: unknown[];
  reasoning?: unknown;
  datasetName?: string;
  hash?: unknown;
  /** Where the id came from: explicit ids must be unique; derived ones are made unique. */
  explicitId: boolean;
}

/** Where a record comes from, and the load options the layouts read. */
export interface FileContext {
  /** The data file. */
  file: string;
  /** Its folder (image paths are relative to it). */
  folder: string;
  /** The dataset name used when a row has none. */
  defaultName: string;
  /** `loadDataset` options that change how a record reads. */
  options: { datasetName?: string; includeContexts?: boolean };
}

const YES_NO: Record<string, string> = { yes: "A", no: "B" };
const CLOSED_OPTIONS = { A: "Yes", B: "No" };
const PUBMEDQA_LABELS: Record<string, string> = { yes: "A", no: "B", maybe: "C" };
const PUBMEDQA_OPTIONS = { A: "Yes", B: "No", C: "Maybe" };
const IMAGE_KEYS = ["images", "image", "image_path", "image_paths", "image_name", "img_name", "img_path"];

/** A cell as a string (numbers, bigints and booleans as text), else undefined. */
export function str(v: unknown): string | undefined {
  v = asText(v);
  if (v === null || v === undefined) return undefined;
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return String(v);
  return undefined;
}

function imagesField(v: unknown): unknown[] {
  if (v === null || v === undefined || v === "") return [];
  if (Array.isArray(v)) return v;
  if (typeof v === "string") {
    const t = v.trim();
    if (t.startsWith("[")) {
      try {
        const parsed = JSON.parse(t);
        if (Array.isArray(parsed)) return parsed;
      } catch { /* a path that starts with "[" */ }
    }
  }
  return [v];
}

function firstImageField(rec: Record<string, unknown>): unknown[] {
  for (const k of IMAGE_KEYS) if (k in rec) return imagesField(rec[k]);
  return [];
}

/** `medvlthinker` layout: the MedVLThinker / Hugging Face schema (options as a JSON string, answer_label, images). */
export function medvlthinkerDraft(rec: Record<string, unknown>, ctx: FileContext): Draft {
  const name = str(rec.dataset_name) ?? ctx.options.datasetName ?? ctx.defaultName;
  const explicit = str(rec.id);
  const index = str(rec.dataset_index);
  return {
    id: explicit ?? (index !== undefined ? `${name}-${index}` : undefined),
    explicitId: explicit !== undefined,
    question: asText(rec.question),
    options: asText(rec.options),
    answerLabel: str(rec.answer_label ?? rec.answerLabel),
    answer: str(rec.answer),
    images: firstImageField(rec),
    reasoning: str(rec.reasoning),
    datasetName: name,
    hash: str(rec.hash),
  };
}

/** `medagents` layout: medagents-benchmark JSONL (`options` object, `answer_idx`, `realidx`). */
export function medagentsDraft(rec: Record<string, unknown>, ctx: FileContext): Draft {
  const name = ctx.options.datasetName ?? ctx.defaultName;
  const explicit = str(rec.id);
  const idx = str(rec.realidx);
  return {
    id: explicit ?? (idx !== undefined ? `${name}-${idx}` : undefined),
    explicitId: explicit !== undefined,
    question: asText(rec.question),
    options: asText(rec.options),
    answerLabel: str(rec.answer_idx),
    answer: str(rec.answer),
    images: firstImageField(rec),
    datasetName: name,
  };
}

/** `pubmedqa` layout: one `ori_pqal.json` entry (keyed by PMID); options Yes / No / Maybe, contexts appended. */
export function pubmedqaDraft(rec: Record<string, unknown>, ctx: FileContext, key?: string): Draft {
  const q = str(rec.QUESTION ?? rec.question);
  let question: string | undefined = q;
  // ori_pqal.json: CONTEXTS / LABELS; the Hugging Face `pubmed_qa` export: context.{contexts, labels}.
  const hf = (rec.context && typeof rec.context === "object" ? rec.context : {}) as Record<string, unknown>;
  const list = (v: unknown) => (Array.isArray(v) ? v.map((c) => String(asText(c))) : []);
  const contexts = list(rec.CONTEXTS ?? hf.contexts);
  const labels = list(rec.LABELS ?? hf.labels);
  if (q && q.trim() && contexts.length && (ctx.options.includeContexts ?? true)) {
    // Question first (the prompt prints "Question: ..."), then the abstract, one section a line.
    const body = contexts.map((c, i) => (labels[i] ? `${labels[i]}: ${c}` : c)).join("\n");
    question = `${q}\n\nContext:\n${body}`;
  }
  const decision = str(rec.final_decision)?.trim().toLowerCase();
  return {
    id: key ?? str(rec.pubid ?? rec.id),
    explicitId: true,
    question,
    options: PUBMEDQA_OPTIONS,
    answerLabel: decision === undefined ? undefined : PUBMEDQA_LABELS[decision] ?? decision,
    answer: undefined,
    images: [],
    reasoning: undefined,
    datasetName: ctx.options.datasetName ?? "pubmedqa",
  };
}

/** `closed_vqa` layout: a yes/no VQA row; options A Yes / B No. */
export function closedVqaDraft(rec: Record<string, unknown>, ctx: FileContext): Draft {
  const answer = str(rec.answer)?.trim();
  const explicit = str(rec.id ?? rec.qid);
  return {
    id: explicit,
    explicitId: explicit !== undefined,
    question: asText(rec.question),
    options: CLOSED_OPTIONS,
    answerLabel: answer === undefined ? undefined : YES_NO[answer.toLowerCase()] ?? answer,
    images: firstImageField(rec),
    datasetName: str(rec.dataset_name) ?? ctx.options.datasetName ?? ctx.defaultName,
    hash: str(rec.hash),
  };
}

/** `columns` layout: any record, read through a {@linkcode ColumnMapping}. */
export function columnsDraft(rec: Record<string, unknown>, ctx: FileContext, map: ColumnMapping): Draft {
  const get = (col?: string) => (col === undefined ? undefined : asText(rec[col]));
  let options: unknown;
  if (Array.isArray(map.options)) {
    const o: Record<string, string> = {};
    map.options.forEach((col, i) => {
      const v = str(rec[col]);
      if (v !== undefined && v.trim() !== "") o[String.fromCharCode(65 + i)] = v;
    });
    options = o;
  } else options = get(map.options);
  const images = Array.isArray(map.images)
    ? map.images.flatMap((c) => imagesField(rec[c]))
    : map.images !== undefined
    ? imagesField(rec[map.images])
    : [];
  const explicit = str(get(map.id));
  return {
    id: explicit,
    explicitId: explicit !== undefined,
    question: get(map.question),
    options,
    answerLabel: str(get(map.answerLabel)),
    answer: str(get(map.answer)),
    images,
    reasoning: str(get(map.reasoning)),
    datasetName: str(get(map.datasetName)) ?? ctx.options.datasetName ?? ctx.defaultName,
    hash: str(get(map.hash)),
  };
}

/** Renames a record's columns per a mapping to the names the layouts read (snake_case schema names). */
export function renameColumns(rec: Record<string, unknown>, map: ColumnMapping): Record<string, unknown> {
  const out = { ...rec };
  const target: Record<string, string> = {
    id: "id",
    question: "question",
    options: "options",
    answerLabel: "answer_label",
    answer: "answer",
    images: "images",
    reasoning: "reasoning",
    datasetName: "dataset_name",
    hash: "hash",
  };
  for (const [field, col] of Object.entries(map)) {
    if (typeof col === "string" && target[field]) out[target[field]] = rec[col];
  }
  return out;
}

/** Recognises a file's layout from its records. */
export function detectFormat(file: string, records: RawRecord[]): DatasetFormat {
  const sample = records.find((r) => !r.error);
  if (!sample) throw new Error(`${file} holds no readable rows to recognise its layout from.`);
  const v = sample.value;
  const has = (k: string) => k in v;
  if (sample.key !== undefined && (has("QUESTION") || has("final_decision"))) return "pubmedqa";
  if (has("final_decision") && (has("QUESTION") || has("question"))) return "pubmedqa";
  if (has("question") && has("answer_idx") && has("options")) return "medagents";
  if (has("question") && (has("answer_label") || has("answerLabel")) && has("options")) return "medvlthinker";
  if (has("question") && has("answer") && !has("options")) return "closed_vqa";
  throw new Error(
    `${file} has columns (${
      Object.keys(v).slice(0, 12).join(", ")
    }) of no known layout: pass format (medvlthinker, medagents, pubmedqa, closed_vqa) or a columns mapping.`,
  );
}
