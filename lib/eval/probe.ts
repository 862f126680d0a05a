/**
 * The recipe's difficulty probe: sample `numGenerations` answers per question (temperature 1, top-p 1 by default),
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
import { loadTokenizer } from "../data/tokenizer.ts";
import { medvlthinkerReward } from "../reward/medvlthinker.ts";
import { generateCompletions, type ImageInputBuilder, type QuestionRow } from "../engine/generate_batch.ts";
import {
  openRowJob,
  resolveSampledJob,
  SAMPLED_ROW_JOB_KEYS,
  type SampledRowJobOptions,
  uniqueRowIds,
} from "../engine/row_job.ts";
import { checkOptionKeys } from "../util/options.ts";
import { tableRows } from "../util/table.ts";
import { type CompletionEngine, isCompletionEngine } from "../engine/types.ts";

/** A reward: 1 for a correct, well-formed completion, else 0 (values in between count as pass above 0.5). */
export type ProbeReward = (completion: string, row: QuestionRow) => number | Promise<number>;

/** Options of {@linkcode probe}. */
export interface ProbeOptions extends SampledRowJobOptions {
  /** Grader of one completion (default: the recipe's `medvlthinkerReward(...).reward`). */
  reward?: ProbeReward;
  /** Multimodal input builder for image rows (Qwen2.5-VL). Default: `visionInputBuilder(model)`. */
  images?: ImageInputBuilder;
  /** Keep every completion text in the JSONL records. Default false (they can be large). */
  keepCompletions?: boolean;
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

const PROBE_OPTION_KEYS = [...SAMPLED_ROW_JOB_KEYS, "reward", "images", "keepCompletions"];

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
 * const result = await probe(model, table, { numGenerations: 4, maxNewTokens: 256, out: "probe.jsonl" });
 * result.print();
 * ```
 */
export async function probe(
  model: CausalLM | CompletionEngine,
  table: { objects(): unknown[]; numRows(): number },
  options: ProbeOptions = {},
): Promise<Table> {
  checkOptionKeys(options, PROBE_OPTION_KEYS, "probe options");
  const { numGenerations, temperature, topP, topK, maxNewTokens, seed, batchSize, prompt } =
    resolveSampledJob(
      options,
      { numGenerations: 16, batchSize: 4 },
      "probe",
    );
  const { template, reward = defaultReward, images, keepCompletions = false } = options;
  const rows = tableRows(table) as QuestionRow[];
  uniqueRowIds(rows, "the probe table");
  const meta = probeMeta({ n: numGenerations, temperature, topP, topK, maxNewTokens, seed }, {
    template: template ?? null,
    model: isCompletionEngine(model) ? model.name : model.dir ?? model.config.modelType,
  });
  const tokenizer = options.tokenizer ??
    (isCompletionEngine(model) ? undefined : await loadTokenizer(model.dir));
  const job = await openRowJob<QuestionRow, ProbeRecord>({
    name: "probe",
    items: rows,
    key: (row) => String(row.id),
    recordKey: (record) => record.id,
    out: options.out,
    meta,
    overwrite: options.overwrite,
  });
  const last = (id: string) => job.records.get(id)?.at(-1);
  let passes = 0, samples = 0;
  for (const list of job.records.values()) (passes += list.at(-1)!.passCount), (samples += list.at(-1)!.n);
  await job.run(async (batch) => {
    const outs = await generateCompletions(model, batch, {
      tokenizer,
      prompt,
      images,
      n: numGenerations,
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
        n: numGenerations,
        rewards,
        lengths: o.lengths,
        finishReasons: o.finishReasons,
      };
      if (keepCompletions) record.completions = o.completions;
      records.push(record);
      passes += record.passCount;
      samples += record.n;
    }
    return records;
  }, {
    batchSize,
    signal: options.signal,
    progress: options.progress,
    show: ["passRate"],
    status: () => ({ passRate: passes / samples }),
    onProgress: options.onProgress,
  });
  return probeTable(rows.map((r) => last(String(r.id))).filter((r) => r !== undefined));
}
