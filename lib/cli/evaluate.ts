/**
 * `cli.ts evaluate`: accuracy per benchmark (strict and lenient grading, bootstrap 95% CI), their mean,
 * a report, a chart and TensorBoard scalars (resumable).
 *
 * @module
 */
import { type BenchmarkSpec, evaluate, formatReport, PUBLISHED_ACCURACY } from "../eval/evaluate.ts";
import { TensorBoardWriter } from "../util/tensorboard.ts";
import {
  abortOnInterrupt,
  MODEL_SETTINGS,
  openModel,
  OUTPUT_SETTINGS,
  REMOTE_SETTINGS,
  SAMPLING_SETTINGS,
  writeRunRecord,
} from "./common.ts";
import { defineCommand, need } from "./settings.ts";

const GENERIC_FILE = /^(test|train|validation|val|dev|data)([-_.].*)?$/;

/**
 * A `--benchmarks` entry: `name=path`, a registry name, or a data file (named after its folder when
 * the file name is generic, e.g. `vqa_rad_closed/test.jsonl` -> `vqa_rad_closed`).
 */
export function benchmarkSpec(arg: string): string | BenchmarkSpec {
  const eq = arg.indexOf("=");
  if (eq > 0) return { name: arg.slice(0, eq), path: arg.slice(eq + 1) };
  if (!/[./]/.test(arg)) return arg;
  const parts = arg.replace(/\/+$/, "").split("/");
  const file = parts.at(-1)!.replace(/\.[^.]*$/, "");
  const name = GENERIC_FILE.test(file) && parts.length > 1 ? parts.at(-2)! : file;
  return { name, path: arg };
}

/** The `evaluate` command. */
export const EVALUATE_COMMAND = defineCommand({
  summary: "accuracy per benchmark (strict and lenient grading, bootstrap 95% CI), mean, report (resumable)",
  settings: {
    ...MODEL_SETTINGS,
    ...REMOTE_SETTINGS,
    benchmarks: {
      kind: "list",
      help: "registry names (medqa, pubmedqa, vqa_rad_closed, medvlthinker_eval), data files, or name=file",
      default: ["medqa"],
    },
    dataDir: { kind: "string", help: "folder that benchmark names and relative paths are read from" },
    limit: { kind: "number", help: "at most N questions per benchmark" },
    temperature: { kind: "number", help: "0 = greedy (the recipe)", default: 0 },
    ...SAMPLING_SETTINGS,
    runs: { kind: "number", help: "runs per question (accuracy is their mean)", default: 1 },
    batchSize: { kind: "number", help: "questions per generate call", default: 8 },
    out: {
      kind: "string",
      help: "folder for predictions.jsonl, report.md, report.json, accuracy.svg",
      default: "runs/eval",
    },
    compare: {
      kind: "string",
      help: "report.json of another evaluation to compare with, question by question",
    },
    reference: {
      kind: "string",
      help: `published results drawn on the chart: ${Object.keys(PUBLISHED_ACCURACY).join(", ")}`,
    },
    modelName: { kind: "string", help: "name of the model in the report (default: its folder)" },
    bootstrapSamples: { kind: "number", help: "bootstrap resamples for the intervals", default: 2000 },
    level: { kind: "number", help: "interval coverage", default: 0.95 },
    onBadRow: {
      kind: "string",
      help: "a bad dataset row: error or skip (skipped rows are counted)",
      default: "error",
    },
    ...OUTPUT_SETTINGS,
  },
  async run(config, argv) {
    const names = need(config.benchmarks, "benchmarks", "evaluate");
    const specs: (string | BenchmarkSpec)[] = names.map(benchmarkSpec);
    const refKey = config.reference;
    if (refKey && !PUBLISHED_ACCURACY[refKey]) {
      throw new Error(`--reference '${refKey}' is not one of ${Object.keys(PUBLISHED_ACCURACY).join(", ")}.`);
    }
    await writeRunRecord(config.out, "evaluate", config, argv);
    const { model, tokenizer } = await openModel(config);
    const stop = abortOnInterrupt("evaluate");
    try {
      const report = await evaluate(model, specs, {
        tokenizer,
        dataDir: config.dataDir,
        limit: config.limit,
        temperature: config.temperature,
        topP: config.topP,
        topK: config.topK,
        maxNewTokens: config.maxNewTokens,
        runs: config.runs,
        seed: config.seed,
        batchSize: config.batchSize,
        template: config.template,
        outDir: config.out,
        overwrite: config.overwrite,
        modelName: config.modelName,
        bootstrapSamples: config.bootstrapSamples,
        level: config.level,
        onBadRow: config.onBadRow as "error" | "skip",
        compareWith: config.compare,
        reference: refKey ? { ...PUBLISHED_ACCURACY[refKey] } : undefined,
        signal: stop.signal,
        ...(config.quiet ? { progress: false } : {}),
      });
      if (config.tensorboard) {
        // One point per evaluation (step 0): the accuracy of each benchmark and their mean.
        const tb = await TensorBoardWriter.open(`${config.out}/tensorboard`);
        for (const b of report.benchmarks) {
          tb.scalar(`eval/${b.name}/accuracy`, b.accuracy, 0);
          tb.scalar(`eval/${b.name}/strict_accuracy`, b.strictAccuracy, 0);
          tb.scalar(`eval/${b.name}/format_rate`, b.formatRate, 0);
        }
        if (report.mean) tb.scalar("eval/mean_accuracy", report.mean.accuracy, 0);
        await tb.close();
      }
      console.log(formatReport(report));
      console.log(
        `report: ${report.files!.markdown}, ${report.files!.json}\nchart: ${
          report.files!.svg
        }\npredictions: ${report.files!.predictions}`,
      );
    } finally {
      stop.dispose();
      model.dispose();
    }
  },
});
