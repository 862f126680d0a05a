/**
 * `cli.ts distill`: collect reasoning traces from a teacher (a local model or OpenAI-compatible
 * servers): up to n samples per question, the first correct one's reasoning kept (resumable). Writes
 * the per-question records and the questions with their traces as a dataset `sft` reads.
 *
 * @module
 */
import { distill } from "../train/distill.ts";
import type { Row } from "../data/types.ts";
import {
  abortOnInterrupt,
  DATA_SETTINGS,
  loadRows,
  MODEL_SETTINGS,
  openModel,
  OUTPUT_SETTINGS,
  REMOTE_SETTINGS,
  SAMPLING_SETTINGS,
  writeRunRecord,
} from "./common.ts";
import { toMedvlthinkerRecord } from "./filter.ts";
import { defineCommand } from "./settings.ts";

/** The `distill` command. */
export const DISTILL_COMMAND = defineCommand({
  summary:
    "collect reasoning traces from a teacher: first correct of n samples per question (resumable), an SFT dataset",
  settings: {
    ...MODEL_SETTINGS,
    ...REMOTE_SETTINGS,
    ...DATA_SETTINGS,
    numGenerations: {
      kind: "number",
      help: "samples per question at most (the recipe: 3 at T = 1)",
      default: 3,
    },
    temperature: { kind: "number", help: "sampling temperature", default: 1 },
    ...SAMPLING_SETTINGS,
    batchSize: { kind: "number", help: "questions per teacher call", default: 8 },
    out: {
      kind: "string",
      help: "folder for distill.jsonl (per-question records, resumed) and traces.jsonl (rows with reasoning)",
      default: "runs/distill",
    },
    resume: {
      kind: "boolean",
      help: "continue distill.jsonl (the default; --no-resume or --overwrite starts over)",
      default: true,
    },
    ...OUTPUT_SETTINGS,
  },
  async run(config, argv) {
    const out = config.out;
    await writeRunRecord(out, "distill", config, argv);
    const rows = await loadRows(config.data, { ...config, split: "train" });
    const { model, tokenizer } = await openModel(config);
    const stop = abortOnInterrupt("distill");
    try {
      const result = await distill(model, rows, {
        numGenerations: config.numGenerations,
        temperature: config.temperature,
        topP: config.topP,
        topK: config.topK,
        maxNewTokens: config.maxNewTokens,
        seed: config.seed,
        batchSize: config.batchSize,
        out: `${out}/distill.jsonl`,
        overwrite: config.overwrite || !config.resume,
        ...(config.template !== undefined ? { template: config.template } : {}),
        ...(tokenizer ? { tokenizer } : {}),
        signal: stop.signal,
        progress: config.quiet ? false : undefined,
      });
      const outDir = await Deno.realPath(out);
      const kept = result.table.objects() as (Row & Record<string, unknown>)[];
      const lines = kept.map((r) => JSON.stringify(toMedvlthinkerRecord(r, outDir)));
      await Deno.writeTextFile(`${out}/traces.jsonl`, lines.join("\n") + (lines.length ? "\n" : ""));
      console.log(
        `distill: ${result.questions} of ${rows.length} questions done, ${kept.length} with a trace, ` +
          `${result.withoutTrace} without; ${result.samplesDrawn} teacher samples drawn` +
          (result.questions < rows.length ? " (stopped: rerun the same command to resume)" : "") +
          `\nrecords: ${out}/distill.jsonl\ntraces (an sft dataset): ${out}/traces.jsonl`,
      );
    } finally {
      stop.dispose();
      model.dispose();
    }
  },
});
