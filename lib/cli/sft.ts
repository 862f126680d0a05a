/**
 * `cli.ts sft`: supervised fine-tuning on reasoning traces (the recipe: lr 1e-5 cosine, warm-up 5%,
 * AdamW betas 0.9/0.95, weight decay 1e-4, global batch 16), with checkpoints, `--resume`, validation
 * every `evalEvery` steps, the best model kept, TensorBoard and a progress line.
 *
 * @module
 */
import { sft } from "../train/sft.ts";
import {
  DATA_SETTINGS,
  loadRows,
  MODEL_SETTINGS,
  openModel,
  OUTPUT_SETTINGS,
  writeRunRecord,
} from "./common.ts";
import { checkResume, openRunLogger, RESUME_SETTINGS, VALIDATION_SETTINGS } from "./training.ts";
import { defineCommand } from "./settings.ts";

/** The `sft` command. */
export const SFT_COMMAND = defineCommand({
  summary: "supervised fine-tuning on reasoning traces (the recipe's SFT), with validation and checkpoints",
  settings: {
    ...MODEL_SETTINGS,
    ...DATA_SETTINGS,
    outputDir: {
      kind: "string",
      help: "run folder: checkpoints, config.json, metrics.jsonl, eval.jsonl, tensorboard/",
      default: "runs/sft",
    },
    epochs: { kind: "number", help: "passes over the data", default: 1 },
    maxSteps: { kind: "number", help: "optimizer updates in the run (wins over epochs)" },
    stopAfterSteps: {
      kind: "number",
      help: "stop after this many updates (the schedule spans the whole run)",
    },
    batchSize: { kind: "number", help: "examples per optimizer update (global batch)", default: 16 },
    microBatchSize: {
      kind: "number",
      help: "examples per forward/backward (gradient accumulation)",
      default: 4,
    },
    learningRate: { kind: "number", help: "peak learning rate", default: 1e-5 },
    lrSchedulerType: {
      kind: "string",
      help: "learning-rate schedule: cosine, linear, constant",
      default: "cosine",
    },
    warmupRatio: { kind: "number", help: "warm-up as a fraction of the updates", default: 0.05 },
    warmupSteps: { kind: "number", help: "warm-up in updates (wins over warmupRatio)" },
    weightDecay: { kind: "number", help: "AdamW decoupled weight decay", default: 1e-4 },
    betas: { kind: "numbers", help: "AdamW betas", default: [0.9, 0.95] },
    maxGradNorm: { kind: "number", help: "global gradient-norm clip (0 = off)", default: 1 },
    maxLength: { kind: "number", help: "examples longer than this are cut (tokens)", default: 4096 },
    seed: { kind: "number", help: "seed of the data order (and LoRA init)", default: 42 },
    shuffle: { kind: "boolean", help: "shuffle each epoch", default: true },
    loraRank: {
      kind: "number",
      help: "train LoRA adapters of this rank instead of all weights (0 = full)",
      default: 0,
    },
    loraAlpha: { kind: "number", help: "LoRA alpha (default: the rank)" },
    saveSteps: { kind: "number", help: "checkpoint every N updates (and at the end)", default: 0 },
    export: { kind: "string", help: "at the end, save the model in Hub layout here" },
    ...VALIDATION_SETTINGS,
    ...RESUME_SETTINGS,
    ...OUTPUT_SETTINGS,
  },
  async run(config, argv) {
    const out = config.outputDir;
    const latest = await checkResume(out, config.resume, "sft");
    await writeRunRecord(out, "sft", config, argv);
    const rows = await loadRows(config.data, { ...config, split: "train" });
    const evalRows = config.evalData
      ? await loadRows(config.evalData, { ...config, limit: config.evalLimit, split: "test" })
      : null;
    const { model, tokenizer } = await openModel(config);
    if (!tokenizer) throw new Error("sft: training needs a local --model (not --endpoints).");
    if (config.betas.length !== 2) {
      throw new Error(`sft: betas must be two numbers (beta1,beta2), got ${config.betas.join(",")}.`);
    }
    const logger = await openRunLogger(out, config, evalRows, tokenizer, "sft");
    const options = {
      tokenizer,
      epochs: config.epochs,
      ...(config.maxSteps !== undefined ? { maxSteps: config.maxSteps } : {}),
      batchSize: config.batchSize,
      microBatchSize: config.microBatchSize,
      learningRate: config.learningRate,
      lrSchedulerType: config.lrSchedulerType as "cosine",
      warmupRatio: config.warmupRatio,
      ...(config.warmupSteps !== undefined ? { warmupSteps: config.warmupSteps } : {}),
      weightDecay: config.weightDecay,
      betas: [config.betas[0], config.betas[1]] as [number, number],
      maxGradNorm: config.maxGradNorm,
      maxLength: config.maxLength,
      seed: config.seed,
      shuffle: config.shuffle,
      ...(config.loraRank > 0
        ? { lora: { r: config.loraRank, alpha: config.loraAlpha ?? config.loraRank } }
        : {}),
      outputDir: out,
      saveSteps: config.saveSteps,
      progress: config.quiet ? false : undefined,
      stopAfterSteps: config.stopAfterSteps,
      resumeFrom: latest ? true : false,
      ...(config.export ? { exportDir: config.export } : {}),
      loggers: [{
        logStep: async (metrics: Record<string, unknown> & { step: number }) => {
          logger.step(metrics.step, metrics);
          // Every evalEvery updates (the last one is validated after the run, when its step is known).
          const v = await logger.validate(model, metrics.step, Infinity);
          validated = v ? metrics.step : validated;
          // The validation metrics join the update's metrics.jsonl line.
          if (v) Object.assign(metrics, v);
        },
      }],
    };
    let validated = -1;
    try {
      const result = await sft(model, rows, options);
      if (result.steps !== validated && (config.evalEvery > 0 || config.saveBest)) {
        await logger.validate(model, result.steps, result.steps);
      }
      console.log(
        `sft: ${result.steps} of ${result.totalSteps} updates, last loss ${
          result.history.at(-1)?.loss.toFixed(4)
        }` +
          (result.checkpointDir ? `\ncheckpoint: ${result.checkpointDir}` : "") +
          (result.exportDir ? `\nmodel: ${result.exportDir}` : "") +
          `\nmetrics: ${result.files.metrics}\nsettings: ${out}/config.yaml`,
      );
    } finally {
      await logger.close();
      model.dispose();
    }
  },
});
