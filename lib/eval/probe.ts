/**
 * The recipe's difficulty probe: sample `n` answers per question (temperature 1, top-p 1 by default),
 * grade each with the binary reward, and record the pass count per question.
 *
 * Results are appended to a JSONL file batch by batch, so an interrupted probe resumes where it
 * stopped; because every sample draws from a seed derived from (seed, question id, sample index), the
 * resumed table equals the one an uninterrupted run gives.
 *
 * @module
 */
import { arquero as aq } from "../util/deps.ts";
import type { CausalLM } from "../model/types.ts";
import type { Table } from "../data/dataset.ts";
import { buildPrompt } from "../data/prompt.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { medvlthinkerReward } from "../reward/medvlthinker.ts";
import {
  type ChatTokenizer,
  generateCompletions,
  type ImageInputBuilder,
  type PromptBuilder,
  type QuestionRow,
  type SamplingOptions,
} from "../engine/generate_batch.ts";
import { openJsonlStore } from "../data/jsonl_store.ts";
import { createProgress } from "../util/progress.ts";
import { type CompletionEngine, isCompletionEngine } from "../engine/types.ts";

/** A reward: 1 for a correct, well-formed completion, else 0 (values in between count as pass above 0.5). */
export type ProbeReward = (completion: string, row: QuestionRow) => number | Promise<number>;

/** Options of {@linkcode probe}. */
export interface ProbeOptions extends SamplingOptions {
  /** The model's tokenizer. Default: `loadTokenizer(model.dir)` (the folder's own, else the embedded Qwen2.5 one). */
  tokenizer?: ChatTokenizer;
  /** Samples per question. Default 16 (the recipe). */
  n?: number;
  /** Default 1 (the recipe). */
  temperature?: number;
  /** Default 1 (the recipe). */
  topP?: number;
  /** Default 4096 (the recipe). */
  maxNewTokens?: number;
  /** Questions per `generate` call (each with `n` samples). Default 4. */
  batchSize?: number;
  /** JSONL file written incrementally; an existing one with the same settings is resumed. */
  out?: string;
  /** Ignore (overwrite) an existing `out` file. Default false. */
  overwrite?: boolean;
  /** Prompt template passed to `buildPrompt`. */
  template?: string;
  /** Custom prompt builder (overrides `template`). */
  prompt?: PromptBuilder;
  /** Grader of one completion (default: the recipe's `medvlthinkerReward(...).reward`). */
  reward?: ProbeReward;
  /** Multimodal input builder for image rows (Qwen2.5-VL). */
  images?: ImageInputBuilder;
  /** Keep every completion text in the JSONL records. Default false (they can be large). */
  keepCompletions?: boolean;
  /** Stop after the batch in flight when aborted; the table then holds the questions done so far. */
  signal?: AbortSignal;
  /** Called after every batch with the number of questions done (resumed ones included) and the total. */
  onProgress?: (info: { done: number; total: number }) => void;
  /** Draw a progress bar with ETA on stderr. Default true when stderr is a terminal. */
  progress?: boolean;
}

/** One question's probe result as written to the JSONL file. */
export interface ProbeRecord {
  /** The question's id. */
  id: string;
  /** Samples with reward above 0.5. */
  passCount: number;
  /** Samples drawn. */
  n: number;
  /** Reward of each sample. */
  rewards: number[];
  /** Generated tokens of each sample (stop token included). */
  lengths: number[];
  /** `stop` or `length` per sample. */
  finishReasons: ("stop" | "length")[];
  /** The completions (only with `keepCompletions`). */
  completions?: string[];
}

function defaultReward(completion: string, row: QuestionRow): number {
  return medvlthinkerReward(completion, row).reward;
}

/** The probe's settings that must agree for a run to be resumed from a file. */
function probeMeta(
  o: Required<Pick<ProbeOptions, "n" | "temperature" | "topP" | "topK" | "maxNewTokens" | "seed">>,
  extra: Record<string, unknown>,
) {
  return {
    kind: "probe",
    n: o.n,
    temperature: o.temperature,
    topP: o.topP,
    topK: o.topK,
    maxNewTokens: o.maxNewTokens,
    seed: o.seed,
    ...extra,
  };
}

/**
 * Turn probe records into the result table: `id, passCount, n, passRate, meanResponseLength`
 * (response length in generated tokens).
 */
export function probeTable(records: ProbeRecord[]): Table {
  return aq.from(records.map((r) => ({
    id: r.id,
    passCount: r.passCount,
    n: r.n,
    passRate: r.passCount / r.n,
    meanResponseLength: r.lengths.reduce((a, b) => a + b, 0) / Math.max(1, r.lengths.length),
  })));
}

/**
 * Probe the difficulty of every question of `table` for `model`: a local model, or a
 * {@linkcode CompletionEngine} (e.g. `openaiEngine` over vLLM / SGLang / `medthink serve` endpoints).
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * import { loadDataset } from "../data/dataset.ts";
 * const model = await loadModel("medthink-tiny");
 * const table = (await loadDataset("data/medqa_4opt/test.jsonl")).slice(0, 50);
 * const result = await probe(model, table, { n: 4, maxNewTokens: 256, out: "probe.jsonl" });
 * result.print();
 * ```
 */
export async function probe(
  model: CausalLM | CompletionEngine,
  table: { objects(): unknown[]; numRows(): number },
  options: ProbeOptions = {},
): Promise<Table> {
  const {
    n = 16,
    temperature = 1,
    topP = 1,
    topK = 0,
    maxNewTokens = 4096,
    seed = 0,
    batchSize = 4,
    out,
    overwrite = false,
    template,
    reward = defaultReward,
    images,
    keepCompletions = false,
    signal,
    onProgress,
  } = options;
  if (!Number.isInteger(n) || n < 1) throw new Error(`probe option n must be a positive integer, got ${n}.`);
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`probe option batchSize must be a positive integer, got ${batchSize}.`);
  }
  const prompt: PromptBuilder = options.prompt ?? ((row) => buildPrompt(row, { template }));
  const rows = table.objects() as QuestionRow[];
  const seen = new Set<string>();
  for (const [i, row] of rows.entries()) {
    if (row.id === undefined || row.id === null) throw new Error(`Row ${i} of the probe table has no id.`);
    const id = String(row.id);
    if (seen.has(id)) throw new Error(`Row ${i} of the probe table repeats id ${id}; ids must be unique.`);
    seen.add(id);
  }
  const meta = probeMeta({ n, temperature, topP, topK, maxNewTokens, seed }, {
    template: template ?? null,
    model: isCompletionEngine(model) ? model.name : model.dir ?? model.config.modelType,
  });
  const tokenizer = options.tokenizer ??
    (isCompletionEngine(model) ? undefined : await loadTokenizer(model.dir));
  const store = out ? await openJsonlStore<ProbeRecord>(out, { meta, overwrite }) : undefined;
  const done = new Map<string, ProbeRecord>();
  for (const r of store?.records ?? []) if (seen.has(r.id)) done.set(r.id, r);
  const pending = rows.filter((r) => !done.has(String(r.id)));
  const bar = createProgress({
    total: rows.length,
    label: "probe",
    start: done.size,
    bar: options.progress,
    show: ["passRate"],
  });
  let passes = 0, samples = 0;
  for (const r of done.values()) (passes += r.passCount), (samples += r.n);
  for (let start = 0; start < pending.length; start += batchSize) {
    if (signal?.aborted) break;
    const batch = pending.slice(start, start + batchSize);
    const outs = await generateCompletions(model, batch, {
      tokenizer,
      prompt,
      images,
      n,
      temperature,
      topP,
      topK,
      maxNewTokens,
      seed,
    });
    const records: ProbeRecord[] = [];
    for (const [i, o] of outs.entries()) {
      const rewards: number[] = [];
      for (const c of o.completions) rewards.push(Number(await reward(c, batch[i])));
      const record: ProbeRecord = {
        id: o.id,
        passCount: rewards.filter((r) => r > 0.5).length,
        n,
        rewards,
        lengths: o.lengths,
        finishReasons: o.finishReasons,
      };
      if (keepCompletions) record.completions = o.completions;
      records.push(record);
      done.set(o.id, record);
    }
    await store?.append(records);
    for (const r of records) (passes += r.passCount), (samples += r.n);
    bar.update(done.size, { passRate: passes / samples });
    onProgress?.({ done: done.size, total: rows.length });
  }
  bar.close();
  return probeTable(rows.filter((r) => done.has(String(r.id))).map((r) => done.get(String(r.id))!));
}
