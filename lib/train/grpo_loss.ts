/**
 * The GRPO objective, term by term as `RECIPE.md` and TRL's documentation write it:
 *
 * - advantage `A_i = (r_i - mean(r_group)) / (std(r_group) + eps)` (or batch std, or no scaling);
 * - ratio `rho = exp(logp - logp_old)`, clipped to `[1 - epsilonLow, 1 + epsilonHigh]`;
 * - per-token loss `-min(rho * A, clip(rho) * A) + beta * (exp(ref - logp) - (ref - logp) - 1)`;
 * - aggregation `grpo` (mean over sequences of each sequence's token mean), `bnpo` (token mean over the
 *   batch), `dr_grpo` (token sum / (sequences x max completion length)) or `dapo` (token mean over the
 *   whole optimizer mini-batch, the recipe's choice).
 *
 * Checked against `fixtures/qwen2-tiny/train_golden.json` key `grpo`.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { CausalLM, ForwardOptions } from "../model/types.ts";
import { tokenLogprobs } from "./losses.ts";
import { mean, std } from "../util/math.ts";

/** How rewards are scaled into advantages. */
export type ScaleRewards = "group" | "batch" | "none";

/** Options of {@linkcode groupAdvantages}. */
export interface GroupAdvantagesOptions {
  /** `group` divides by each group's std (the recipe), `batch` by the whole batch's std, `none` not at all. Default `group`. */
  scaleRewards?: ScaleRewards;
  /** Added to the std before dividing. Default 1e-4 (TRL). */
  eps?: number;
}

/**
 * GRPO advantages: each reward minus its group's mean, divided by the group's (unbiased) std plus eps.
 * Rows `g * numGenerations .. (g + 1) * numGenerations - 1` are the completions of prompt `g`.
 *
 * @example
 * ```ts
 * import { groupAdvantages } from "./grpo_loss.ts";
 * const adv = groupAdvantages([1, 0, 0, 1], 2); // ≈ [0.707, -0.707, -0.707, 0.707]
 * ```
 */
export function groupAdvantages(
  rewards: number[],
  numGenerations: number,
  options: GroupAdvantagesOptions = {},
): number[] {
  const { scaleRewards = "group", eps = 1e-4 } = options;
  if (!Number.isInteger(numGenerations) || numGenerations < 1 || rewards.length % numGenerations !== 0) {
    throw new Error(
      `groupAdvantages: ${rewards.length} rewards do not split into groups of numGenerations = ${numGenerations}.`,
    );
  }
  const batchStd = std(rewards);
  const out: number[] = [];
  for (let g = 0; g < rewards.length; g += numGenerations) {
    const group = rewards.slice(g, g + numGenerations);
    const m = mean(group);
    const s = scaleRewards === "group" ? std(group) : batchStd;
    for (const r of group) out.push(scaleRewards === "none" ? r - m : (r - m) / (s + eps));
  }
  return out;
}

/** Prompt and completion token ids of a GRPO batch (prompts left-padded, completions right-padded). */
export interface CompletionBatch {
  /** `[N, Tp]` left-padded prompt ids (one row per completion). */
  promptIds: number[][] | tf.Tensor2D;
  /** `[N, Tp]` 1 on real prompt tokens. */
  promptMask: number[][] | tf.Tensor2D;
  /** `[N, Tc]` right-padded completion ids. */
  completionIds: number[][] | tf.Tensor2D;
  /** `[N, Tc]` 1 on completion tokens that count (through the stop token). */
  completionMask: number[][] | tf.Tensor2D;
  /**
   * Qwen2.5-VL image inputs of the rows with images (`pixelValues` and `imageGridThw`, image after
   * image in row order), passed to `model.hidden`. Omitted for text-only batches.
   */
  forward?: Omit<ForwardOptions, "attentionMask">;
}

/** Options of {@linkcode perTokenLogps}. */
export interface PerTokenLogpsOptions {
  /** Logits are divided by it before the softmax (the sampling temperature). Default 1. */
  temperature?: number;
  /** Completion positions per vocabulary-head chunk: bounds the `[chunk, V]` logits in memory. Default 256. */
  chunkSize?: number;
  /** Also return the entropy of each position's distribution (no gradient needed). Default false. */
  entropy?: boolean;
}

function toInt2D(x: number[][] | tf.Tensor2D): tf.Tensor2D {
  return x instanceof tf.Tensor ? tf.cast(x, "int32") as tf.Tensor2D : tf.tensor2d(x, undefined, "int32");
}

function toFloat2D(x: number[][] | tf.Tensor2D): tf.Tensor2D {
  return x instanceof tf.Tensor ? tf.cast(x, "float32") as tf.Tensor2D : tf.tensor2d(x, undefined, "float32");
}

/**
 * Log-probabilities and entropies of given rows of hidden states under the output head, a chunk of
 * rows at a time so that the full `[rows, V]` logits never exist at once. The taken token's logit is
 * picked with a one-hot product rather than a gather, whose gradient the wasm backend lacks.
 */
function headLogps(
  h: tf.Tensor2D,
  tokens: tf.Tensor1D,
  head: tf.Tensor2D,
  temperature: number,
  chunkSize: number,
  wantEntropy: boolean,
): { logps: tf.Tensor1D; entropy?: tf.Tensor1D } {
  const rows = h.shape[0];
  const vocab = head.shape[0];
  const logps: tf.Tensor1D[] = [];
  const ents: tf.Tensor1D[] = [];
  for (let s = 0; s < rows; s += chunkSize) {
    const n = Math.min(chunkSize, rows - s);
    // One tidy per chunk: only this chunk's [n, V] logits are alive at a time.
    const piece = tf.tidy(() => {
      const hc = h.slice([s, 0], [n, -1]);
      const tc = tokens.slice([s], [n]);
      let logits = tf.matMul(hc, head, false, true) as tf.Tensor2D;
      if (temperature !== 1) logits = tf.div(logits, temperature);
      const lse = tf.logSumExp(logits, 1);
      const picked = tf.sum(tf.mul(logits, tf.oneHot(tc, vocab, 1, 0, "float32")), 1);
      const lp = tf.sub(picked, lse) as tf.Tensor1D;
      if (!wantEntropy) return [lp];
      // H = lse - sum(p * logits): no log of underflowed probabilities.
      const p = tf.exp(tf.sub(logits, tf.expandDims(lse, 1)));
      return [lp, tf.sub(lse, tf.sum(tf.mul(p, logits), 1)) as tf.Tensor1D];
    });
    logps.push(piece[0]);
    if (wantEntropy) ents.push(piece[1]);
  }
  return {
    logps: logps.length === 1 ? logps[0] : tf.concat(logps, 0),
    entropy: wantEntropy ? (ents.length === 1 ? ents[0] : tf.concat(ents, 0)) : undefined,
  };
}

/**
 * Per-token log-probabilities `[N, Tc]` of the completion tokens under `model` (log-softmax at
 * `temperature` of the token actually taken), from one forward pass over prompt + completion.
 * Differentiable with `tf.variableGrads`. Values at masked completion positions are computed but
 * meaningless; the losses multiply them by the mask.
 *
 * @example
 * ```ts ignore
 * const logps = perTokenLogps(model, { promptIds, promptMask, completionIds, completionMask });
 * ```
 */
export function perTokenLogps(
  model: CausalLM,
  batch: CompletionBatch,
  options: PerTokenLogpsOptions = {},
): tf.Tensor2D {
  return perTokenLogpsAndEntropy(model, batch, options).logps;
}

/**
 * {@linkcode perTokenLogps} plus, when `options.entropy`, the per-token entropy `[N, Tc]`. The entropy
 * path computes plain chunked log-softmaxes (meant for no-gradient passes: old log-probs and logging);
 * the differentiable path goes through `tokenLogprobs`, whose custom gradient keeps memory bounded.
 */
export function perTokenLogpsAndEntropy(
  model: CausalLM,
  batch: CompletionBatch,
  options: PerTokenLogpsOptions = {},
): { logps: tf.Tensor2D; entropy?: tf.Tensor2D } {
  const { temperature = 1, chunkSize = 256, entropy = false } = options;
  const pIds = toInt2D(batch.promptIds);
  const cIds = toInt2D(batch.completionIds);
  const pMask = toFloat2D(batch.promptMask);
  const cMask = toFloat2D(batch.completionMask);
  try {
    const [n, tp] = pIds.shape;
    const tc = cIds.shape[1];
    if (cIds.shape[0] !== n || pMask.shape[0] !== n || cMask.shape[0] !== n) {
      throw new Error(
        `perTokenLogps: promptIds, promptMask, completionIds and completionMask must have the same number of rows (${n}, ${
          pMask.shape[0]
        }, ${cIds.shape[0]}, ${cMask.shape[0]}).`,
      );
    }
    const ids = tf.concat([pIds, cIds], 1) as tf.Tensor2D;
    const mask = tf.concat([pMask, cMask], 1) as tf.Tensor2D;
    // A multimodal forward places the images and 3-D positions from the ids and mask on the host: given
    // as numbers they need no synchronous read (which webgpu lacks).
    const fwd = batch.forward;
    const host = fwd && [batch.promptIds, batch.completionIds, batch.promptMask, batch.completionMask]
        .every(Array.isArray)
      ? {
        ids: (batch.promptIds as number[][]).map((r, i) => r.concat((batch.completionIds as number[][])[i])),
        mask: (batch.promptMask as number[][]).map((r, i) =>
          r.concat((batch.completionMask as number[][])[i])
        ),
      }
      : undefined;
    // Numbers let tokenLogprobs skip padded completion positions entirely.
    const scoreMask = Array.isArray(batch.completionMask) ? batch.completionMask : cMask;
    if (!entropy) {
      const out = tokenLogprobs(model, {
        inputIds: host?.ids ?? ids,
        attentionMask: host?.mask ?? mask,
        targets: cIds,
        mask: scoreMask,
        temperature,
        chunkSize,
        forward: fwd,
      });
      ids.dispose();
      mask.dispose();
      return { logps: out.logprobs };
    }
    const kept = tf.tidy(() => {
      const hidden = model.hidden(host?.ids ?? ids, { ...fwd, attentionMask: host?.mask ?? mask });
      const hDim = hidden.shape[2];
      // The hidden state at position t predicts token t+1: completion token j is predicted at tp - 1 + j.
      const h = hidden.slice([0, tp - 1, 0], [n, tc, hDim]).reshape([n * tc, hDim]) as tf.Tensor2D;
      const o = headLogps(
        h,
        cIds.reshape([n * tc]) as tf.Tensor1D,
        model.lmHeadWeight(),
        temperature,
        chunkSize,
        true,
      );
      return [tf.mul(o.logps.reshape([n, tc]), cMask), tf.mul(o.entropy!.reshape([n, tc]), cMask)];
    });
    ids.dispose();
    mask.dispose();
    return { logps: kept[0] as tf.Tensor2D, entropy: kept[1] as tf.Tensor2D };
  } finally {
    tf.dispose([pIds, cIds, pMask, cMask]);
  }
}

/** Identity whose gradient is zero (PyTorch's `detach`), which tfjs lacks. */
const stopGradient = tf.customGrad(
  ((x: tf.Tensor) => ({
    value: tf.clone(x),
    gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
    // deno-lint-ignore no-explicit-any
  })) as any,
) as (x: tf.Tensor) => tf.Tensor;

/** The loss aggregations of GRPO and its descendants. */
export type GrpoLossType = "grpo" | "bnpo" | "dr_grpo" | "dapo";

/** A batch for {@linkcode grpoLoss}: completions with their advantages and fixed old / reference log-probs. */
export interface GrpoBatch extends CompletionBatch {
  /** `[N]` one advantage per completion. */
  advantages: number[];
  /** `[N, Tc]` log-probs of the policy that sampled the completions; omitted = the current policy (ratio 1). */
  oldLogps?: number[][];
  /** `[N, Tc]` log-probs under the reference model; needed when `beta` is not 0. */
  refLogps?: number[][];
}

/** Options of {@linkcode grpoLoss}; names follow TRL's `GRPOConfig`. */
export interface GrpoLossOptions {
  /** Aggregation. Default `dapo` (the recipe's token-mean). */
  lossType?: GrpoLossType;
  /** KL coefficient. Default 0.01 (the recipe); 0 skips the reference model. */
  beta?: number;
  /** Lower clip of the ratio: 1 - epsilonLow. Default 0.2. */
  epsilonLow?: number;
  /** Upper clip of the ratio: 1 + epsilonHigh. Default = epsilonLow. */
  epsilonHigh?: number;
  /** Clamp the k3 KL term to [-klClamp, klClamp] (the recipe used 10). Default: no clamp. */
  klClamp?: number;
  /** `dr_grpo`'s constant denominator per sequence. Default: the batch's completion width Tc. */
  maxCompletionLength?: number;
  /**
   * `dapo`: the number of completion tokens in the whole optimizer mini-batch (this batch may be one
   * micro-batch of it), so that accumulated micro-batch losses sum to the mini-batch's token mean.
   * Default: this batch's token count.
   */
  numItemsInBatch?: number;
  /** Sampling temperature (logits are divided by it). Default 1. */
  temperature?: number;
  /** Vocabulary-head chunk size of {@linkcode perTokenLogps}. Default 256. */
  chunkSize?: number;
}

/**
 * What {@linkcode grpoLoss} measures alongside the loss, as scalar tensors kept out of any enclosing
 * `tf.tidy` / `tf.variableGrads` (read them with {@linkcode readMetrics}, which disposes them).
 */
export interface GrpoLossMetrics {
  /** Masked token mean of the k3 KL term (0 when beta is 0). */
  kl: tf.Scalar;
  /** Fraction of tokens whose ratio fell below 1 - epsilonLow with a negative advantage. */
  clipLow: tf.Scalar;
  /** Fraction of tokens whose ratio rose above 1 + epsilonHigh with a positive advantage. */
  clipHigh: tf.Scalar;
  /** Fraction of tokens clipped either way. */
  clipRegion: tf.Scalar;
}

/** Read and dispose the metric tensors of {@linkcode grpoLoss} (async: works on webgpu). */
export async function readMetrics(metrics: GrpoLossMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(metrics)) {
    if (!v) continue;
    out[k] = (await (v as tf.Scalar).data())[0];
    (v as tf.Scalar).dispose();
  }
  return out;
}

/**
 * The GRPO loss of one batch, differentiable with `tf.variableGrads`:
 * `tf.variableGrads(() => grpoLoss(model, batch, opts).loss)`. Metrics are returned as kept scalar
 * tensors (see {@linkcode GrpoLossMetrics}); dispose them, or read them with {@linkcode readMetrics}.
 *
 * @example
 * ```ts ignore
 * const { loss, metrics } = grpoLoss(model, { ...batch, advantages, oldLogps, refLogps }, { lossType: "dapo", beta: 0.01 });
 * ```
 */
export function grpoLoss(
  model: CausalLM,
  batch: GrpoBatch,
  options: GrpoLossOptions = {},
): { loss: tf.Scalar; metrics: GrpoLossMetrics } {
  const {
    lossType = "dapo",
    beta = 0.01,
    epsilonLow = 0.2,
    klClamp,
    temperature = 1,
    chunkSize = 256,
  } = options;
  const epsilonHigh = options.epsilonHigh ?? epsilonLow;
  if (!["grpo", "bnpo", "dr_grpo", "dapo"].includes(lossType)) {
    throw new Error(`grpoLoss: unknown lossType '${lossType}'; choose grpo, bnpo, dr_grpo or dapo.`);
  }
  if (beta !== 0 && !batch.refLogps) {
    throw new Error(
      "grpoLoss: batch.refLogps is missing but beta is not 0; give the reference log-probs or set beta to 0.",
    );
  }
  const logps = perTokenLogps(model, batch, { temperature, chunkSize });
  let metrics!: GrpoLossMetrics;
  const loss = tf.tidy(() => {
    const mask = toFloat2D(batch.completionMask);
    const [n, tc] = mask.shape;
    const A = tf.tensor2d(batch.advantages, [n, 1]);
    // Without old log-probs the update is on-policy: old = logp with no gradient, so the ratio is 1.
    const old = batch.oldLogps ? tf.tensor2d(batch.oldLogps, [n, tc]) : stopGradient(logps);
    const ratio = tf.exp(tf.sub(logps, old));
    const clipped = tf.clipByValue(ratio, 1 - epsilonLow, 1 + epsilonHigh);
    const surrogate = tf.neg(tf.minimum(tf.mul(ratio, A), tf.mul(clipped, A)));
    let klTerm: tf.Tensor = tf.zerosLike(logps);
    if (beta !== 0) {
      const d = tf.sub(tf.tensor2d(batch.refLogps!, [n, tc]), logps); // ref - logp
      klTerm = tf.sub(tf.sub(tf.exp(d), d), 1); // k3 estimator
      if (klClamp !== undefined) klTerm = tf.clipByValue(klTerm, -klClamp, klClamp);
    }
    const perToken = beta !== 0 ? tf.add(surrogate, tf.mul(beta, klTerm)) : surrogate;
    const masked = tf.mul(perToken, mask);
    const tokens = tf.maximum(tf.sum(mask), 1);
    let value: tf.Tensor;
    if (lossType === "grpo") value = tf.mean(tf.div(tf.sum(masked, 1), tf.maximum(tf.sum(mask, 1), 1)));
    else if (lossType === "bnpo") value = tf.div(tf.sum(masked), tokens);
    else if (lossType === "dr_grpo") value = tf.div(tf.sum(masked), n * (options.maxCompletionLength ?? tc));
    else value = tf.div(tf.sum(masked), Math.max(options.numItemsInBatch ?? 0, 0) || tokens);

    const tokenMean = (x: tf.Tensor) => tf.keep(tf.div(tf.sum(tf.mul(x, mask)), tokens) as tf.Scalar);
    const low = tf.logicalAnd(tf.less(ratio, 1 - epsilonLow), tf.less(A, 0)).toFloat();
    const high = tf.logicalAnd(tf.greater(ratio, 1 + epsilonHigh), tf.greater(A, 0)).toFloat();
    metrics = {
      kl: tokenMean(klTerm),
      clipLow: tokenMean(low),
      clipHigh: tokenMean(high),
      clipRegion: tokenMean(tf.add(low, high)),
    };
    return value as tf.Scalar;
  });
  logps.dispose();
  return { loss, metrics };
}
