/**
 * GRPO (RLVR), one step as `RECIPE.md` states it, each phase a named function (TRL's names):
 *
 * 1. {@linkcode generateAndScoreCompletions}: take a batch of prompts from the sampler; sample
 *    `numGenerations` completions each and score them with the reward functions (`grpo_rollouts.ts`,
 *    with DAPO's dynamic sampling when asked); group-normalised advantages; old log-probs (a no-gradient
 *    pass) and reference log-probs (LoRA: the base with adapters off; full fine-tuning: a frozen copy of
 *    the weights; none when beta is 0).
 * 2. {@linkcode optimizeOnBatch}: `numIterations` passes over the generation batch, split into optimizer
 *    mini-batches (several updates per step), each accumulated over micro-batches of
 *    {@linkcode computeLoss}.
 * 3. {@linkcode logStep}: one JSON line of metrics (TRL's names) to `metrics.jsonl`, a few sampled
 *    completions to `completions.jsonl`, the loggers and `onStep`; a checkpoint every `saveSteps`.
 *
 * Settings and their defaults: `grpo_config.ts`. The resolved configuration is written to
 * `<outputDir>/config.json`.
 *
 * @module
 */
import { createProgress, type Progress } from "../util/progress.ts";
import { tf } from "../util/deps.ts";
import { tableRows } from "../util/table.ts";
import type { CausalLM } from "../model/types.ts";
import type { Row } from "../data/types.ts";
import { addLora, loraParams } from "../model/lora.ts";
import { type NamedReward, normalizeRewards } from "../reward/types.ts";
import { type AdamW, adamw, clipScale, valueAndGrads } from "./optimizer.ts";
import { lrSchedule } from "./schedule.ts";
import { curriculumSampler } from "./curriculum.ts";
import { loadCheckpoint, saveCheckpoint } from "./checkpoint.ts";
import {
  groupAdvantages,
  type GrpoBatch,
  grpoLoss,
  perTokenLogps,
  perTokenLogpsAndEntropy,
  readMetrics,
} from "./grpo_loss.ts";
import {
  type GrpoConfig,
  type GrpoDataset,
  type GrpoOptions,
  type GrpoStepMetrics,
  type PromptSampler,
  resolveGrpoConfig,
} from "./grpo_config.ts";
import {
  epochSampler,
  leftPad,
  meanOf,
  rightPad,
  type Rollout,
  RolloutGenerator,
  stdOf,
} from "./grpo_rollouts.ts";
import { resumeDir, type TrainResult, writeRunConfig } from "./trainer.ts";
import { truncateJsonlToStep } from "../data/jsonl_store.ts";

export * from "./grpo_config.ts";
export { epochSampler, type Rollout } from "./grpo_rollouts.ts";

/** What {@linkcode grpo} returns (the shape `sft` returns too). */
export type GrpoResult = TrainResult<GrpoStepMetrics>;

/** Everything a run holds between steps. */
interface GrpoRun {
  model: CausalLM;
  c: GrpoConfig;
  rows: Row[];
  rewards: NamedReward[];
  trainable: Record<string, tf.Variable>;
  optimizer: AdamW;
  lrAt: (update: number) => number;
  updatesPerStep: number;
  sampler: PromptSampler;
  rollouts: RolloutGenerator;
  /** Reference log-probs of a batch (beta > 0). */
  referenceLogps?: (b: GrpoBatch) => tf.Tensor2D;
  snapshot?: WeightSnapshot;
  /** Tensors frozen for this run only (made trainable again at the end). */
  frozenHere: tf.Variable[];
  files: Record<string, string>;
  history: GrpoStepMetrics[];
  startStep: number;
  /** Rows drawn by the sampler so far (the `epoch` metric). */
  rowsDrawn: number;
  checkpointDir: string | null;
  t0: number;
  /** The progress line (made once a resume has set `startStep`). */
  progress?: Progress;
}

/** A scored generation batch with what the loss needs (TRL's `_generate_and_score_completions` output). */
interface ScoredBatch {
  /** Kept rollouts, `numGenerations` per group, in group order. */
  rollouts: Rollout[];
  /** Every rollout of the step (dropped groups included): their images are released after the step. */
  all: Rollout[];
  advantages: number[];
  oldLogps: number[][] | null;
  refLogps: number[][] | null;
  /** Policy entropy of every completion token (recomputed old log-probs only). */
  entropies: number[];
  /** Groups generated and those with all-equal rewards. */
  seen: number;
  zeroStd: number;
  genSeconds: number;
  /** When generation ended (the training time starts there). */
  trainStart: number;
}

/** What one step's optimizer updates measured. */
interface UpdateStats {
  loss: number;
  kl: number;
  clipLow: number;
  clipHigh: number;
  clipRegion: number;
  gradNorm: number;
  learningRate: number;
  updates: number;
  trainTokens: number;
}

/**
 * Train `model` with GRPO on `dataset` (rows in the canonical shape) and return the per-step metrics.
 *
 * @example
 * ```ts ignore
 * import { grpo, MEDVLTHINKER_GRPO } from "./grpo.ts";
 * import { medvlthinkerRewardFn } from "../reward/medvlthinker.ts";
 * const result = await grpo(model, rows, {
 *   ...MEDVLTHINKER_GRPO, tokenizer, rewards: [medvlthinkerRewardFn], maxSteps: 10, outputDir: "runs/grpo",
 * });
 * ```
 */
export async function grpo(model: CausalLM, dataset: GrpoDataset, options: GrpoOptions): Promise<GrpoResult> {
  const rows = tableRows<Row>(dataset, "The grpo dataset");
  if (rows.length === 0) throw new Error("grpo: the dataset has no rows.");
  const c = resolveGrpoConfig(options, rows.length);
  const run = setUp(model, rows, c);
  try {
    await resume(run);
    await openOutputs(run);
    run.progress = createProgress({
      total: c.maxSteps,
      label: "grpo",
      start: run.startStep,
      bar: c.progress ? undefined : false,
      show: ["reward", "kl", "completion_length"],
    });
    for (let step = run.startStep; step < c.maxSteps; step++) {
      if (c.stopAfterSteps !== undefined && step >= c.stopAfterSteps) break;
      if (c.maxSeconds !== undefined && (performance.now() - run.t0) / 1000 >= c.maxSeconds) break;
      const batch = await generateAndScoreCompletions(run, step);
      const stats = await optimizeOnBatch(run, batch);
      const metrics = stepMetrics(run, step, batch, stats);
      run.rollouts.release(batch.all);
      await logStep(run, metrics, batch);
      const done = step + 1;
      const last = done === c.maxSteps || done === c.stopAfterSteps;
      if (c.saveSteps && c.outputDir && (done % c.saveSteps === 0 || last)) {
        await saveGrpoCheckpoint(run, done);
      }
    }
  } finally {
    await tearDown(run);
  }
  return {
    steps: run.history.length,
    totalSteps: c.maxSteps,
    history: run.history,
    seconds: (performance.now() - run.t0) / 1000,
    numExamples: rows.length,
    files: run.files,
    checkpointDir: run.checkpointDir,
    exportDir: null,
  };
}

/** The trainable tensors, optimizer, schedule, reference and rollout generator of a run. */
function setUp(model: CausalLM, rows: Row[], c: GrpoConfig): GrpoRun {
  if (c.gradientCheckpointing) model.gradientCheckpointing = true;
  if (c.lora) {
    if (Object.keys(model.lora ?? {}).length === 0) addLora(model, { seed: c.seed, ...c.lora });
    model.loraEnabled = true;
  }
  const frozenHere: tf.Variable[] = [];
  if (c.freezeVision) {
    if (!model.config.vision) {
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
  const lora = Object.keys(model.lora ?? {}).length > 0 && model.loraEnabled;
  // The same tensor names as sft's (PEFT names for adapters), so optimizer states and checkpoints match.
  const trainable = lora
    ? loraParams(model)
    : Object.fromEntries(Object.entries(model.params).filter(([, v]) => v.trainable));
  const updatesPerStep = (c.promptsPerStep / c.miniBatchPrompts) * c.numIterations;
  const rewards = normalizeRewards(c.rewards);
  const sampler = c.sampler ?? (c.curriculum
    ? curriculumSampler(rows, {
      numGenerations: c.numGenerations,
      seed: c.seed,
      ...(c.curriculum === "adaptive" ? {} : c.curriculum),
    })
    : epochSampler(rows, { seed: c.seed, shuffle: c.shuffle }));
  const snapshot = c.beta !== 0 && !c.reference && !lora ? new WeightSnapshot(model.params) : undefined;
  const refPass = (m: CausalLM, b: GrpoBatch) =>
    perTokenLogps(m, b, { temperature: c.temperature, chunkSize: c.chunkSize });
  let referenceLogps: GrpoRun["referenceLogps"];
  if (c.beta !== 0) {
    if (c.reference) referenceLogps = (b) => refPass(c.reference!, b);
    else if (lora) {
      referenceLogps = (b) => {
        model.loraEnabled = false;
        try {
          return refPass(model, b);
        } finally {
          model.loraEnabled = true;
        }
      };
    } else referenceLogps = (b) => snapshot!.with(() => refPass(model, b));
  }
  return {
    model,
    c,
    rows,
    rewards,
    trainable,
    optimizer: adamw({
      params: trainable,
      lr: c.learningRate,
      betas: c.betas,
      eps: c.adamEpsilon,
      weightDecay: c.weightDecay,
    }),
    lrAt: lrSchedule({
      lr: c.learningRate,
      type: c.lrSchedulerType,
      totalSteps: c.maxSteps * updatesPerStep,
      warmupRatio: c.warmupRatio,
      warmupSteps: c.warmupSteps,
    }),
    updatesPerStep,
    sampler,
    rollouts: new RolloutGenerator(model, c, rewards, sampler),
    referenceLogps,
    snapshot,
    frozenHere,
    files: {},
    history: [],
    startStep: 0,
    rowsDrawn: 0,
    checkpointDir: null,
    t0: performance.now(),
  };
}

/**
 * Resume (the one place it happens): weights or adapters and optimizer moments from the checkpoint,
 * then the step, the sampler's position and the metrics so far from its `trainer_state.json`.
 */
async function resume(run: GrpoRun): Promise<void> {
  const dir = await resumeDir(run.c.resumeFrom, run.c.outputDir, "grpo");
  if (!dir) return;
  const state = await loadCheckpoint(dir, { model: run.model, optimizer: run.optimizer });
  const startStep = Number(state.grpoStep);
  // Checkpoints written before the sampler interface stored the default sampler's cursor alone.
  const samplerState = (state.sampler as Record<string, unknown> | undefined) ??
    (state.cursor !== undefined ? { cursor: state.cursor } : undefined);
  if (!Number.isInteger(startStep) || !samplerState) {
    throw new Error(
      `grpo: checkpoint ${dir} has no GRPO position (grpoStep, sampler) in trainer_state.json.`,
    );
  }
  run.sampler.restore(samplerState);
  run.startStep = startStep;
  run.history = (state.history as GrpoStepMetrics[] | undefined) ?? [];
  run.rowsDrawn = Number(state.rowsDrawn ?? samplerState.cursor ?? 0);
  run.checkpointDir = dir;
}

/** `config.json`, and `metrics.jsonl` / `completions.jsonl` (a resumed run rewrites its logs up to the checkpoint). */
async function openOutputs(run: GrpoRun): Promise<void> {
  const dir = run.c.outputDir;
  if (!dir) return;
  await Deno.mkdir(dir, { recursive: true });
  run.files.config = await writeRunConfig(dir, "grpo", run.c as unknown as Record<string, unknown>);
  run.files.metrics = `${dir}/metrics.jsonl`;
  run.files.completions = `${dir}/completions.jsonl`;
  await Deno.writeTextFile(run.files.metrics, run.history.map((m) => JSON.stringify(m) + "\n").join(""));
  if (run.startStep === 0) await Deno.writeTextFile(run.files.completions, "");
  else await truncateJsonlToStep(run.files.completions, run.startStep); // steps after the checkpoint run again
}

/**
 * Phase 1 (TRL's `_generate_and_score_completions`): the step's groups, scored; their advantages; old
 * log-probs and policy entropy (a no-gradient pass); the importance-sampling weights of remote rollouts;
 * reference log-probs.
 */
async function generateAndScoreCompletions(run: GrpoRun, step: number): Promise<ScoredBatch> {
  const { c, model } = run;
  const tGen = performance.now();
  const generated = await run.rollouts.generateGroups(step);
  run.rowsDrawn += generated.seen;
  const batch = generated.groups.flat();
  const trainStart = performance.now();
  const advantages = batch.length
    ? groupAdvantages(batch.map((r) => r.reward), c.numGenerations, { scaleRewards: c.scaleRewards })
    : [];
  let oldLogps: number[][] | null = batch.map((r) => r.logprobs);
  const entropies: number[] = [];
  if (c.recomputeOldLogps && batch.length) {
    oldLogps = [];
    for (let s = 0; s < batch.length; s += c.microBatchSize) {
      const part = batch.slice(s, s + c.microBatchSize);
      const b = modelInputs(c, part, advantages.slice(s, s + c.microBatchSize), null, null);
      let pass;
      try {
        pass = perTokenLogpsAndEntropy(model, b, {
          temperature: c.temperature,
          chunkSize: c.chunkSize,
          entropy: true,
        });
      } finally {
        b.forward?.pixelValues?.dispose();
      }
      oldLogps.push(...await toArray2D(pass.logps));
      const ent = await toArray2D(pass.entropy!);
      part.forEach((r, i) => entropies.push(...ent[i].slice(0, r.tokens.length)));
    }
  }
  if (c.remote && c.importanceSamplingCap !== undefined && c.recomputeOldLogps) {
    // TRL's sequence_mask: weight = exp(sum(trainer logp - sampler logp)), 0 above the cap. Scaling the
    // advantage is the same as scaling the policy term of every token, which is what TRL weights.
    batch.forEach((r, i) => {
      if (c.maskTruncatedCompletions && r.truncated) return;
      let diff = 0;
      for (let t = 0; t < r.tokens.length; t++) diff += oldLogps![i][t] - (r.logprobs[t] ?? oldLogps![i][t]);
      const ratio = Math.exp(diff);
      advantages[i] *= ratio > c.importanceSamplingCap! ? 0 : ratio;
    });
  }
  let refLogps: number[][] | null = null;
  if (run.referenceLogps && batch.length) {
    refLogps = [];
    for (let s = 0; s < batch.length; s += c.microBatchSize) {
      const b = modelInputs(
        c,
        batch.slice(s, s + c.microBatchSize),
        advantages.slice(s, s + c.microBatchSize),
        null,
        null,
      );
      const t = run.referenceLogps(b);
      b.forward?.pixelValues?.dispose();
      refLogps.push(...await toArray2D(t));
    }
  }
  return {
    rollouts: batch,
    all: generated.all,
    advantages,
    oldLogps,
    refLogps,
    entropies,
    seen: generated.seen,
    zeroStd: generated.zeroStd,
    genSeconds: (trainStart - tGen) / 1000,
    trainStart,
  };
}

/**
 * Phase 2: `numIterations` passes over the batch in mini-batches of `miniBatchPrompts` groups, one
 * optimizer update each, its gradient accumulated over micro-batches of `microBatchSize` completions.
 */
async function optimizeOnBatch(run: GrpoRun, batch: ScoredBatch): Promise<UpdateStats> {
  const { c } = run;
  const all = batch.rollouts;
  const stats: UpdateStats = {
    loss: 0,
    kl: 0,
    clipLow: 0,
    clipHigh: 0,
    clipRegion: 0,
    gradNorm: 0,
    learningRate: 0,
    updates: 0,
    trainTokens: 0,
  };
  let measured = 0; // completions whose metrics are summed
  const miniSize = c.miniBatchPrompts * c.numGenerations;
  for (let it = 0; it < c.numIterations && all.length; it++) {
    for (let m = 0; m < all.length; m += miniSize) {
      const mini = all.slice(m, m + miniSize);
      const miniTokens = mini.reduce(
        (s, r) => s + (c.maskTruncatedCompletions && r.truncated ? 0 : r.tokens.length),
        0,
      );
      const microCount = Math.ceil(mini.length / c.microBatchSize);
      let acc: Record<string, tf.Tensor> | null = null;
      for (let s = 0; s < mini.length; s += c.microBatchSize) {
        const part = mini.slice(s, s + c.microBatchSize);
        const at = m + s;
        const b = modelInputs(
          c,
          part,
          batch.advantages.slice(at, at + part.length),
          batch.oldLogps ? batch.oldLogps.slice(at, at + part.length) : null,
          batch.refLogps ? batch.refLogps.slice(at, at + part.length) : null,
        );
        // Each micro-batch's share of the mini-batch loss: dapo divides by the mini-batch's tokens
        // (numItemsInBatch); per-sequence means weigh by sequences; bnpo averages micro-batch means.
        const weight = c.lossType === "dapo"
          ? 1
          : c.lossType === "bnpo"
          ? 1 / microCount
          : part.length / mini.length;
        let metrics: ReturnType<typeof grpoLoss>["metrics"] | undefined;
        const { value, grads } = valueAndGrads(
          () => {
            const out = computeLoss(run, b, miniTokens);
            metrics = out.metrics;
            return weight === 1 ? out.loss : tf.mul(out.loss, weight) as tf.Scalar;
          },
          run.trainable,
          { accumulate: acc },
        );
        b.forward?.pixelValues?.dispose();
        // Added to the running sums inside the backward, each as soon as it is complete (a text-only
        // micro-batch gives the vision tower no gradient: its sum starts at the first one that does).
        acc = grads;
        stats.loss += (await value.data())[0];
        value.dispose();
        const mv = await readMetrics(metrics!);
        stats.kl += mv.kl * part.length;
        stats.clipLow += mv.clipLow * part.length;
        stats.clipHigh += mv.clipHigh * part.length;
        stats.clipRegion += mv.clipRegion * part.length;
        measured += part.length;
        const pi = b.promptIds as number[][];
        stats.trainTokens += pi.length * (pi[0].length + (b.completionIds as number[][])[0].length);
      }
      // The clip factor is applied by the optimizer as it reads each gradient (no scaled copy), as in sft.
      const clip = await clipScale(acc!, c.maxGradNorm);
      stats.gradNorm = clip.norm;
      stats.learningRate = run.lrAt(run.optimizer.stepCount);
      run.optimizer.step(acc!, { lr: stats.learningRate, gradScale: clip.scale });
      tf.dispose(Object.values(acc!));
      stats.updates++;
      run.rollouts.policyVersion++;
    }
  }
  for (const k of ["kl", "clipLow", "clipHigh", "clipRegion"] as const) {
    stats[k] = measured ? stats[k] / measured : 0;
  }
  stats.loss = stats.updates ? stats.loss / stats.updates : 0;
  return stats;
}

/** The GRPO loss of one micro-batch (TRL's `_compute_loss`), normalised by its mini-batch's tokens for `dapo`. */
function computeLoss(run: GrpoRun, b: GrpoBatch, miniBatchTokens: number): ReturnType<typeof grpoLoss> {
  const { c } = run;
  return grpoLoss(run.model, b, {
    lossType: c.lossType,
    beta: c.beta,
    epsilonLow: c.epsilonLow,
    epsilonHigh: c.epsilonHigh,
    klClamp: c.klClamp,
    maxCompletionLength: c.maxNewTokens,
    numItemsInBatch: Math.max(1, miniBatchTokens),
    temperature: c.temperature,
    chunkSize: c.chunkSize,
  });
}

/** The step's metrics under TRL's names. */
function stepMetrics(run: GrpoRun, step: number, batch: ScoredBatch, s: UpdateStats): GrpoStepMetrics {
  const rs = batch.rollouts;
  const lengths = rs.map((r) => r.tokens.length);
  const trainSeconds = (performance.now() - batch.trainStart) / 1000;
  const generated = batch.all.reduce((sum, r) => sum + r.tokens.length, 0);
  const metrics: GrpoStepMetrics = {
    step: step + 1,
    epoch: run.rowsDrawn / run.rows.length,
    loss: s.loss,
    learning_rate: s.learningRate,
    grad_norm: s.gradNorm,
    reward: meanOf(rs.map((r) => r.reward)),
    reward_std: stdOf(rs.map((r) => r.reward)),
    frac_reward_zero_std: batch.seen ? batch.zeroStd / batch.seen : 0,
    kl: s.kl,
    clip_ratio_low: s.clipLow,
    clip_ratio_high: s.clipHigh,
    clip_ratio: s.clipRegion,
    completion_length: meanOf(lengths),
    completion_length_min: lengths.length ? Math.min(...lengths) : 0,
    completion_length_max: lengths.length ? Math.max(...lengths) : 0,
    truncated_ratio: rs.length ? rs.filter((r) => r.truncated).length / rs.length : 0,
    entropy: batch.entropies.length ? meanOf(batch.entropies) : NaN,
    updates: s.updates,
    gen_seconds: batch.genSeconds,
    train_seconds: trainSeconds,
    gen_tokens_per_s: generated / Math.max(batch.genSeconds, 1e-9),
    train_tokens_per_s: s.trainTokens / Math.max(trainSeconds, 1e-9),
  };
  for (const r of run.rewards) {
    const xs = rs.map((b) => b.byName[r.name]);
    metrics[`reward/${r.name}/mean`] = meanOf(xs);
    metrics[`reward/${r.name}/std`] = stdOf(xs);
  }
  Object.assign(metrics, run.sampler.metrics?.());
  return metrics;
}

/** Phase 3: the history, `metrics.jsonl`, sampled completions, the progress line, loggers and `onStep`. */
async function logStep(run: GrpoRun, metrics: GrpoStepMetrics, batch: ScoredBatch): Promise<void> {
  const { c } = run;
  run.history.push(metrics);
  if (run.files.completions) {
    const n = c.numGenerations;
    const k = c.samplesPerStep;
    const lines = batch.rollouts.slice(0, k * n).filter((_, i) => i % n === 0).slice(0, k).map((r) =>
      JSON.stringify({
        step: metrics.step,
        id: r.row.id,
        // one <|image_pad|> per image instead of one per merged patch (hundreds)
        prompt: c.tokenizer.decode(r.promptIds).replace(/(<\|image_pad\|>)+/g, "<|image_pad|>"),
        completion: r.text,
        reward: r.reward,
        ...r.byName,
      })
    );
    if (lines.length) {
      await Deno.writeTextFile(run.files.completions, lines.join("\n") + "\n", { append: true });
    }
  }
  // The shared progress line (lib/util/progress.ts): a bar on a terminal, plain periodic lines otherwise.
  run.progress?.update(metrics.step, metrics);
  for (const logger of c.loggers) await logger.logStep(metrics);
  // After the loggers: a logger may add metrics of its own to the step (validation: eval_accuracy).
  if (run.files.metrics) {
    await Deno.writeTextFile(run.files.metrics, JSON.stringify(metrics) + "\n", { append: true });
  }
  await c.onStep?.(metrics);
}

/** A checkpoint after `step` steps: weights or adapters, optimizer moments, and the GRPO position. */
async function saveGrpoCheckpoint(run: GrpoRun, step: number): Promise<void> {
  const { c } = run;
  const sampler = run.sampler.state();
  const cursor = Number.isInteger(sampler.cursor) ? sampler.cursor as number : run.rowsDrawn;
  run.checkpointDir = await saveCheckpoint(`${c.outputDir}/checkpoint-${step}`, {
    model: run.model,
    optimizer: run.optimizer,
    state: {
      step: run.optimizer.stepCount,
      totalSteps: c.maxSteps * run.updatesPerStep,
      dataPosition: { epoch: Math.floor(cursor / run.rows.length), batch: cursor % run.rows.length },
      rng: { seed: c.seed, epoch: Math.floor(cursor / run.rows.length) },
      losses: run.history.map((m) => m.loss),
      grpoStep: step,
      sampler,
      rowsDrawn: run.rowsDrawn,
      history: run.history,
    },
  });
}

/** Free what the run made and restore what it changed (frozen tensors), also after an error. */
async function tearDown(run: GrpoRun): Promise<void> {
  run.progress?.close();
  run.optimizer.dispose();
  run.snapshot?.dispose();
  run.rollouts.release();
  for (const v of run.frozenHere) v.trainable = true;
  for (const logger of run.c.loggers) await logger.close?.();
}

/** Model inputs of a slice of rollouts (prompt padding and completion width trimmed to the slice). */
function modelInputs(
  c: GrpoConfig,
  rs: Rollout[],
  advantages: number[],
  old: number[][] | null,
  ref: number[][] | null,
): GrpoBatch {
  const pad = c.tokenizer.padTokenId;
  const { ids, mask } = leftPad(rs.map((r) => r.promptIds), pad);
  const width = Math.max(1, ...rs.map((r) => r.tokens.length));
  const fit = (x: number[]) => [...x.slice(0, width), ...new Array(Math.max(0, width - x.length)).fill(0)];
  // Every completion carries its prompt's images, in row order (the model consumes them in order).
  const withImages = rs.filter((r) => r.image);
  return {
    forward: withImages.length
      ? {
        pixelValues: tf.concat(withImages.map((r) => r.image!.pixelValues), 0) as tf.Tensor2D,
        imageGridThw: withImages.flatMap((r) => r.image!.imageGridThw),
      }
      : undefined,
    promptIds: ids,
    promptMask: mask,
    completionIds: rightPad(rs.map((r) => r.tokens), pad).map((r) => r.slice(0, width)),
    completionMask: rs.map((r) => {
      const on = c.maskTruncatedCompletions && r.truncated ? 0 : 1;
      return [...new Array(r.tokens.length).fill(on), ...new Array(width - r.tokens.length).fill(0)];
    }),
    advantages,
    oldLogps: old ? old.map(fit) : undefined,
    refLogps: ref ? ref.map(fit) : undefined,
  };
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
