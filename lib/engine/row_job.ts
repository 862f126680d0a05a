/**
 * The resumable row job that `probe`, `evaluate` and `distill` are written on: every item (a question,
 * or a benchmark's question) has a unique key; finished items are appended batch by batch to a JSONL
 * store whose header holds the settings, so a rerun with the same settings reads the records back, skips
 * the items they finish and does only the rest. An abort signal stops the job after the batch in flight,
 * and a progress bar (with ETA) counts items, resumed ones included.
 *
 * Because each sample draws from a seed derived from (seed, question id, sample index), a resumed job
 * produces the same records as one uninterrupted run.
 *
 * @module
 */
import { openJsonlStore } from "../data/jsonl_store.ts";
import { createProgress } from "../util/progress.ts";
import { buildPrompt } from "../data/prompt.ts";
import type { ChatTokenizer, PromptBuilder } from "./generate_batch.ts";
import type { SamplingOptions } from "./sampling.ts";

/**
 * The options every sampled row job shares (`probe`, `distill`): the sampling settings of
 * {@linkcode SamplingOptions} (defaults: `numGenerations` 16 for `probe`, the recipe, and 3 for `distill`;
 * `temperature` 1, `topP` 1, `topK` 0, `maxNewTokens` 4096), the seed, the resumable JSONL file, the prompt,
 * and the abort signal and progress.
 */
export interface SampledRowJobOptions extends SamplingOptions {
  /** The model's tokenizer. Default: `loadTokenizer(model.dir)` (the folder's own, else the embedded Qwen2.5 one); an engine brings its own. */
  tokenizer?: ChatTokenizer;
  /** Alias of `numGenerations`, kept for the CLI's `--n` flag and older scripts; give one of the two. */
  n?: number;
  /** Base seed: sample `j` of question `id` draws from `sampleSeed(seed, id, j)`. Default 0. */
  seed?: number;
  /** Questions per generation call. Default: 4 for `probe`, 8 for `distill`. */
  batchSize?: number;
  /** JSONL file written batch by batch; an existing one with the same settings is resumed. */
  out?: string;
  /** Ignore (overwrite) an existing `out` file. Default false. */
  overwrite?: boolean;
  /** Prompt template passed to `buildPrompt`. */
  template?: string;
  /** Custom prompt builder (overrides `template`). */
  prompt?: PromptBuilder;
  /** Stop after the batch in flight; the result then holds the questions done so far. */
  signal?: AbortSignal;
  /** Called after every batch with the questions done (resumed ones included) and the total. */
  onProgress?: (info: { done: number; total: number }) => void;
  /** Draw a progress bar with ETA on stderr. Default: when stderr is a terminal. */
  progress?: boolean;
}

/** The keys of {@linkcode SampledRowJobOptions}, for `checkOptionKeys`. */
export const SAMPLED_ROW_JOB_KEYS: readonly string[] = [
  "tokenizer",
  "numGenerations",
  "n",
  "temperature",
  "topP",
  "topK",
  "maxNewTokens",
  "seed",
  "batchSize",
  "out",
  "overwrite",
  "template",
  "prompt",
  "signal",
  "onProgress",
  "progress",
];

/** Options of {@linkcode openRowJob}. */
export interface RowJobOptions<T, R> {
  /** The job's name: the progress bar's label. */
  name: string;
  /** The items, in order. */
  items: T[];
  /** The unique key of an item (e.g. its question id). */
  key: (item: T) => string;
  /** The key of the item a stored record belongs to. */
  recordKey: (record: R) => string;
  /** Whether the records read back for an item finish it. Default: at least one record. */
  isDone?: (item: T, records: R[]) => boolean;
  /** JSONL file written batch by batch; an existing one with the same `meta` is resumed. */
  out?: string;
  /** The settings that must agree for `out` to be resumed (its header line). */
  meta?: Record<string, unknown>;
  /** Start over even if `out` exists. Default false. */
  overwrite?: boolean;
}

/** Options of {@linkcode RowJob.run}. */
export interface RowJobRunOptions<T> {
  /** Items per `work` call. */
  batchSize: number;
  /** Batches never mix items of two groups (e.g. two benchmarks). Default: one group. */
  groupOf?: (item: T) => string;
  /** Stop after the batch in flight. */
  signal?: AbortSignal;
  /** Draw a progress bar with ETA on stderr. Default: when stderr is a terminal. */
  progress?: boolean;
  /** Metrics shown on the bar, by name (values from `status`). */
  show?: string[];
  /** Metrics for the bar after each batch. */
  status?: (batch: T[]) => Record<string, unknown>;
  /** Called after every batch with the items done (resumed ones included) and the total. */
  onProgress?: (info: { done: number; total: number }) => void;
}

/** An opened row job: what the store already holds, and a loop over the rest. */
export interface RowJob<T, R> {
  /** Records per item key: those read back, then those of this run (in append order). */
  readonly records: Map<string, R[]>;
  /** Items that were not finished when the job was opened, in order. */
  readonly pending: T[];
  /** Items finished so far (resumed ones included). */
  done(): number;
  /**
   * Process the pending items batch by batch: `work` returns the batch's records (any order), which are
   * appended to the store and to `records`. Resolves with `stopped: true` when the signal cut it short.
   */
  run(work: (batch: T[]) => Promise<R[]>, options: RowJobRunOptions<T>): Promise<{ stopped: boolean }>;
}

/**
 * Open a resumable row job: read `out` back (when its header's settings equal `meta`), and split the
 * items into finished and pending.
 *
 * @example
 * ```ts
 * import { openRowJob } from "./row_job.ts";
 * const job = await openRowJob<{ id: string }, { id: string; double: string }>({
 *   name: "double",
 *   items: [{ id: "a" }, { id: "b" }],
 *   key: (item) => item.id,
 *   recordKey: (record) => record.id,
 * });
 * await job.run(async (batch) => batch.map((x) => ({ id: x.id, double: x.id + x.id })), {
 *   batchSize: 1,
 *   progress: false,
 * });
 * console.assert(job.records.get("b")![0].double === "bb" && job.done() === 2);
 * ```
 */
export async function openRowJob<T, R>(options: RowJobOptions<T, R>): Promise<RowJob<T, R>> {
  const { items, key, recordKey, out, meta, overwrite = false } = options;
  const isDone = options.isDone ?? ((_: T, records: R[]) => records.length > 0);
  const keys = new Set(items.map(key));
  const store = out ? await openJsonlStore<R>(out, { meta, overwrite }) : undefined;
  const records = new Map<string, R[]>();
  const add = (r: R) => {
    const k = recordKey(r);
    const list = records.get(k);
    if (list) list.push(r);
    else records.set(k, [r]);
  };
  // records of items that are no longer asked for stay in the file but not in the result
  for (const r of store?.records ?? []) if (keys.has(recordKey(r))) add(r);
  const finished = (item: T) => isDone(item, records.get(key(item)) ?? []);
  const pending = items.filter((item) => !finished(item));
  let done = items.length - pending.length;
  return {
    records,
    pending,
    done: () => done,
    async run(work, runOptions) {
      const { batchSize, groupOf, signal } = runOptions;
      const bar = createProgress({
        total: items.length,
        label: options.name,
        start: done,
        bar: runOptions.progress,
        show: runOptions.show ?? [],
      });
      let stopped = false;
      try {
        let start = 0;
        while (start < pending.length) {
          if (signal?.aborted) {
            stopped = true;
            break;
          }
          let end = Math.min(start + batchSize, pending.length);
          if (groupOf) {
            const group = groupOf(pending[start]);
            for (let i = start + 1; i < end; i++) {
              if (groupOf(pending[i]) !== group) {
                end = i;
                break;
              }
            }
          }
          const batch = pending.slice(start, end);
          const produced = await work(batch);
          await store?.append(produced);
          for (const r of produced) add(r);
          done += batch.length;
          bar.update(done, runOptions.status?.(batch) ?? {});
          runOptions.onProgress?.({ done, total: items.length });
          start = end;
        }
      } finally {
        bar.close();
      }
      return { stopped };
    },
  };
}

/**
 * Check that every row has an id and that no id repeats; `where` names the table in the error
 * ("the probe table"). Returns the ids as strings, in order.
 *
 * @example
 * ```ts
 * import { uniqueRowIds } from "./row_job.ts";
 * console.assert(uniqueRowIds([{ id: 1 }, { id: "b" }], "the probe table").join() === "1,b");
 * ```
 */
export function uniqueRowIds(rows: { id?: unknown }[], where: string): string[] {
  const seen = new Set<string>();
  for (const [i, row] of rows.entries()) {
    if (row.id === undefined || row.id === null) {
      throw new Error(`Row ${i} of ${where} has no id; give every row a unique id column.`);
    }
    const id = String(row.id);
    if (seen.has(id)) throw new Error(`Row ${i} of ${where} repeats id ${id}; ids must be unique.`);
    seen.add(id);
  }
  return [...seen];
}

/**
 * The sample count of a probe / distill call: `numGenerations` (the name `sft` and `grpo` use), or its
 * alias `n` (the CLI's `--n` flag); giving both, or anything but a positive integer, is an error.
 *
 * @example
 * ```ts
 * import { numGenerationsOption } from "./row_job.ts";
 * console.assert(numGenerationsOption({ n: 4 }, 16, "probe") === 4);
 * console.assert(numGenerationsOption({}, 16, "probe") === 16);
 * ```
 */
export function numGenerationsOption(
  options: { numGenerations?: number; n?: number },
  fallback: number,
  where: string,
): number {
  if (options.numGenerations !== undefined && options.n !== undefined) {
    throw new Error(`${where} options give both numGenerations and its alias n; keep numGenerations.`);
  }
  const value = options.numGenerations ?? options.n ?? fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${where} option numGenerations must be a positive integer, got ${value}.`);
  }
  return value;
}

/** The settings of a sampled row job with every default filled in (see {@linkcode resolveSampledJob}). */
export interface ResolvedSampledJob {
  /** Samples per question. */
  numGenerations: number;
  /** Sampling temperature. */
  temperature: number;
  /** Nucleus mass. */
  topP: number;
  /** Top-k (0 = off). */
  topK: number;
  /** New tokens per completion. */
  maxNewTokens: number;
  /** Base seed. */
  seed: number;
  /** Questions per generation call. */
  batchSize: number;
  /** Row -> chat messages: `options.prompt`, else the recipe's prompt with `options.template`. */
  prompt: PromptBuilder;
}

/**
 * Fill in the defaults of a sampled row job (`numGenerations` and `batchSize` per function, the recipe's
 * sampling otherwise) and check the counts; `where` names the function in errors.
 *
 * @example
 * ```ts
 * import { resolveSampledJob } from "./row_job.ts";
 * const job = resolveSampledJob({ n: 4 }, { numGenerations: 16, batchSize: 4 }, "probe");
 * console.assert(job.numGenerations === 4 && job.temperature === 1 && job.maxNewTokens === 4096);
 * ```
 */
export function resolveSampledJob(
  options: SampledRowJobOptions,
  defaults: { numGenerations: number; batchSize: number },
  where: string,
): ResolvedSampledJob {
  const numGenerations = numGenerationsOption(options, defaults.numGenerations, where);
  const { temperature = 1, topP = 1, topK = 0, maxNewTokens = 4096, seed = 0 } = options;
  const batchSize = options.batchSize ?? defaults.batchSize;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`${where} option batchSize must be a positive integer, got ${batchSize}.`);
  }
  const prompt: PromptBuilder = options.prompt ?? ((row) => buildPrompt(row, { template: options.template }));
  return { numGenerations, temperature, topP, topK, maxNewTokens, seed, batchSize, prompt };
}
