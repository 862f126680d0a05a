/**
 * The recipe's trace collection (distillation): sample a teacher up to `n` times per question
 * (temperature 1 by default), keep the reasoning of the first response the reward marks correct,
 * and return the dataset rows with `reasoning` filled in: a table ready for `sft()`.
 *
 * Sampling goes in rounds: round `j` draws sample `j` (seed `sampleSeed(seed, id, j)`) for the
 * questions that have no correct trace yet, so the teacher is not asked again once a question is
 * solved, and the kept trace is the one a run drawing all `n` samples would keep first.
 * Results are appended to a JSONL file per batch; a rerun with the same settings resumes.
 *
 * @module
 */
import { arquero as aq } from "../util/deps.ts";
import type { CausalLM } from "../model/types.ts";
import type { Row, Table } from "../data/dataset.ts";
import { buildPrompt } from "../data/prompt.ts";
import { medvlthinkerReward } from "../reward/medvlthinker.ts";
import { type ChatTokenizer, generateCompletions, type PromptBuilder } from "../engine/generate_batch.ts";
import { openJsonlStore } from "../data/jsonl_store.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { type CompletionEngine, isCompletionEngine } from "../engine/types.ts";
import { createProgress } from "../util/progress.ts";

/** Options of {@linkcode distill}. */
export interface DistillOptions {
  /** Samples per question at most. Default 3. */
  n?: number;
  /** Default 1. */
  temperature?: number;
  /** Default 1. */
  topP?: number;
  /** Default 0 (off). */
  topK?: number;
  /** Default 4096. */
  maxNewTokens?: number;
  /** Base seed of the per-sample seeds. Default 0. */
  seed?: number;
  /** Questions per teacher call. Default 8. */
  batchSize?: number;
  /** JSONL file written as it goes; an existing one with the same settings is resumed. */
  out?: string;
  /** Ignore (overwrite) an existing `out`. Default false. */
  overwrite?: boolean;
  /** Prompt template passed to `buildPrompt`. */
  template?: string;
  /** Custom prompt builder (overrides `template`). */
  prompt?: PromptBuilder;
  /** Grader: a response counts as correct above 0.5. Default: the recipe's strict `medvlthinkerReward`. */
  reward?: (completion: string, row: Row) => number | Promise<number>;
  /** Tokenizer of a local teacher model (default: its folder's). */
  tokenizer?: ChatTokenizer;
  /** Stop after the batch in flight. */
  signal?: AbortSignal;
  /** Progress bar on stderr. Default: when stderr is a terminal. */
  progress?: boolean;
}

/** One question's outcome as written to the JSONL file. */
export interface DistillRecord {
  /** Question id. */
  id: string;
  /** The kept reasoning, or null when no sample was correct. */
  reasoning: string | null;
  /** The whole kept response, or null. */
  response: string | null;
  /** Samples drawn (the correct one included). */
  attempts: number;
  /** Reward of each sample drawn. */
  rewards: number[];
}

/** What {@linkcode distill} returns. */
export interface DistillResult {
  /** The rows with a correct trace, `reasoning` filled in (input order): `sft()` takes it as is. */
  table: Table;
  /** Questions processed (resumed ones included). */
  questions: number;
  /** Questions with no correct trace in `n` samples. */
  withoutTrace: number;
  /** Their ids. */
  missingIds: string[];
  /** Teacher samples drawn in this call (resumed questions cost none). */
  samplesDrawn: number;
}

/**
 * The reasoning of a response: the text inside its first `<think>...</think>`, else the text before
 * `<answer>`, trimmed.
 *
 * @example
 * ```ts
 * import { extractReasoning } from "./distill.ts";
 * console.assert(extractReasoning("<think> a because b </think>\n<answer> A </answer>") === "a because b");
 * ```
 */
export function extractReasoning(response: string): string {
  const m = /<think>([\s\S]*?)<\/think>/.exec(response);
  if (m) return m[1].trim();
  const i = response.indexOf("<answer>");
  return (i >= 0 ? response.slice(0, i) : response).trim();
}

function defaultReward(completion: string, row: Row): number {
  return medvlthinkerReward(completion, row).reward;
}

/**
 * Collect reasoning traces from a teacher (an engine over vLLM/SGLang/`medthink serve` endpoints, or a
 * local model) for every question of `dataset`.
 *
 * @example
 * ```ts ignore
 * const teacher = openaiEngine({ baseUrls: ["http://gpu1:8000"], model: "Qwen/Qwen2.5-VL-72B-Instruct" });
 * const { table, withoutTrace } = await distill(teacher, questions, { n: 3, out: "traces.jsonl" });
 * await sft(model, table, { ... });
 * ```
 */
export async function distill(
  teacher: CompletionEngine | CausalLM,
  dataset: Table | Row[],
  options: DistillOptions = {},
): Promise<DistillResult> {
  const {
    n = 3,
    temperature = 1,
    topP = 1,
    topK = 0,
    maxNewTokens = 4096,
    seed = 0,
    batchSize = 8,
    template,
    reward = defaultReward,
    signal,
  } = options;
  if (!Number.isInteger(n) || n < 1) {
    throw new Error(`distill option n must be a positive integer, got ${n}.`);
  }
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new Error(`distill option batchSize must be a positive integer, got ${batchSize}.`);
  }
  const rows = (Array.isArray(dataset) ? dataset : dataset.objects()) as Row[];
  const seen = new Set<string>();
  for (const [i, row] of rows.entries()) {
    if (row.id === undefined || row.id === null) {
      throw new Error(`Row ${i} of the distill dataset has no id.`);
    }
    if (seen.has(String(row.id))) throw new Error(`Row ${i} of the distill dataset repeats id ${row.id}.`);
    seen.add(String(row.id));
  }
  const prompt: PromptBuilder = options.prompt ?? ((row) => buildPrompt(row, { template }));
  const local = !isCompletionEngine(teacher);
  const tokenizer = options.tokenizer ?? (local ? await loadTokenizer((teacher as CausalLM).dir) : undefined);
  const meta = {
    kind: "distill",
    n,
    temperature,
    topP,
    topK,
    maxNewTokens,
    seed,
    template: template ?? null,
    teacher: local
      ? (teacher as CausalLM).dir ?? (teacher as CausalLM).config.modelType
      : (teacher as CompletionEngine).name,
  };
  const store = options.out
    ? await openJsonlStore<DistillRecord>(options.out, { meta, overwrite: options.overwrite })
    : undefined;
  const done = new Map<string, DistillRecord>();
  for (const r of store?.records ?? []) if (seen.has(r.id)) done.set(r.id, r);
  const pending = rows.filter((r) => !done.has(String(r.id)));
  const bar = createProgress({
    total: rows.length,
    label: "distill",
    start: done.size,
    bar: options.progress,
    show: [],
  });
  let drawn = 0;
  for (let start = 0; start < pending.length; start += batchSize) {
    if (signal?.aborted) break;
    const batch = pending.slice(start, start + batchSize);
    const state = batch.map((row) => ({
      row,
      record: {
        id: String(row.id),
        reasoning: null,
        response: null,
        attempts: 0,
        rewards: [],
      } as DistillRecord,
    }));
    for (let j = 0; j < n; j++) {
      const open = state.filter((s) => s.record.reasoning === null);
      if (open.length === 0) break;
      // sample j of each open question draws from sampleSeed(seed, id, j), whatever the round it runs in
      const outs = await generateCompletions(teacher, open.map((s) => s.row), {
        tokenizer,
        prompt,
        n: 1,
        temperature,
        topP,
        topK,
        maxNewTokens,
        seed,
        firstSample: j,
      });
      drawn += outs.length;
      for (const [i, o] of outs.entries()) {
        const s = open[i];
        const text = o.completions[0];
        const r = Number(await reward(text, s.row));
        s.record.attempts++;
        s.record.rewards.push(r);
        if (r > 0.5) (s.record.reasoning = extractReasoning(text)), (s.record.response = text);
      }
    }
    const records = state.map((s) => s.record);
    await store?.append(records);
    for (const r of records) done.set(r.id, r);
    bar.update(done.size, {});
  }
  bar.close();
  const missingIds = rows.filter((r) => done.get(String(r.id))?.reasoning === null).map((r) => String(r.id));
  const kept = rows
    .filter((r) => typeof done.get(String(r.id))?.reasoning === "string")
    .map((r) => ({ ...r, reasoning: done.get(String(r.id))!.reasoning }));
  return {
    table: aq.from(kept),
    questions: rows.filter((r) => done.has(String(r.id))).length,
    withoutTrace: missingIds.length,
    missingIds,
    samplesDrawn: drawn,
  };
}
