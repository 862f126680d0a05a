/**
 * `cli.ts grpo`: GRPO (RLVR) with the recipe's reward and settings (n = 8, lr 1e-6, KL 0.01 k3,
 * 256 prompts per step in mini-batches of 128, up to 4096 new tokens), with checkpoints, `--resume`,
 * validation every `evalEvery` steps, the best model kept, TensorBoard and a progress line.
 *
 * @module
 */
import { grpo } from "../train/grpo.ts";
import type { GrpoLossType, ScaleRewards } from "../train/grpo_loss.ts";
import type { ScheduleType } from "../train/schedule.ts";
import { rewardByName } from "../reward/registry.ts";
import type { RewardSpec } from "../reward/types.ts";
import { readJsonl } from "../data/jsonl_store.ts";
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

/** `name` or `name:weight` -> a reward spec of a built-in reward. */
export function rewardSpec(entry: string): RewardSpec {
  const [name, weight] = entry.split(":");
  const w = weight === undefined ? 1 : Number(weight);
  if (!Number.isFinite(w)) {
    throw new Error(`rewards: '${entry}' must be name or name:weight with a numeric weight.`);
  }
  return [name.trim(), rewardByName(name.trim()), w];
}

/** The `grpo` command. */
export const GRPO_COMMAND = defineCommand({
  summary: "GRPO (RLVR) with the recipe's binary reward and settings, with validation and checkpoints",
  settings: {
    ...MODEL_SETTINGS,
    ...DATA_SETTINGS,
    outputDir: {
      kind: "string",
      help: "run folder: checkpoints, metrics.jsonl, completions.jsonl, eval.jsonl, tensorboard/",
      default: "runs/grpo",
    },
    maxSteps: { kind: "number", help: "GRPO steps (generation batches); default one epoch" },
    stopAfterSteps: { kind: "number", help: "stop after this many steps (the schedule spans maxSteps)" },
    rewards: {
      kind: "list",
      help: "built-in rewards as name or name:weight (medvlthinker, format, accuracy, lenient, soft_format)",
      default: ["medvlthinker"],
    },
    numGenerations: { kind: "number", help: "completions per prompt (the group)", default: 8 },
    promptsPerStep: { kind: "number", help: "prompts per generation batch", default: 256 },
    miniBatchPrompts: { kind: "number", help: "prompts per optimizer update", default: 128 },
    microBatchSize: { kind: "number", help: "completions per forward/backward pass", default: 8 },
    numIterations: { kind: "number", help: "passes over each generation batch (PPO epochs)", default: 1 },
    temperature: { kind: "number", help: "sampling temperature", default: 1 },
    topP: { kind: "number", help: "nucleus mass", default: 1 },
    topK: { kind: "number", help: "top-k (0 = off)", default: 0 },
    maxNewTokens: { kind: "number", help: "maximum completion length (tokens)", default: 4096 },
    maxPromptLength: {
      kind: "number",
      help: "prompts longer than this keep their last tokens",
      default: 2048,
    },
    learningRate: { kind: "number", help: "peak learning rate", default: 1e-6 },
    lrSchedulerType: { kind: "string", help: "schedule: constant, cosine, linear", default: "constant" },
    warmupRatio: { kind: "number", help: "warm-up as a fraction of the updates", default: 0 },
    warmupSteps: { kind: "number", help: "warm-up in updates (wins over warmupRatio)" },
    betas: { kind: "numbers", help: "AdamW betas", default: [0.9, 0.999] },
    weightDecay: { kind: "number", help: "AdamW decoupled weight decay", default: 0.01 },
    maxGradNorm: { kind: "number", help: "global gradient-norm clip (0 = off)", default: 1 },
    lossType: { kind: "string", help: "loss aggregation: grpo, bnpo, dapo, dr_grpo", default: "dapo" },
    beta: { kind: "number", help: "KL coefficient (k3 estimator)", default: 0.01 },
    klClamp: { kind: "number", help: "clamp of the k3 KL term", default: 10 },
    epsilonLow: { kind: "number", help: "lower ratio clip", default: 0.2 },
    epsilonHigh: { kind: "number", help: "upper ratio clip (clip-higher: 0.28)", default: 0.2 },
    scaleRewards: { kind: "string", help: "advantage scaling: group, batch, none", default: "group" },
    maskTruncatedCompletions: { kind: "boolean", help: "no loss on truncated completions", default: false },
    dropZeroStdGroups: {
      kind: "boolean",
      help: "drop groups whose rewards are all equal and refill (dynamic sampling)",
      default: false,
    },
    maxRefillRounds: {
      kind: "number",
      help: "generation rounds per step to refill dropped groups",
      default: 4,
    },
    recomputeOldLogps: {
      kind: "boolean",
      help: "recompute old log-probs with a forward pass (and log the entropy)",
      default: true,
    },
    shuffle: {
      kind: "boolean",
      help: "shuffle each epoch (false keeps the easy-to-hard order of a filtered set)",
      default: true,
    },
    seed: { kind: "number", help: "seed of the data order and of every sample", default: 42 },
    loraRank: {
      kind: "number",
      help: "train LoRA adapters of this rank instead of all weights (0 = full)",
      default: 0,
    },
    loraAlpha: { kind: "number", help: "LoRA alpha (default: the rank)" },
    freezeVision: { kind: "boolean", help: "keep the Qwen2.5-VL vision tower fixed", default: false },
    saveSteps: { kind: "number", help: "checkpoint every N steps (and at the end)", default: 50 },
    samplesPerStep: { kind: "number", help: "sampled completions logged per step", default: 2 },
    maxSeconds: { kind: "number", help: "stop after this many seconds (the step in flight finishes)" },
    ...VALIDATION_SETTINGS,
    ...RESUME_SETTINGS,
    ...OUTPUT_SETTINGS,
  },
  async run(config, argv) {
    const out = config.outputDir;
    const latest = await checkResume(out, config.resume, "grpo");
    await writeRunRecord(out, "grpo", config, argv);
    const rows = await loadRows(config.data, { ...config, split: "train" });
    const evalRows = config.evalData
      ? await loadRows(config.evalData, { ...config, limit: config.evalLimit, split: "test" })
      : null;
    const rewards = config.rewards.map(rewardSpec);
    if (config.betas.length !== 2) {
      throw new Error(`grpo: betas must be two numbers (beta1,beta2), got ${config.betas.join(",")}.`);
    }
    const { model, tokenizer } = await openModel(config);
    if (!tokenizer) throw new Error("grpo: training needs a local --model (not --endpoints).");
    const logger = await openRunLogger(out, config, evalRows, tokenizer, "grpo");
    const steps = config.maxSteps ?? Math.max(1, Math.floor(rows.length / config.promptsPerStep));
    const last = Math.min(steps, config.stopAfterSteps ?? steps);
    try {
      const result = await grpo(model, rows, {
        tokenizer,
        rewards,
        maxSteps: steps,
        ...(config.stopAfterSteps !== undefined ? { stopAfterSteps: config.stopAfterSteps } : {}),
        numGenerations: config.numGenerations,
        promptsPerStep: config.promptsPerStep,
        miniBatchPrompts: config.miniBatchPrompts,
        microBatchSize: config.microBatchSize,
        numIterations: config.numIterations,
        temperature: config.temperature,
        topP: config.topP,
        topK: config.topK,
        maxNewTokens: config.maxNewTokens,
        maxPromptLength: config.maxPromptLength,
        learningRate: config.learningRate,
        lrSchedulerType: config.lrSchedulerType as ScheduleType,
        warmupRatio: config.warmupRatio,
        ...(config.warmupSteps !== undefined ? { warmupSteps: config.warmupSteps } : {}),
        betas: [config.betas[0], config.betas[1]],
        weightDecay: config.weightDecay,
        maxGradNorm: config.maxGradNorm,
        lossType: config.lossType as GrpoLossType,
        beta: config.beta,
        klClamp: config.klClamp,
        epsilonLow: config.epsilonLow,
        epsilonHigh: config.epsilonHigh,
        scaleRewards: config.scaleRewards as ScaleRewards,
        maskTruncatedCompletions: config.maskTruncatedCompletions,
        dropZeroStdGroups: config.dropZeroStdGroups,
        maxRefillRounds: config.maxRefillRounds,
        recomputeOldLogps: config.recomputeOldLogps,
        shuffle: config.shuffle,
        seed: config.seed,
        ...(config.loraRank > 0
          ? { lora: { r: config.loraRank, alpha: config.loraAlpha ?? config.loraRank } }
          : {}),
        freezeVision: config.freezeVision,
        outputDir: out,
        saveSteps: config.saveSteps,
        samplesPerStep: config.samplesPerStep,
        ...(config.maxSeconds !== undefined ? { maxSeconds: config.maxSeconds } : {}),
        resumeFrom: latest ? true : false,
        progress: !config.quiet,
        loggers: [{
          logStep: async (metrics) => {
            logger.step(metrics.step, metrics);
            const samples =
              (await readJsonl<{ step: number; completion: string; reward: number; id: string }>(
                `${out}/completions.jsonl`,
              )).filter((c) => c.step === metrics.step);
            logger.samples(
              metrics.step,
              samples.map((c) =>
                `**${c.id}** (reward ${c.reward})\n\n    ${c.completion.replace(/\n/g, "\n    ")}`
              ),
            );
            // The validation metrics join the step's metrics (its metrics.jsonl line and the checkpoint's history).
            const v = await logger.validate(model, metrics.step, last);
            if (v) Object.assign(metrics, v);
          },
        }],
      });
      const lastStep = result.history.at(-1);
      console.log(
        `grpo: ${result.steps} of ${steps} steps, last reward ${lastStep?.reward.toFixed(4)}` +
          (result.checkpointDir ? `\ncheckpoint: ${result.checkpointDir}` : "") +
          `\nmetrics: ${result.files.metrics}\nsettings: ${out}/config.yaml`,
      );
    } finally {
      await logger.close();
      model.dispose();
    }
  },
});
