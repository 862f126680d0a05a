/**
 * GRPO (RLVR), one step as `RECIPE.md` states it: take a batch of prompts; sample `numGenerations`
 * completions each (temperature, top-p, log-probs kept); score them with the reward functions;
 * group-normalised advantages; reference log-probs (LoRA: the base with adapters off; full
 * fine-tuning: a frozen copy of the weights; none when beta is 0); then `numIterations` passes over the
 * generation batch, split into optimizer mini-batches (several updates per step), each accumulated over
 * micro-batches that fit in memory.
 *
 * Every step writes one JSON line of metrics (reward mean / std per reward function, zero-std groups,
 * KL, clip fractions, completion lengths, truncation, entropy, learning rate, gradient norm, timings,
 * tokens/s) and a few sampled completions to a second JSONL.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { CausalLM, ForwardOptions } from "../model/types.ts";
import type { Row } from "../data/types.ts";
import { buildPrompt } from "../data/prompt.ts";
import type { ChatMessage } from "../data/tokenizer.ts";
import { normalizeRewards, type RewardSpec } from "../reward/types.ts";
import { sampleSeed } from "../engine/generate_batch.ts";
import type { RemotePolicy } from "../engine/policy_sync.ts";
import { type ImageInputBuilder, visionInputBuilder } from "../engine/vision_inputs.ts";
import { type AdamW, adamw, clipScale, valueAndGrads } from "./optimizer.ts";
import { addLora, type LoraOptions } from "../model/lora.ts";
import { lrSchedule, type ScheduleType } from "./schedule.ts";
import { latestCheckpoint, loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import {
  groupAdvantages,
  type GrpoBatch,
  grpoLoss,
  type GrpoLossType,
  perTokenLogps,
  perTokenLogpsAndEntropy,
  readMetrics,
  type ScaleRewards,
} from "./grpo_loss.ts";
import { seededRandom } from "../model/rng.ts"; // Mulberry32: the same sequence on every machine

/** What `grpo` needs from a tokenizer (the `Tokenizer` of `lib/data/tokenizer.ts` has it). */
export interface GrpoTokenizer {
  /** Token ids of a rendered prompt. */
  encode(text: string): number[];
  /** Text of token ids. */
  decode(ids: number[], options?: { skipSpecialTokens?: boolean }): string;
  /** Id used to pad prompts and completions in a batch. */
  readonly padTokenId: number;
  /** Renders chat messages (needed only when `prompt` is not given). */
  applyChatTemplate?(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
}

/** A dataset for `grpo`: rows in the canonical shape, as an array or an arquero table. */
export type GrpoDataset = Row[] | { objects(): unknown[] };

/** The options of {@linkcode grpo}, named after TRL's `GRPOConfig` where it has the same knob. */
export interface GrpoOptions {
  /** Encodes rendered prompts and decodes completions. */
  tokenizer: GrpoTokenizer;
  /**
   * Renders a row as the prompt string the model continues (chat markup included). Default: the
   * recipe's prompt (`buildPrompt`) through the tokenizer's chat template, when the tokenizer has one.
   */
  prompt?: (row: Row) => string;
  /** Reward functions (with weights); the advantage uses their weighted sum. */
  rewards: RewardSpec | RewardSpec[];
  /** GRPO steps (generation batches). Default: one epoch over the dataset. */
  steps?: number;
  /** Completions per prompt (the group size). Default 8. */
  numGenerations?: number;
  /** Prompts per generation batch (the recipe: 256). Default 16. */
  promptsPerStep?: number;
  /** Prompts per optimizer update (the recipe: 128, i.e. 2 updates per step). Default `promptsPerStep`. */
  miniBatchPrompts?: number;
  /** Completions per forward/backward pass (gradient accumulation inside a mini-batch). Default 32. */
  microBatchSize?: number;
  /** Passes over each generation batch (PPO epochs). Default 1. */
  numIterations?: number;
  /** Sampling temperature. Default 1. */
  temperature?: number;
  /** Nucleus mass. Default 1. */
  topP?: number;
  /** Top-k (0 = off). Default 0. */
  topK?: number;
  /** Maximum completion length in tokens. Default 256. */
  maxNewTokens?: number;
  /** Prompts longer than this keep their last tokens. Default: no limit. */
  maxPromptLength?: number;
  /** Peak learning rate. Default 1e-6 (the recipe). */
  lr?: number;
  /** Schedule shape. Default `constant`. */
  lrScheduleType?: ScheduleType;
  /** Warmup as a fraction of the updates. Default 0. */
  warmupRatio?: number;
  /** Warmup in optimizer updates (wins over `warmupRatio`). */
  warmupSteps?: number;
  /** AdamW decoupled weight decay. Default 0.01. */
  weightDecay?: number;
  /** AdamW betas. Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Clip the global gradient norm to this (0 = off). Default 1. */
  maxGradNorm?: number;
  /** Loss aggregation. Default `dapo` (token mean over the mini-batch). */
  lossType?: GrpoLossType;
  /** KL coefficient. Default 0.01. */
  beta?: number;
  /** Lower ratio clip. Default 0.2. */
  epsilonLow?: number;
  /** Upper ratio clip. Default = epsilonLow. */
  epsilonHigh?: number;
  /** Clamp of the k3 KL term (the recipe: 10). Default none. */
  klClamp?: number;
  /** Advantage scaling. Default `group`. */
  scaleRewards?: ScaleRewards;
  /** Truncated completions (no stop token) get no loss. Default false. */
  maskTruncatedCompletions?: boolean;
  /** Drop groups whose rewards are all equal and refill the batch with fresh prompts (DAPO's dynamic sampling). Default false. */
  dropZeroStdGroups?: boolean;
  /** Generation rounds allowed per step to refill dropped groups. Default 4. */
  maxRefillRounds?: number;
  /** Shuffle the dataset each epoch (false keeps its order: the easy-to-hard curriculum). Default true. */
  shuffle?: boolean;
  /** Seed of the data order and of every sample. Default 0. */
  seed?: number;
  /**
   * A frozen reference model (full fine-tuning). Default: with LoRA adapters the same model with
   * adapters off; without, a snapshot of the weights at the start, swapped in for the reference pass.
   */
  reference?: CausalLM;
  /**
   * Recompute old log-probs with a no-gradient forward pass (and log the policy entropy) instead of
   * using the sampler's log-probs. Default true.
   */
  recomputeOldLogps?: boolean;
  /** Vocabulary-head chunk size. Default 256. */
  chunkSize?: number;
  /** Folder for `metrics.jsonl`, `completions.jsonl` and checkpoints. Default: nothing written. */
  outDir?: string;
  /** Write a checkpoint (weights or adapters, optimizer, step, data position) to `outDir/checkpoint-<step>` every this many steps and at the end. Default: none. */
  saveSteps?: number;
  /**
   * Resume from a checkpoint folder, or `true` for the latest under `outDir`. Generation seeds derive
   * from (seed, row id, step) and the data order from the seed, so the remaining steps repeat those of an
   * uninterrupted run. With full fine-tuning and beta > 0, pass the original model as `reference`
   * (otherwise the resumed weights become the reference).
   */
  resumeFrom?: string | boolean;
  /** Sampled completions written per step. Default 2. */
  samplesPerStep?: number;
  /** Stop after this many seconds (the step in progress finishes). Default: no limit. */
  maxSeconds?: number;
  /** Called after every step with its metrics. */
  onStep?: (metrics: GrpoStepMetrics) => void | Promise<void>;
  /** Show a progress line on stderr. Default true. */
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
  /** Keep the Qwen2.5-VL vision tower (`visual.*`) fixed during the run: it gets no gradient. Default false. */
  freezeVision?: boolean;
  /**
   * Train LoRA adapters instead of all weights, added with these options unless the model already has
   * some. Adapters go on the language model only; the vision tower's weights stay as they are.
   */
  lora?: LoraOptions;
}

/** One step's metrics (also the JSON line written to `metrics.jsonl`). */
export interface GrpoStepMetrics {
  /** Step index (1-based). */
  step: number;
  /** Weighted total reward: mean and std over the step's completions. */
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
  clip_ratio_region: number;
  /** Mean completion length in tokens. */
  completion_length_mean: number;
  /** Shortest completion in tokens. */
  completion_length_min: number;
  /** Longest completion in tokens. */
  completion_length_max: number;
  /** Fraction of completions that hit `maxNewTokens` without a stop token. */
  truncated_ratio: number;
  /** Policy entropy per completion token (NaN when `recomputeOldLogps` is off). */
  entropy: number;
  /** The GRPO loss (mean over the step's updates). */
  loss: number;
  /** Learning rate. */
  lr: number;
  /** Global gradient norm before clipping (mean over the step's updates). */
  grad_norm: number;
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
  /** `reward/<name>/mean` and `reward/<name>/std` for each reward function. */
  [key: string]: number;
}

/** What {@linkcode grpo} returns. */
export interface GrpoResult {
  /** Steps run. */
  steps: number;
  /** The metrics of every step. */
  history: GrpoStepMetrics[];
  /** Wall-clock seconds of the run. */
  seconds: number;
  /** Files written (metrics, completions), when `outDir` was given. */
  files: Record<string, string>;
  /** The last checkpoint written, if any. */
  checkpointDir?: string;
}

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
  lr: 1e-6,
  lrScheduleType: "constant" as ScheduleType,
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

function rowsOf(dataset: GrpoDataset): Row[] {
  const rows = Array.isArray(dataset) ? dataset : dataset.objects() as Row[];
  if (rows.length === 0) throw new Error("grpo: the dataset has no rows.");
  return rows;
}

/** Row index of the `k`-th row drawn (epoch-wise permutations derived from the seed). */
function dataOrder(n: number, seed: number, shuffle: boolean): (k: number) => number {
  const perms = new Map<number, number[]>();
  return (k: number) => {
    const epoch = Math.floor(k / n);
    if (!shuffle) return k % n;
    let p = perms.get(epoch);
    if (!p) {
      const r = seededRandom(seed * 1_000_003 + epoch);
      p = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(r() * (i + 1));
        [p[i], p[j]] = [p[j], p[i]];
      }
      perms.clear();
      perms.set(epoch, p);
    }
    return p[k % n];
  };
}

function meanOf(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

function stdOf(xs: number[]): number {
  if (xs.length < 2) return 0;
  const m = meanOf(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
}

/** One prompt's images: its share of the processor's patches and their grids (shared by its group). */
interface PromptImages {
  pixelValues: tf.Tensor2D;
  imageGridThw: number[][];
}

/** A generated completion with what the loss needs. */
interface Rollout {
  row: Row;
  promptIds: number[];
  /** The prompt's images (Qwen2.5-VL image rows only). */
  image?: PromptImages;
  tokens: number[];
  /** Sampler log-probs of `tokens`. */
  logprobs: number[];
  truncated: boolean;
  text: string;
  reward: number;
  byName: Record<string, number>;
}

function leftPad(rows: number[][], pad: number): { ids: number[][]; mask: number[][] } {
  const t = Math.max(...rows.map((r) => r.length));
  return {
    ids: rows.map((r) => [...new Array(t - r.length).fill(pad), ...r]),
    mask: rows.map((r) => [...new Array(t - r.length).fill(0), ...new Array(r.length).fill(1)]),
  };
}

function rightPad(rows: number[][], pad: number, value = 0): number[][] {
  const t = Math.max(1, ...rows.map((r) => r.length));
  return rows.map((r) => [...r, ...new Array(t - r.length).fill(value === 0 ? pad : value)]);
}

/** The trainable tensors: LoRA adapters when the model has enabled ones, else every parameter. */
function trainableOf(model: CausalLM): Record<string, tf.Variable> {
  const names = Object.keys(model.lora ?? {});
  if (names.length > 0 && model.loraEnabled) {
    const out: Record<string, tf.Variable> = {};
    for (const m of names) {
      out[`${m}.lora_A.weight`] = model.lora[m].A;
      out[`${m}.lora_B.weight`] = model.lora[m].B;
    }
    return out;
  }
  // Frozen tensors (e.g. a Qwen2.5-VL vision tower after freezeVision()) get no gradient: leave them out.
  return Object.fromEntries(Object.entries(model.params).filter(([, v]) => v.trainable));
}

/** The recipe's prompt through the tokenizer's chat template (grpo's default `prompt`). */
function defaultPrompt(tokenizer: GrpoTokenizer): (row: Row) => string {
  const apply = tokenizer.applyChatTemplate;
  if (!apply) {
    throw new Error(
      "grpo: give options.prompt, or a tokenizer with applyChatTemplate (e.g. loadTokenizer()).",
    );
  }
  return (row) => apply.call(tokenizer, buildPrompt(row), { addGenerationPrompt: true });
}

/**
 * Swaps a frozen snapshot of the weights in and out of the model for the reference pass. Nothing is copied:
 * tfjs's `clone` and `Variable.assign` share storage by reference count on every backend, so the snapshot
 * costs no memory until the first update gives the live weights new storage (from then on it holds the
 * start weights, made once), and each pass only repoints the variables.
 */
class WeightSnapshot {
  private saved: Record<string, tf.Tensor>;
  constructor(private params: Record<string, tf.Variable>) {
    this.saved = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, tf.keep(v.clone())]));
  }
  /** Run `fn` with the snapshot's weights in place, then restore the live ones. */
  with<T>(fn: () => T): T {
    const live = Object.fromEntries(Object.entries(this.params).map(([k, v]) => [k, tf.keep(v.clone())]));
    for (const [k, v] of Object.entries(this.params)) v.assign(this.saved[k]);
    try {
      return fn();
    } finally {
      for (const [k, v] of Object.entries(this.params)) v.assign(live[k]);
      tf.dispose(Object.values(live));
    }
  }
  dispose() {
    tf.dispose(Object.values(this.saved));
  }
}

async function toArray2D(t: tf.Tensor2D): Promise<number[][]> {
  const a = await t.array();
  t.dispose();
  return a;
}

/**
 * Train `model` with GRPO on `dataset` (rows in the canonical shape) and return the per-step metrics.
 *
 * @example
 * ```ts ignore
 * import { grpo, MEDVLTHINKER_GRPO } from "./grpo.ts";
 * import { medvlthinkerRewardFn } from "../reward/medvlthinker.ts";
 * const result = await grpo(model, rows, {
 *   ...MEDVLTHINKER_GRPO, tokenizer, prompt: (row) => render(row), rewards: [medvlthinkerRewardFn], steps: 10,
 * });
 * ```
 */
export async function grpo(model: CausalLM, dataset: GrpoDataset, options: GrpoOptions): Promise<GrpoResult> {
  const rows = rowsOf(dataset);
  const o = options;
  const n = o.numGenerations ?? 8;
  const promptsPerStep = o.promptsPerStep ?? 16;
  const miniPrompts = o.miniBatchPrompts ?? promptsPerStep;
  const micro = o.microBatchSize ?? 32;
  const numIterations = o.numIterations ?? 1;
  const steps = o.steps ?? Math.max(1, Math.floor(rows.length / promptsPerStep));
  const beta = o.beta ?? 0.01;
  const lossType = o.lossType ?? "dapo";
  const temperature = o.temperature ?? 1;
  const maxNewTokens = o.maxNewTokens ?? 256;
  const seed = o.seed ?? 0;
  const chunkSize = o.chunkSize ?? 256;
  const recompute = o.recomputeOldLogps ?? true;
  if (n < 2) throw new Error(`grpo: numGenerations must be at least 2 to form a group, got ${n}.`);
  if (promptsPerStep % miniPrompts !== 0) {
    throw new Error(
      `grpo: promptsPerStep (${promptsPerStep}) must be a multiple of miniBatchPrompts (${miniPrompts}).`,
    );
  }
  const rewards = normalizeRewards(o.rewards);
  const renderPrompt = o.prompt ?? defaultPrompt(o.tokenizer);
  const updatesPerStep = (promptsPerStep / miniPrompts) * numIterations;
  const lrAt = lrSchedule({
    lr: o.lr ?? 1e-6,
    type: o.lrScheduleType ?? "constant",
    totalSteps: steps * updatesPerStep,
    warmupRatio: o.warmupRatio ?? 0,
    warmupSteps: o.warmupSteps,
  });
  if (o.lora) {
    if (Object.keys(model.lora ?? {}).length === 0) addLora(model, { seed, ...o.lora });
    model.loraEnabled = true;
  }
  const vision = Boolean(model.config.vision);
  // Frozen for this run only: the tensors frozen here are made trainable again at the end.
  const frozenHere: tf.Variable[] = [];
  if (o.freezeVision) {
    if (!vision) {
      throw new Error(
        `grpo: freezeVision needs a Qwen2.5-VL model; this ${model.config.modelType} model has no vision tower.`,
      );
    }
    for (const [k, v] of Object.entries(model.params)) {
      if (k.startsWith("visual.") && v.trainable) {
        v.trainable = false;
        frozenHere.push(v);
      }
    }
  }
  const buildImages = vision ? (o.images ?? visionInputBuilder(model)) : undefined;
  const liveImages = new Set<tf.Tensor>();
  const trainable = trainableOf(model);
  const optimizer: AdamW = adamw({
    params: trainable,
    lr: o.lr ?? 1e-6,
    betas: o.betas ?? [0.9, 0.999],
    weightDecay: o.weightDecay ?? 0.01,
  });
  const loraRef = Object.keys(model.lora ?? {}).length > 0 && model.loraEnabled;
  const snapshot = beta !== 0 && !o.reference && !loraRef ? new WeightSnapshot(model.params) : undefined;
  const order = dataOrder(rows.length, seed, o.shuffle ?? true);
  const eosIds = new Set(model.config.eosTokenIds);
  const pad = o.tokenizer.padTokenId;

  const files: Record<string, string> = {};
  if (o.outDir) {
    await Deno.mkdir(o.outDir, { recursive: true });
    files.metrics = `${o.outDir}/metrics.jsonl`;
    files.completions = `${o.outDir}/completions.jsonl`;
  }
  let history: GrpoStepMetrics[] = [];
  const t0 = performance.now();
  let cursor = 0; // rows drawn so far
  let startStep = 0;
  let checkpointDir: string | undefined;
  if (o.resumeFrom) {
    if (o.resumeFrom === true && !o.outDir) throw new Error("grpo: resumeFrom true needs an outDir.");
    const dir = o.resumeFrom === true ? await latestCheckpoint(o.outDir!) : o.resumeFrom;
    if (dir) {
      const state = await loadCheckpoint(dir, { model, optimizer });
      startStep = Number(state.grpoStep);
      cursor = Number(state.cursor);
      history = (state.history as GrpoStepMetrics[] | undefined) ?? [];
      if (!Number.isInteger(startStep) || !Number.isInteger(cursor)) {
        throw new Error(
          `grpo: checkpoint ${dir} has no GRPO position (grpoStep, cursor) in trainer_state.json.`,
        );
      }
    }
  }
  if (files.metrics) {
    // A resumed run rewrites the logs up to its checkpoint, then appends.
    await Deno.writeTextFile(files.metrics, history.map((m) => JSON.stringify(m) + "\n").join(""));
    if (startStep === 0) await Deno.writeTextFile(files.completions!, "");
  }
  async function checkpoint(step: number): Promise<void> {
    checkpointDir = await saveCheckpoint(`${o.outDir}/checkpoint-${step}`, {
      model,
      optimizer,
      state: {
        step: optimizer.stepCount,
        totalSteps: steps * updatesPerStep,
        dataPosition: { epoch: Math.floor(cursor / rows.length), batch: cursor % rows.length },
        rng: { seed, epoch: Math.floor(cursor / rows.length) },
        losses: history.map((m) => m.loss),
        grpoStep: step,
        cursor,
        history,
      },
    });
  }

  let policyVersion = 0; // optimizer updates so far
  let syncedVersion = -1;
  let remoteModel = "";
  /** Rollouts from the servers, in `model.generate`'s row order, after pushing the policy if it changed. */
  async function remoteGenerate(prompts: number[][], seeds: number[]) {
    const remote = o.remote!;
    if (syncedVersion !== policyVersion) {
      remoteModel = await remote.sync(model, policyVersion);
      syncedVersion = policyVersion;
    }
    const res = await remote.engine.complete(
      prompts.map((p, i) => ({ promptIds: p, seeds: seeds.slice(i * n, (i + 1) * n) })),
      { temperature, topP: o.topP ?? 1, topK: o.topK ?? 0, maxNewTokens, model: remoteModel },
    );
    const samples = res.flat();
    return {
      // servers that return no token ids (SGLang's OpenAI API) get their text re-encoded
      tokens: samples.map((x) => x.tokenIds.length || !x.text ? x.tokenIds : o.tokenizer.encode(x.text)),
      logprobs: samples.map((x) => x.logprobs),
    };
  }

  /**
   * The images of a batch of prompts (Qwen2.5-VL): the rendered texts get their image tokens expanded
   * in place; returns each image row's own patches (kept for the training passes) and the whole batch's
   * for generation (the caller disposes it).
   */
  async function imageInputs(
    batch: Row[],
    texts: string[],
  ): Promise<
    { images: (PromptImages | undefined)[]; forward: Pick<ForwardOptions, "pixelValues" | "imageGridThw"> }
  > {
    const images: (PromptImages | undefined)[] = batch.map(() => undefined);
    // Rows whose prompt names no image (a prompt function that drops them) are text-only rows.
    const picked = batch.flatMap((r, i) =>
      (r.images?.length ?? 0) > 0 && texts[i].includes("<|image_pad|>") ? [i] : []
    );
    if (picked.length === 0) return { images, forward: {} };
    const first = batch[picked[0]];
    if (!buildImages) {
      throw new Error(
        `grpo: row ${first.id} holds an image but the model (${model.config.modelType}) is text-only; use a Qwen2.5-VL checkpoint or a prompt without images.`,
      );
    }
    if (o.remote) {
      throw new Error(
        `grpo: row ${first.id} holds an image but remote rollouts take token ids only; train image rows locally.`,
      );
    }
    const built = await buildImages(picked.map((i) => batch[i]), picked.map((i) => texts[i]));
    picked.forEach((i, k) => texts[i] = built.texts[k]);
    if (built.pixelValues === undefined) return { images, forward: {} };
    const pv = built.pixelValues instanceof tf.Tensor
      ? built.pixelValues as tf.Tensor2D
      : tf.tensor2d(built.pixelValues as number[][]);
    const grids = built.imageGridThw ?? [];
    let g = 0;
    let at = 0;
    for (const i of picked) {
      const mine = grids.slice(g, g + batch[i].images.length);
      g += mine.length;
      const patches = mine.reduce((s, [t, h, w]) => s + t * h * w, 0);
      if (mine.length !== batch[i].images.length || at + patches > pv.shape[0]) {
        pv.dispose();
        throw new Error(
          `grpo: the image inputs of row ${batch[i].id} do not match its ${batch[i].images.length} images.`,
        );
      }
      const own = pv.slice([at, 0], [patches, -1]) as tf.Tensor2D;
      liveImages.add(own);
      images[i] = { pixelValues: own, imageGridThw: mine };
      at += patches;
    }
    return { images, forward: { pixelValues: pv, imageGridThw: grids } };
  }

  /** One generation round over `count` fresh prompts. */
  async function rollouts(count: number, step: number): Promise<Rollout[]> {
    const batch: Row[] = [];
    for (let i = 0; i < count; i++) batch.push(rows[order(cursor++)]);
    const texts = batch.map((r) => renderPrompt(r));
    const { images: promptImages, forward: genImages } = await imageInputs(batch, texts);
    const encoded = batch.map((r, i) => {
      const ids = o.tokenizer.encode(texts[i]);
      if (!o.maxPromptLength || ids.length <= o.maxPromptLength) return ids;
      if (promptImages[i]) {
        throw new Error(
          `grpo: row ${r.id} has ${ids.length} prompt tokens with its images, over maxPromptLength ${o.maxPromptLength}.`,
        );
      }
      return ids.slice(-o.maxPromptLength);
    });
    const { ids, mask } = leftPad(encoded, pad);
    const seeds: number[] = [];
    for (const r of batch) for (let j = 0; j < n; j++) seeds.push(sampleSeed(seed, `${r.id}@${step}`, j));
    let out;
    try {
      out = o.remote ? await remoteGenerate(encoded, seeds) : await model.generate(ids, {
        attentionMask: mask,
        numSamples: n,
        temperature,
        topP: o.topP ?? 1,
        topK: o.topK ?? 0,
        maxNewTokens,
        seeds,
        ...genImages,
      });
    } finally {
      genImages.pixelValues?.dispose();
    }
    const result: Rollout[] = [];
    for (let i = 0; i < batch.length; i++) {
      for (let j = 0; j < n; j++) {
        const k = i * n + j;
        let tokens = out.tokens[k];
        const stop = tokens.findIndex((t) => eosIds.has(t));
        // Keep the stop token (its probability is part of the policy) and drop what follows it.
        if (stop >= 0) tokens = tokens.slice(0, stop + 1);
        result.push({
          row: batch[i],
          promptIds: encoded[i],
          image: promptImages[i],
          tokens,
          logprobs: out.logprobs[k].slice(0, tokens.length),
          truncated: stop < 0,
          text: o.tokenizer.decode(tokens, { skipSpecialTokens: true }),
          reward: 0,
          byName: {},
        });
      }
    }
    for (const r of rewards) {
      const scores = await Promise.all(result.map((x) => r.fn(x.text, x.row)));
      scores.forEach((s, i) => {
        if (typeof s !== "number" || Number.isNaN(s)) {
          throw new Error(
            `grpo: reward '${r.name}' returned ${s} for row ${result[i].row.id}; a reward must be a number.`,
          );
        }
        result[i].byName[r.name] = s;
        result[i].reward += r.weight * s;
      });
    }
    return result;
  }

  function groupStd(group: Rollout[]): number {
    return stdOf(group.map((g) => g.reward));
  }

  /** Model inputs of a slice of rollouts (prompt padding and completion width trimmed to the slice). */
  function batchOf(
    rs: Rollout[],
    advantages: number[],
    old: number[][] | null,
    ref: number[][] | null,
  ): GrpoBatch {
    const { ids, mask } = leftPad(rs.map((r) => r.promptIds), pad);
    const width = Math.max(1, ...rs.map((r) => r.tokens.length));
    // Every completion carries its prompt's images, in row order (the model consumes them in order).
    const withImages = rs.filter((r) => r.image);
    const forward = withImages.length
      ? {
        pixelValues: tf.concat(withImages.map((r) => r.image!.pixelValues), 0) as tf.Tensor2D,
        imageGridThw: withImages.flatMap((r) => r.image!.imageGridThw),
      }
      : undefined;
    return {
      forward,
      promptIds: ids,
      promptMask: mask,
      completionIds: rightPad(rs.map((r) => r.tokens), pad).map((r) => r.slice(0, width)),
      completionMask: rs.map((r) => {
        const on = o.maskTruncatedCompletions && r.truncated ? 0 : 1;
        return [...new Array(r.tokens.length).fill(on), ...new Array(width - r.tokens.length).fill(0)];
      }),
      advantages,
      oldLogps: old
        ? old.map((x) => [...x.slice(0, width), ...new Array(Math.max(0, width - x.length)).fill(0)])
        : undefined,
      refLogps: ref
        ? ref.map((x) => [...x.slice(0, width), ...new Array(Math.max(0, width - x.length)).fill(0)])
        : undefined,
    };
  }

  try {
    for (let step = startStep; step < steps; step++) {
      if (o.maxSeconds !== undefined && (performance.now() - t0) / 1000 >= o.maxSeconds) break;
      const tGen = performance.now();
      // ---- generation (with DAPO's dynamic sampling when asked) ----
      let groups: Rollout[][] = [];
      let zeroStd = 0;
      let seen = 0;
      const allRollouts: Rollout[] = [];
      for (let round = 0; groups.length < promptsPerStep; round++) {
        const fresh = await rollouts(promptsPerStep - groups.length, step * 1000 + round);
        allRollouts.push(...fresh);
        for (let g = 0; g < fresh.length; g += n) {
          const group = fresh.slice(g, g + n);
          seen++;
          const flat = groupStd(group) === 0;
          if (flat) zeroStd++;
          if (!(o.dropZeroStdGroups && flat)) groups.push(group);
        }
        if (!o.dropZeroStdGroups || round + 1 >= (o.maxRefillRounds ?? 4)) break;
      }
      groups = groups.slice(0, promptsPerStep);
      const batch = groups.flat();
      const genSeconds = (performance.now() - tGen) / 1000;
      const tTrain = performance.now();

      // ---- advantages, old and reference log-probs ----
      const advantages = batch.length
        ? groupAdvantages(batch.map((r) => r.reward), n, { scaleRewards: o.scaleRewards ?? "group" })
        : [];
      let oldLogps: number[][] | null = batch.map((r) => r.logprobs);
      let refLogps: number[][] | null = null;
      const entropies: number[] = [];
      if (recompute && batch.length) {
        oldLogps = [];
        for (let s = 0; s < batch.length; s += micro) {
          const part = batch.slice(s, s + micro);
          const b = batchOf(part, advantages.slice(s, s + micro), null, null);
          let pass;
          try {
            pass = perTokenLogpsAndEntropy(model, b, { temperature, chunkSize, entropy: true });
          } finally {
            b.forward?.pixelValues?.dispose();
          }
          const { logps, entropy } = pass;
          oldLogps.push(...await toArray2D(logps));
          const ent = await toArray2D(entropy!);
          part.forEach((r, i) => entropies.push(...ent[i].slice(0, r.tokens.length)));
        }
      }
      if (o.remote && o.importanceSamplingCap !== undefined && recompute) {
        // TRL's sequence_mask: weight = exp(sum(trainer logp - sampler logp)), 0 above the cap. Scaling the
        // advantage is the same as scaling the policy term of every token, which is what TRL weights.
        batch.forEach((r, i) => {
          if (o.maskTruncatedCompletions && r.truncated) return;
          let diff = 0;
          for (let t = 0; t < r.tokens.length; t++) {
            diff += oldLogps![i][t] - (r.logprobs[t] ?? oldLogps![i][t]);
          }
          const ratio = Math.exp(diff);
          advantages[i] *= ratio > o.importanceSamplingCap! ? 0 : ratio;
        });
      }
      if (beta !== 0 && batch.length) {
        refLogps = [];
        for (let s = 0; s < batch.length; s += micro) {
          const b = batchOf(batch.slice(s, s + micro), advantages.slice(s, s + micro), null, null);
          const pass = () => perTokenLogps(o.reference ?? model, b, { temperature, chunkSize });
          let t: tf.Tensor2D;
          if (o.reference) t = pass();
          else if (loraRef) {
            model.loraEnabled = false;
            try {
              t = pass();
            } finally {
              model.loraEnabled = true;
            }
          } else t = snapshot!.with(pass);
          b.forward?.pixelValues?.dispose();
          refLogps.push(...await toArray2D(t));
        }
      }

      // ---- optimizer updates: mini-batches of prompts, accumulated over micro-batches ----
      const metricSums = { kl: 0, clipLow: 0, clipHigh: 0, clipRegion: 0, loss: 0 };
      let metricCount = 0;
      let gradNorm = 0;
      let updates = 0;
      let lr = 0;
      let trainTokens = 0;
      const miniSize = miniPrompts * n;
      for (let it = 0; it < numIterations && batch.length; it++) {
        for (let m = 0; m < batch.length; m += miniSize) {
          const mini = batch.slice(m, m + miniSize);
          const miniTokens = mini.reduce(
            (s, r) => s + (o.maskTruncatedCompletions && r.truncated ? 0 : r.tokens.length),
            0,
          );
          const microCount = Math.ceil(mini.length / micro);
          let acc: Record<string, tf.Tensor> | null = null;
          for (let s = 0; s < mini.length; s += micro) {
            const part = mini.slice(s, s + micro);
            const at = m + s;
            const b = batchOf(
              part,
              advantages.slice(at, at + part.length),
              oldLogps ? oldLogps.slice(at, at + part.length) : null,
              refLogps ? refLogps.slice(at, at + part.length) : null,
            );
            // Each micro-batch's share of the mini-batch loss: dapo divides by the mini-batch's tokens
            // (numItemsInBatch); per-sequence means weigh by sequences; bnpo averages micro-batch means.
            const weight = lossType === "dapo"
              ? 1
              : lossType === "bnpo"
              ? 1 / microCount
              : part.length / mini.length;
            let metrics: Awaited<ReturnType<typeof grpoLoss>>["metrics"] | undefined;
            const { value, grads } = valueAndGrads(
              () => {
                const out = grpoLoss(model, b, {
                  lossType,
                  beta,
                  epsilonLow: o.epsilonLow ?? 0.2,
                  epsilonHigh: o.epsilonHigh ?? o.epsilonLow ?? 0.2,
                  klClamp: o.klClamp,
                  maxCompletionLength: maxNewTokens,
                  numItemsInBatch: Math.max(1, miniTokens),
                  temperature,
                  chunkSize,
                });
                metrics = out.metrics;
                return weight === 1 ? out.loss : tf.mul(out.loss, weight) as tf.Scalar;
              },
              trainable,
              { accumulate: acc },
            );
            b.forward?.pixelValues?.dispose();
            // Added to the running sums inside the backward, each as soon as it is complete (a text-only
            // micro-batch gives the vision tower no gradient: its sum starts at the first one that does).
            acc = grads;
            metricSums.loss += (await value.data())[0];
            value.dispose();
            const mv = await readMetrics(metrics!);
            metricSums.kl += mv.kl * part.length;
            metricSums.clipLow += mv.clipLow * part.length;
            metricSums.clipHigh += mv.clipHigh * part.length;
            metricSums.clipRegion += mv.clipRegion * part.length;
            metricCount += part.length;
            const pi = b.promptIds as number[][];
            trainTokens += pi.length * (pi[0].length + (b.completionIds as number[][])[0].length);
          }
          // The clip factor is applied by the optimizer as it reads each gradient (no scaled copy), as in sft.
          const clip = await clipScale(acc!, o.maxGradNorm ?? 1);
          gradNorm = clip.norm;
          lr = lrAt(optimizer.stepCount);
          optimizer.step(acc!, { lr, gradScale: clip.scale });
          tf.dispose(Object.values(acc!));
          updates++;
          policyVersion++;
        }
      }
      const trainSeconds = (performance.now() - tTrain) / 1000;

      // ---- metrics ----
      const lengths = batch.map((r) => r.tokens.length);
      const generated = allRollouts.reduce((s, r) => s + r.tokens.length, 0);
      const metrics: GrpoStepMetrics = {
        step: step + 1,
        reward: meanOf(batch.map((r) => r.reward)),
        reward_std: stdOf(batch.map((r) => r.reward)),
        frac_reward_zero_std: seen ? zeroStd / seen : 0,
        kl: metricCount ? metricSums.kl / metricCount : 0,
        clip_ratio_low: metricCount ? metricSums.clipLow / metricCount : 0,
        clip_ratio_high: metricCount ? metricSums.clipHigh / metricCount : 0,
        clip_ratio_region: metricCount ? metricSums.clipRegion / metricCount : 0,
        completion_length_mean: meanOf(lengths),
        completion_length_min: lengths.length ? Math.min(...lengths) : 0,
        completion_length_max: lengths.length ? Math.max(...lengths) : 0,
        truncated_ratio: batch.length ? batch.filter((r) => r.truncated).length / batch.length : 0,
        entropy: entropies.length ? meanOf(entropies) : NaN,
        loss: updates ? metricSums.loss / updates : 0,
        lr,
        grad_norm: gradNorm,
        updates,
        gen_seconds: genSeconds,
        train_seconds: trainSeconds,
        gen_tokens_per_s: generated / Math.max(genSeconds, 1e-9),
        train_tokens_per_s: trainTokens / Math.max(trainSeconds, 1e-9),
      };
      for (const r of rewards) {
        const xs = batch.map((b) => b.byName[r.name]);
        metrics[`reward/${r.name}/mean`] = meanOf(xs);
        metrics[`reward/${r.name}/std`] = stdOf(xs);
      }
      history.push(metrics);
      for (const r of allRollouts) {
        if (r.image) liveImages.delete(r.image.pixelValues);
        r.image?.pixelValues.dispose();
      }
      if (files.metrics) {
        await Deno.writeTextFile(files.metrics, JSON.stringify(metrics) + "\n", { append: true });
      }
      if (files.completions) {
        const k = o.samplesPerStep ?? 2;
        const lines = batch.slice(0, k * n).filter((_, i) => i % n === 0).slice(0, k).map((r) =>
          JSON.stringify({
            step: step + 1,
            id: r.row.id,
            // one <|image_pad|> per image instead of one per merged patch (hundreds)
            prompt: o.tokenizer.decode(r.promptIds).replace(/(<\|image_pad\|>)+/g, "<|image_pad|>"),
            completion: r.text,
            reward: r.reward,
            ...r.byName,
          })
        );
        if (lines.length) {
          await Deno.writeTextFile(files.completions, lines.join("\n") + "\n", { append: true });
        }
      }
      if (o.progress ?? true) {
        const el = (performance.now() - t0) / 1000;
        const eta = (el / (step + 1 - startStep)) * (steps - step - 1);
        const line =
          `grpo ${step + 1}/${steps} reward ${metrics.reward.toFixed(3)} kl ${metrics.kl.toFixed(4)} ` +
          `len ${metrics.completion_length_mean.toFixed(1)} ${el.toFixed(0)}s eta ${eta.toFixed(0)}s`;
        await Deno.stderr.write(new TextEncoder().encode(`\r${line}   `));
      }
      if (o.saveSteps && o.outDir && ((step + 1) % o.saveSteps === 0 || step + 1 === steps)) {
        await checkpoint(step + 1);
      }
      await o.onStep?.(metrics);
    }
  } finally {
    if (o.progress ?? true) await Deno.stderr.write(new TextEncoder().encode("\n"));
    optimizer.dispose();
    snapshot?.dispose();
    tf.dispose([...liveImages]);
    for (const v of frozenHere) v.trainable = true;
  }
  return { steps: history.length, history, seconds: (performance.now() - t0) / 1000, files, checkpointDir };
}
