/**
 * The recipe's trace collection (distillation): sample a teacher up to `numGenerations` times per question
 * (temperature 1 by default), keep the reasoning of the first response the reward marks correct,
 * and return the dataset rows with `reasoning` filled in: a table ready for `sft()`.
 *
 * Sampling goes in rounds: round `j` draws sample `j` (seed `sampleSeed(seed, id, j)`) for the
 * questions that have no correct trace yet, so the teacher is not asked again once a question is
 * solved, and the kept trace is the one a run drawing all `numGenerations` samples would keep first.
 * Results are appended to a JSONL file per batch; a rerun with the same settings resumes.
 *
 * @module
 */
import { arquero as aq } from "../util/deps.ts";
import type { CausalLM } from "../model/types.ts";
import type { Row, Table } from "../data/dataset.ts";
import { medvlthinkerReward } from "../reward/medvlthinker.ts";
import { generateCompletions } from "../engine/generate_batch.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { type CompletionEngine, isCompletionEngine } from "../engine/types.ts";
import {
  openRowJob,
  resolveSampledJob,
  SAMPLED_ROW_JOB_KEYS,
  type SampledRowJobOptions,
  uniqueRowIds,
} from "../engine/row_job.ts";
import { checkOptionKeys } from "../util/options.ts";
import { tableRows } from "../util/table.ts";

/** Options of {@linkcode distill}. */
export interface DistillOptions extends SampledRowJobOptions {
  /** Grader: a response counts as correct above 0.5. Default: the recipe's strict `medvlthinkerReward`. */
  reward?: (completion: string, row: Row) => number | Promise<number>;
}

const DISTILL_OPTION_KEYS = [...SAMPLED_ROW_JOB_KEYS, "reward"];

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
  /** Questions with no correct trace in `numGenerations` samples. */
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
 * const { table, withoutTrace } = await distill(teacher, questions, { numGenerations: 3, out: "traces.jsonl" });
 * await sft(model, table, { ... });
 * ```
 */
export async function distill(
  teacher: CompletionEngine | CausalLM,
  dataset: Table | Row[],
  options: DistillOptions = {},
): Promise<DistillResult> {
  checkOptionKeys(options, DISTILL_OPTION_KEYS, "distill options");
  const { numGenerations, temperature, topP, topK, maxNewTokens, seed, batchSize, prompt } =
    resolveSampledJob(
      options,
      { numGenerations: 3, batchSize: 8 },
      "distill",
    );
  const { template, reward = defaultReward } = options;
  const rows = tableRows<Row>(dataset, "The distill dataset");
  uniqueRowIds(rows, "the distill dataset");
  const local = !isCompletionEngine(teacher);
  const tokenizer = options.tokenizer ?? (local ? await loadTokenizer((teacher as CausalLM).dir) : undefined);
  const meta = {
    kind: "distill",
    n: numGenerations,
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
  const job = await openRowJob<Row, DistillRecord>({
    name: "distill",
    items: rows,
    key: (row) => String(row.id),
    recordKey: (record) => record.id,
    out: options.out,
    meta,
    overwrite: options.overwrite,
  });
  let drawn = 0;
  await job.run(async (batch) => {
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
    for (let j = 0; j < numGenerations; j++) {
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
    return state.map((s) => s.record);
  }, {
    batchSize,
    signal: options.signal,
    progress: options.progress,
    onProgress: options.onProgress,
  });
  const last = (row: Row) => job.records.get(String(row.id))?.at(-1);
  const missingIds = rows.filter((r) => last(r)?.reasoning === null).map((r) => String(r.id));
  const kept = rows
    .filter((r) => typeof last(r)?.reasoning === "string")
    .map((r) => ({ ...r, reasoning: last(r)!.reasoning }));
  return {
    table: aq.from(kept),
    questions: rows.filter((r) => last(r) !== undefined).length,
    withoutTrace: missingIds.length,
    missingIds,
    samplesDrawn: drawn,
  };
}
