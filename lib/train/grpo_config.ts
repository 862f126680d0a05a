/**
 * The configuration of `grpo`: its options (named after TRL's `GRPOConfig` where it has the same knob),
 * every default in one object ({@linkcode GRPO_DEFAULTS}), the recipe's preset
 * ({@linkcode MEDVLTHINKER_GRPO}), and the one validation that turns options into the resolved
 * configuration the step loop reads (unknown keys and out-of-range values are errors naming the key).
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import type { LoraOptions } from "../model/lora.ts";
import type { Row } from "../data/types.ts";
import type { PromptOptions } from "../data/prompt.ts";
import type { ChatMessage } from "../data/tokenizer.ts";
import type { RewardSpec } from "../reward/types.ts";
import type { PromptBuilder } from "../engine/generate_batch.ts";
import type { RemotePolicy } from "../engine/policy_sync.ts";
import type { ImageInputBuilder } from "../engine/vision_inputs.ts";
import type { SamplingOptions } from "../engine/sampling.ts";
import type { ScheduleType } from "./schedule.ts";
import type { GrpoLossType, ScaleRewards } from "./grpo_loss.ts";
import type { CurriculumOptions } from "./curriculum.ts";
import { check, checkTrainerKeys, type StepLogger, type StepMetrics, withDefaults } from "./trainer.ts";

/** What `grpo` needs from a tokenizer (the `Tokenizer` of `lib/data/tokenizer.ts` has it). */
export interface GrpoTokenizer {
  /** Token ids of a rendered prompt. */
  encode(text: string): number[];
  /** Text of token ids. */
  decode(ids: number[], options?: { skipSpecialTokens?: boolean }): string;
  /** Id used to pad prompts and completions in a batch. */
  readonly padTokenId: number;
  /** Renders chat messages (needed unless `promptText` is given). */
  applyChatTemplate?(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
}

/** A dataset for `grpo`: rows in the canonical shape, as an array or an arquero table. */
export type GrpoDataset = Row[] | { objects(): unknown[] };

/**
 * Chooses the rows of each generation round. The default walks seeded per-epoch permutations of the
 * dataset ({@linkcode epochSampler} in `grpo_rollouts.ts`); an adaptive curriculum implements the same
 * interface and learns from `observe`.
 */
export interface PromptSampler {
  /** The next `count` rows to generate for, in step `step` (0-based). */
  next(count: number, step: number): Row[] | Promise<Row[]>;
  /** After scoring: every group's row and its completions' total rewards (dropped groups included). */
  observe?(groups: { row: Row; rewards: number[] }[], step: number): void | Promise<void>;
  /** A JSON-safe state stored in checkpoints. */
  state(): Record<string, unknown>;
  /** Sampler metrics merged into each step's metrics (an adaptive curriculum's band occupancy). */
  metrics?(): Record<string, number>;
  /** Restore a state from `state()` (resuming a run). */
  restore(state: Record<string, unknown>): void;
}

/**
 * The options of {@linkcode grpo}; the defaults are {@linkcode GRPO_DEFAULTS}. Sampling (`numGenerations`:
 * the group size, `temperature` > 0, `topP`, `topK`, `maxNewTokens`) is the shared {@linkcode SamplingOptions}.
 */
export interface GrpoOptions extends SamplingOptions {
  /** Encodes rendered prompts and decodes completions. */
  tokenizer: GrpoTokenizer;
  /**
   * How a row becomes the prompt's chat messages (rendered with the tokenizer's chat template): options
   * of the recipe's `buildPrompt` (template, instruction, system prompt), or a function of the row (as
   * `probe` and `evaluate` take it). Default: the recipe's prompt.
   */
  prompt?: PromptOptions | PromptBuilder;
  /** The rendered prompt string itself (chat markup included), used instead of `prompt` and the chat template. */
  promptText?: (row: Row) => string;
  /** Reward functions (with weights); the advantage uses their weighted sum. */
  rewards: RewardSpec | RewardSpec[];
  /** GRPO steps (generation batches) in the run. Default: one epoch, `floor(rows / promptsPerStep)` (at least 1). */
  maxSteps?: number;
  /** Prompts per generation batch (the recipe: 256). */
  promptsPerStep?: number;
  /** Prompts per optimizer update (the recipe: 128, i.e. 2 updates per step). Default `promptsPerStep`. */
  miniBatchPrompts?: number;
  /** Completions per forward/backward pass (gradient accumulation inside a mini-batch). */
  microBatchSize?: number;
  /** Passes over each generation batch (PPO epochs). */
  numIterations?: number;
  /** Prompts longer than this keep their last tokens. Default: no limit. */
  maxPromptLength?: number;
  /** Peak learning rate (the recipe: 1e-6). */
  learningRate?: number;
  /** Learning-rate schedule shape. */
  lrSchedulerType?: ScheduleType;
  /** Warmup as a fraction of the updates. */
  warmupRatio?: number;
  /** Warmup in optimizer updates (wins over `warmupRatio`). */
  warmupSteps?: number;
  /** AdamW decoupled weight decay. */
  weightDecay?: number;
  /** AdamW betas. */
  betas?: [number, number];
  /**
   * AdamW's epsilon, added to the root of the second moment (TRL's `adam_epsilon`). A larger value damps
   * the update of elements whose gradients are far below it: GRPO's gradients can be tiny (a global norm
   * of 0.001-0.03 on the embedded demo), and at 1e-8 Adam turns their noise into full-learning-rate steps.
   */
  adamEpsilon?: number;
  /** Clip the global gradient norm to this (0 = off). */
  maxGradNorm?: number;
  /** Loss aggregation (`dapo`: token mean over the mini-batch). */
  lossType?: GrpoLossType;
  /** KL coefficient (0: no reference model). */
  beta?: number;
  /** Lower ratio clip. */
  epsilonLow?: number;
  /** Upper ratio clip. Default `epsilonLow`. */
  epsilonHigh?: number;
  /** Clamp of the k3 KL term (the recipe: 10). Default none. */
  klClamp?: number;
  /** Advantage scaling. */
  scaleRewards?: ScaleRewards;
  /** Truncated completions (no stop token) get no loss. */
  maskTruncatedCompletions?: boolean;
  /** Drop groups whose rewards are all equal and refill the batch with fresh prompts (DAPO's dynamic sampling). */
  dropZeroStdGroups?: boolean;
  /** Generation rounds allowed per step to refill dropped groups. */
  maxRefillRounds?: number;
  /** Shuffle the dataset each epoch (false keeps its order: the easy-to-hard curriculum). */
  shuffle?: boolean;
  /** Seed of the data order, of every sample and of new LoRA adapters. */
  seed?: number;
  /** Chooses each round's rows (an adaptive curriculum). Default: seeded per-epoch permutations (`shuffle`, `seed`). */
  sampler?: PromptSampler;
  /**
   * `"adaptive"` (or its options): draw prompts with `curriculumSampler` of `curriculum.ts`, a live
   * pass-rate estimate per question from the groups themselves, favouring questions likely to give mixed
   * rewards; its band occupancy joins the step metrics. Ignored when `sampler` is given. Default: none.
   */
  curriculum?: "adaptive" | CurriculumOptions;
  /**
   * A frozen reference model (full fine-tuning). Default: with LoRA adapters the same model with
   * adapters off; without, a snapshot of the weights at the start, swapped in for the reference pass.
   */
  reference?: CausalLM;
  /**
   * Recompute old log-probs with a no-gradient forward pass (and log the policy entropy) instead of
   * using the sampler's log-probs.
   */
  recomputeOldLogps?: boolean;
  /** Vocabulary-head chunk size. */
  chunkSize?: number;
  /** Folder for `config.json`, `metrics.jsonl`, `completions.jsonl` and checkpoints. Default: nothing written. */
  outputDir?: string;
  /** Write a checkpoint to `outputDir/checkpoint-<step>` every this many steps and at the end (0 = never). */
  saveSteps?: number;
  /**
   * Resume from a checkpoint folder, or `true` for the latest under `outputDir`. Generation seeds derive
   * from (seed, row id, step) and the data order from the seed, so the remaining steps repeat those of an
   * uninterrupted run. With full fine-tuning and beta > 0, pass the original model as `reference`
   * (otherwise the resumed weights become the reference).
   */
  resumeFrom?: string | boolean;
  /** Sampled completions written per step to `completions.jsonl`. */
  samplesPerStep?: number;
  /** Stop after this many seconds (the step in progress finishes). Default: no limit. */
  maxSeconds?: number;
  /** Stop once this many steps are done (the schedule still spans `maxSteps`). Default: no limit. */
  stopAfterSteps?: number;
  /** Called after every step with its metrics. */
  onStep?: (metrics: GrpoStepMetrics) => unknown;
  /** Receive every step's metrics (TensorBoard, evaluation hooks). */
  loggers?: StepLogger[];
  /** Show a progress line on stderr. */
  progress?: boolean;
  /**
   * Rollouts from servers instead of `model.generate` (`remotePolicy(...)` of `lib/engine/policy_sync.ts`):
   * the policy is pushed to them (LoRA hot-swap or weights from disk) before every generation round
   * that follows an optimizer update. Old log-probs are still recomputed by the trainer.
   */
  remote?: RemotePolicy;
  /**
   * With `remote`: importance-sampling correction for the gap between the server's sampler and the
   * trainer (TRL's `sequence_mask` mode): each completion's policy term is weighted by
   * `exp(sum(old logp - server logp))`, and completions whose ratio exceeds this cap get weight 0
   * (TRL's default cap: 3). Default: off.
   */
  importanceSamplingCap?: number;
  /**
   * Image inputs of rows with images (Qwen2.5-VL models): default `visionInputBuilder(model)` (the model
   * folder's processor settings). A batch may mix image rows and text-only rows.
   */
  images?: ImageInputBuilder;
  /** Keep the Qwen2.5-VL vision tower (`visual.*`) fixed during the run: it gets no gradient. */
  freezeVision?: boolean;
  /**
   * Train LoRA adapters instead of all weights, added with these options unless the model already has
   * some. Adapters go on the language model only; the vision tower's weights stay as they are.
   */
  lora?: LoraOptions;
  /** Activation checkpointing: recompute each decoder layer in the backward pass (less memory). */
  gradientCheckpointing?: boolean;
}

/** One step's metrics (also the JSON line written to `metrics.jsonl`), under TRL's names. */
export interface GrpoStepMetrics extends StepMetrics {
  /** Weighted total reward: mean over the step's completions. */
  reward: number;
  /** Standard deviation of the total reward over the step's completions. */
  reward_std: number;
  /** Fraction of groups whose rewards were all equal (no learning signal). */
  frac_reward_zero_std: number;
  /** Mean k3 KL between the policy and the reference per completion token. */
  kl: number;
  /** Fraction of tokens clipped below (ratio < 1 - epsilonLow with a negative advantage). */
  clip_ratio_low: number;
  /** Fraction of tokens clipped above (ratio > 1 + epsilonHigh with a positive advantage). */
  clip_ratio_high: number;
  /** Fraction of tokens clipped on either side. */
  clip_ratio: number;
  /** Mean completion length in tokens. */
  completion_length: number;
  /** Shortest completion in tokens. */
  completion_length_min: number;
  /** Longest completion in tokens. */
  completion_length_max: number;
  /** Fraction of completions that hit `maxNewTokens` without a stop token. */
  truncated_ratio: number;
  /** Policy entropy per completion token (NaN when `recomputeOldLogps` is off). */
  entropy: number;
  /** Optimizer updates taken in this step. */
  updates: number;
  /** Seconds spent generating. */
  gen_seconds: number;
  /** Seconds spent in forward and backward passes and updates. */
  train_seconds: number;
  /** Generated tokens per second of generation time. */
  gen_tokens_per_s: number;
  /** Prompt + completion tokens per second of training time (forward and backward). */
  train_tokens_per_s: number;
}

/** The option keys of {@linkcode GRPO_DEFAULTS} that have a default value (set in every resolved configuration). */
export type GrpoDefaultedKey =
  | "numGenerations"
  | "promptsPerStep"
  | "microBatchSize"
  | "numIterations"
  | "temperature"
  | "topP"
  | "topK"
  | "maxNewTokens"
  | "learningRate"
  | "lrSchedulerType"
  | "warmupRatio"
  | "weightDecay"
  | "betas"
  | "adamEpsilon"
  | "maxGradNorm"
  | "lossType"
  | "beta"
  | "epsilonLow"
  | "scaleRewards"
  | "maskTruncatedCompletions"
  | "dropZeroStdGroups"
  | "maxRefillRounds"
  | "shuffle"
  | "seed"
  | "recomputeOldLogps"
  | "chunkSize"
  | "saveSteps"
  | "samplesPerStep"
  | "loggers"
  | "progress"
  | "freezeVision"
  | "gradientCheckpointing";

/** Every option key of {@linkcode grpo}, each with its default (`undefined`: none, or derived as documented). */
export const GRPO_DEFAULTS: Readonly<
  { [K in keyof Required<GrpoOptions>]: K extends GrpoDefaultedKey ? NonNullable<GrpoOptions[K]> : undefined }
> = Object.freeze({
  tokenizer: undefined,
  prompt: undefined,
  promptText: undefined,
  rewards: undefined,
  maxSteps: undefined,
  numGenerations: 8,
  promptsPerStep: 16,
  miniBatchPrompts: undefined,
  microBatchSize: 32,
  numIterations: 1,
  temperature: 1,
  topP: 1,
  topK: 0,
  maxNewTokens: 256,
  maxPromptLength: undefined,
  learningRate: 1e-6,
  lrSchedulerType: "constant" as ScheduleType,
  warmupRatio: 0,
  warmupSteps: undefined,
  weightDecay: 0.01,
  betas: [0.9, 0.999] as [number, number],
  adamEpsilon: 1e-8,
  maxGradNorm: 1,
  lossType: "dapo" as GrpoLossType,
  beta: 0.01,
  epsilonLow: 0.2,
  epsilonHigh: undefined,
  klClamp: undefined,
  scaleRewards: "group" as ScaleRewards,
  maskTruncatedCompletions: false,
  dropZeroStdGroups: false,
  maxRefillRounds: 4,
  shuffle: true,
  seed: 42,
  sampler: undefined,
  curriculum: undefined,
  reference: undefined,
  recomputeOldLogps: true,
  chunkSize: 256,
  outputDir: undefined,
  saveSteps: 0,
  resumeFrom: undefined,
  samplesPerStep: 2,
  maxSeconds: undefined,
  stopAfterSteps: undefined,
  onStep: undefined,
  loggers: [] as StepLogger[],
  progress: true,
  remote: undefined,
  importanceSamplingCap: undefined,
  images: undefined,
  freezeVision: false,
  lora: undefined,
  gradientCheckpointing: false,
});

/** The resolved configuration the step loop reads: every default filled in, derived values computed. */
export type GrpoConfig =
  & GrpoOptions
  & Required<Pick<GrpoOptions, GrpoDefaultedKey | "maxSteps" | "miniBatchPrompts" | "epsilonHigh">>;

/**
 * The recipe's GRPO settings (MedVLThinker): n 8, temperature 1, top-p 1, lr 1e-6 constant, weight
 * decay 0.01, gradient clip 1.0, token-mean (`dapo`) loss with epsilon 0.2 on both sides, beta 0.01 with
 * the k3 KL clamped to [-10, 10], 256 prompts per step in mini-batches of 128 (2 updates per step),
 * one PPO epoch, up to 4096 new tokens.
 */
export const MEDVLTHINKER_GRPO: Readonly<Partial<GrpoOptions>> = Object.freeze({
  numGenerations: 8,
  temperature: 1,
  topP: 1,
  learningRate: 1e-6,
  lrSchedulerType: "constant" as ScheduleType,
  weightDecay: 0.01,
  maxGradNorm: 1.0,
  lossType: "dapo" as GrpoLossType,
  epsilonLow: 0.2,
  epsilonHigh: 0.2,
  beta: 0.01,
  klClamp: 10,
  promptsPerStep: 256,
  miniBatchPrompts: 128,
  numIterations: 1,
  maxNewTokens: 4096,
  maxPromptLength: 2048,
  scaleRewards: "group" as ScaleRewards,
});

/** Named presets of {@linkcode grpo} options. */
export const GRPO_PRESETS: Readonly<Record<string, Readonly<Partial<GrpoOptions>>>> = Object.freeze({
  medvlthinker: MEDVLTHINKER_GRPO,
});

const WHERE = "grpo options";

/** Keys `grpo` took before `sft` and `grpo` shared one vocabulary, and their names now. */
export const GRPO_RENAMED: Readonly<Record<string, string>> = Object.freeze({
  outDir: "outputDir",
  steps: "maxSteps",
  lr: "learningRate",
  lrScheduleType: "lrSchedulerType",
});

/**
 * Validate `options` and fill in every default: unknown keys are errors naming the closest known key,
 * out-of-range values are errors naming the key. `numRows` sizes the default `maxSteps` (one epoch).
 *
 * @example
 * ```ts
 * import { resolveGrpoConfig } from "./grpo_config.ts";
 * const tokenizer = { encode: (t: string) => [t.length], decode: () => "", padTokenId: 0 };
 * const c = resolveGrpoConfig({ tokenizer, rewards: () => 1, promptsPerStep: 4 }, 10);
 * console.assert(c.maxSteps === 2 && c.miniBatchPrompts === 4 && c.epsilonHigh === 0.2);
 * ```
 */
export function resolveGrpoConfig(options: GrpoOptions, numRows: number): GrpoConfig {
  checkTrainerKeys(options, GRPO_DEFAULTS, GRPO_RENAMED, WHERE);
  const c = withDefaults(GRPO_DEFAULTS as unknown as GrpoOptions, options) as GrpoConfig;
  if (!c.tokenizer) throw new Error(`${WHERE}: tokenizer is required (e.g. await loadTokenizer(modelDir)).`);
  if (c.rewards === undefined) {
    throw new Error(`${WHERE}: rewards is required (one reward function or a list).`);
  }
  if (c.numGenerations < 2 || !Number.isInteger(c.numGenerations)) {
    throw new Error(`grpo: numGenerations must be at least 2 to form a group, got ${c.numGenerations}.`);
  }
  check.int(WHERE, "promptsPerStep", c.promptsPerStep, 1);
  c.miniBatchPrompts ??= c.promptsPerStep;
  check.int(WHERE, "miniBatchPrompts", c.miniBatchPrompts, 1);
  if (c.promptsPerStep % c.miniBatchPrompts !== 0) {
    throw new Error(
      `grpo: promptsPerStep (${c.promptsPerStep}) must be a multiple of miniBatchPrompts (${c.miniBatchPrompts}).`,
    );
  }
  c.maxSteps ??= Math.max(1, Math.floor(numRows / c.promptsPerStep));
  check.int(WHERE, "maxSteps", c.maxSteps, 1);
  check.int(WHERE, "microBatchSize", c.microBatchSize, 1);
  check.int(WHERE, "numIterations", c.numIterations, 1);
  if (!(c.temperature > 0)) throw new Error(`${WHERE}: temperature must be > 0, got ${c.temperature}.`);
  check.range(WHERE, "topP", c.topP, 0, 1);
  check.int(WHERE, "topK", c.topK, 0);
  check.int(WHERE, "maxNewTokens", c.maxNewTokens, 1);
  if (c.maxPromptLength !== undefined) check.int(WHERE, "maxPromptLength", c.maxPromptLength, 1);
  check.range(WHERE, "learningRate", c.learningRate, 0);
  check.oneOf(WHERE, "lrSchedulerType", c.lrSchedulerType, ["constant", "linear", "cosine"]);
  check.range(WHERE, "warmupRatio", c.warmupRatio, 0, 1);
  if (c.warmupSteps !== undefined) check.int(WHERE, "warmupSteps", c.warmupSteps, 0);
  check.range(WHERE, "weightDecay", c.weightDecay, 0);
  check.range(WHERE, "adamEpsilon", c.adamEpsilon, 0);
  check.range(WHERE, "maxGradNorm", c.maxGradNorm, 0);
  check.oneOf(WHERE, "lossType", c.lossType, ["grpo", "bnpo", "dr_grpo", "dapo"]);
  check.range(WHERE, "beta", c.beta, 0);
  check.range(WHERE, "epsilonLow", c.epsilonLow, 0);
  c.epsilonHigh ??= c.epsilonLow;
  check.range(WHERE, "epsilonHigh", c.epsilonHigh, 0);
  if (c.klClamp !== undefined) check.range(WHERE, "klClamp", c.klClamp, 0);
  check.oneOf(WHERE, "scaleRewards", c.scaleRewards, ["group", "batch", "none"]);
  check.int(WHERE, "maxRefillRounds", c.maxRefillRounds, 1);
  check.int(WHERE, "seed", c.seed, 0);
  check.int(WHERE, "chunkSize", c.chunkSize, 1);
  check.int(WHERE, "saveSteps", c.saveSteps, 0);
  check.int(WHERE, "samplesPerStep", c.samplesPerStep, 0);
  if (c.maxSeconds !== undefined) check.range(WHERE, "maxSeconds", c.maxSeconds, 0);
  if (c.stopAfterSteps !== undefined) check.int(WHERE, "stopAfterSteps", c.stopAfterSteps, 0);
  if (c.importanceSamplingCap !== undefined) {
    check.range(WHERE, "importanceSamplingCap", c.importanceSamplingCap, 0);
  }
  return c;
}
