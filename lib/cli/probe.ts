/**
 * `cli.ts probe`: sample n answers per question, grade them with the recipe's reward and record the
 * pass counts (resumable), with the pass-count histogram, a CSV table and TensorBoard scalars.
 *
 * @module
 */
import { loadDataset } from "../data/dataset.ts";
import { probe } from "../eval/probe.ts";
import { passCountHistogram, writeSvg } from "../eval/plot.ts";
import { TensorBoardWriter } from "../util/tensorboard.ts";
import {
  abortOnInterrupt,
  dirOf,
  MODEL_SETTINGS,
  openModel,
  OUTPUT_SETTINGS,
  REMOTE_SETTINGS,
  SAMPLING_SETTINGS,
  writeRunRecord,
} from "./common.ts";
import { defineCommand, need } from "./settings.ts";

/** The `probe` command. */
export const PROBE_COMMAND = defineCommand({
  summary:
    "sample n answers per question, grade them with the recipe's reward, record pass counts (resumable)",
  settings: {
    ...MODEL_SETTINGS,
    ...REMOTE_SETTINGS,
    data: { kind: "list", help: "dataset file(s) or folder (parquet, JSONL, JSON, CSV)" },
    format: {
      kind: "string",
      help: "dataset layout (medvlthinker, medagents, pubmedqa, closed_vqa); default: recognised",
    },
    limit: { kind: "number", help: "probe only the first N questions" },
    numGenerations: { kind: "number", help: "samples per question (n)", default: 16 },
    temperature: { kind: "number", help: "sampling temperature", default: 1 },
    ...SAMPLING_SETTINGS,
    batchSize: { kind: "number", help: "questions per generate call", default: 4 },
    out: {
      kind: "string",
      help: "JSONL file of per-question results (resumed when it exists)",
      default: "runs/probe/probe.jsonl",
    },
    keepCompletions: {
      kind: "boolean",
      help: "also write every completion to the JSONL file",
      default: false,
    },
    histogram: { kind: "string", help: "SVG file for the pass-count histogram (default: beside out)" },
    ...OUTPUT_SETTINGS,
  },
  async run(config, argv) {
    const data = need(config.data, "data", "probe");
    const table = await loadDataset(data.length === 1 ? data[0] : data, {
      format: config.format as never,
      ...(config.limit !== undefined ? { limit: config.limit } : {}),
    });
    const out = config.out;
    await writeRunRecord(dirOf(out), "probe", config, argv);
    const { model, tokenizer } = await openModel(config);
    const stop = abortOnInterrupt("probe");
    try {
      const result = await probe(model, table, {
        tokenizer,
        numGenerations: config.numGenerations,
        temperature: config.temperature,
        topP: config.topP,
        topK: config.topK,
        maxNewTokens: config.maxNewTokens,
        seed: config.seed,
        batchSize: config.batchSize,
        template: config.template,
        keepCompletions: config.keepCompletions,
        overwrite: config.overwrite,
        out,
        signal: stop.signal,
        ...(config.quiet ? { progress: false } : {}),
      });
      const histogram = config.histogram ?? `${dirOf(out)}/pass_counts.svg`;
      await writeSvg(
        histogram,
        passCountHistogram(result, {
          n: config.numGenerations,
          title: `Pass counts (n = ${config.numGenerations})`,
        }),
      );
      const csv = out.replace(/\.jsonl$/, "") + ".csv";
      await Deno.writeTextFile(csv, result.toCSV());
      const counts = Array.from(result.array("passCount") as number[]);
      const mean = counts.reduce((a, b) => a + b, 0) / Math.max(1, counts.length);
      if (config.tensorboard) {
        // One point per probe run: the mean pass count and the share of each pass count (step = count).
        const tb = await TensorBoardWriter.open(`${dirOf(out)}/tensorboard`);
        tb.scalar("probe/mean_pass_count", mean, result.numRows());
        for (let k = 0; k <= config.numGenerations; k++) {
          tb.scalar("probe/questions_with_pass_count", counts.filter((c) => c === k).length, k);
        }
        await tb.close();
      }
      console.log(
        `probe: ${result.numRows()} of ${table.numRows()} questions done, mean pass count ${
          mean.toFixed(2)
        } of ${config.numGenerations}` +
          (result.numRows() < table.numRows() ? " (stopped: rerun the same command to resume)" : ""),
      );
      console.log(`results: ${out}\ntable: ${csv}\nhistogram: ${histogram}`);
    } finally {
      stop.dispose();
      model.dispose();
    }
  },
});
