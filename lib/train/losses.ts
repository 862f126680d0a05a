/**
 * Token-level losses on a causal LM, computed through the vocabulary head in chunks.
 *
 * With a 151,936-token vocabulary the logits of a whole batch (`[B, T, V]`) would take gigabytes, and
 * autograd would keep every chunk alive until the backward pass even if the forward were chunked. So the
 * head is one custom-gradient op: the forward computes log-probs (and entropies) chunk by chunk and keeps
 * only the hidden states; the backward recomputes each chunk's logits. Peak memory is one chunk of
 * `[chunkSize, V]` logits plus the hidden states. Rows whose targets are masked out (the prompt, padding)
 * are skipped entirely when the mask is given as plain numbers.
 *
 * Only elementary ops are used (slice, concat, matMul, oneHot, logSumExp): the wasm backend lacks the
 * gradient of `gather`, and no `gather` appears here.
 *
 * @module
 */
import { tf } from "../deps.ts";
import type { CausalLM, ForwardOptions } from "../model/types.ts";
import { concatMany } from "./_ops.ts";

/** Label value that excludes a position from the loss (Hugging Face convention). */
export const IGNORE_INDEX: number = -100;

/** Default chunk: about 2^25 logits (128 MiB of float32) per piece of the vocabulary head. */
function defaultChunkRows(vocab: number): number {
  return Math.max(1, Math.floor(2 ** 25 / vocab));
}

function slowTransposedMatMul(): boolean {
  return tf.getBackend() === "wasm";
}

/** Options of {@linkcode headLogprobs}. */
export interface HeadLogprobsOptions {
  /** Logits are divided by it before the softmax. Default 1. */
  temperature?: number;
  /** Rows of the head computed at once. Default about 2^25 / V. */
  chunkSize?: number;
  /** Rows to compute (1) or skip (0), as plain numbers; skipped rows give 0 and receive no gradient. */
  rows?: ArrayLike<number>;
  /** Also return the entropy of each row's distribution (not differentiated). */
  entropy?: boolean;
}

/** What {@linkcode headLogprobs} and {@linkcode tokenLogprobs} return. */
export interface TokenLogprobs<T extends tf.Tensor = tf.Tensor> {
  /** log p(target) at the temperature, 0 where masked. Differentiable. */
  logprobs: T;
  /** Entropy of each position's distribution, 0 where masked (only when asked for). */
  entropy?: T;
}

/** Maximal runs `[start, end)` of rows that are selected. */
function runsOf(rows: ArrayLike<number> | undefined, n: number): Array<[number, number, boolean]> {
  if (!rows) return [[0, n, true]];
  const runs: Array<[number, number, boolean]> = [];
  let start = 0;
  for (let i = 1; i <= n; i++) {
    if (i === n || (rows[i] !== 0) !== (rows[start] !== 0)) {
      runs.push([start, i, rows[start] !== 0]);
      start = i;
    }
  }
  return runs;
}

/**
 * log p(target) for each row of `hidden` under the head `weight` (`logits = hidden @ weight^T / temperature`),
 * chunked so that at most `chunkSize` rows of logits exist at a time, in the forward and in the backward pass.
 *
 * @param hidden `[N, H]` hidden states (final norm applied).
 * @param weight `[V, H]` output projection.
 * @param targets `[N]` token ids (int32 tensor or numbers); ids of skipped rows are ignored.
 * @returns `logprobs` `[N]` (and `entropy` `[N]` when asked).
 *
 * @example
 * ```ts
 * import { tf } from "../deps.ts";
 * import { headLogprobs } from "./losses.ts";
 * const h = tf.randomNormal([4, 8]) as tf.Tensor2D;
 * const w = tf.randomNormal([50, 8]) as tf.Tensor2D;
 * const { logprobs } = headLogprobs(h, w, [1, 2, 3, 4], { chunkSize: 2 });
 * ```
 */
export function headLogprobs(
  hidden: tf.Tensor2D,
  weight: tf.Tensor2D,
  targets: tf.Tensor1D | ArrayLike<number>,
  options: HeadLogprobsOptions = {},
): TokenLogprobs<tf.Tensor1D> {
  const [n, h] = hidden.shape;
  const [vocab, hw] = weight.shape;
  if (h !== hw) {
    throw new Error(`The hidden states [${n}, ${h}] do not match the head weight [${vocab}, ${hw}].`);
  }
  const temperature = options.temperature ?? 1;
  if (!(temperature > 0)) throw new Error(`temperature must be > 0, got ${temperature}.`);
  const chunk = Math.max(1, Math.floor(options.chunkSize ?? defaultChunkRows(vocab)));
  const withEntropy = options.entropy ?? false;
  const runs = runsOf(options.rows, n);
  const selected = runs.filter(([, , on]) => on);
  const m = selected.reduce((a, [s, e]) => a + e - s, 0);
  // Selected rows are packed together first, then cut into chunks: the cost per chunk (a [V, H] weight
  // gradient) is paid once per `chunk` rows, however scattered the selected rows are.
  const chunks: Array<[number, number]> = [];
  for (let i = 0; i < m; i += chunk) chunks.push([i, Math.min(m, i + chunk)]);
  const targetRows = targets instanceof tf.Tensor ? null : Array.from(targets);
  const tgt: tf.Tensor1D = m === 0
    ? tf.zeros([0], "int32") as tf.Tensor1D
    : targets instanceof tf.Tensor
    ? tf.tidy(() => pack(targets.toInt().reshape([n, 1])).reshape([m]) as tf.Tensor1D)
    : tf.tensor1d(
      selected.flatMap(([s, e]) => targetRows!.slice(s, e).map((t) => (t >= 0 && t < vocab ? t : 0))),
      "int32",
    );

  // [N, k] -> [M, k]: the selected rows, in order.
  function pack(x: tf.Tensor2D): tf.Tensor2D {
    if (selected.length === 1 && m === n) return x.clone();
    const k = x.shape[1];
    return concatMany(selected.map(([s, e]) => x.slice([s, 0], [e - s, k])));
  }
  // [M, k] -> [N, k]: back in place, zeros on the skipped rows.
  function unpack(x: tf.Tensor2D): tf.Tensor2D {
    if (selected.length === 1 && m === n) return x.clone();
    const k = x.shape[1];
    let at = 0;
    const parts = runs.map(([s, e, on]) => {
      if (!on) return tf.zeros([e - s, k]) as tf.Tensor2D;
      const p = x.slice([at, 0], [e - s, k]);
      at += e - s;
      return p;
    });
    return concatMany(parts);
  }

  // The rows of a chunk: log-softmax pieces needed by both passes.
  function chunkLogits(hp: tf.Tensor2D, w: tf.Tensor2D, tg: tf.Tensor1D, s: number, e: number) {
    const hc = hp.slice([s, 0], [e - s, h]);
    // wasm's matMul with a transposed operand is ~8x slower than without (measured with V = 151,936):
    // there, W (hc^T) and an explicit transpose of the small result are faster.
    const z = slowTransposedMatMul()
      ? tf.matMul(w, hc.transpose()).transpose()
      : tf.matMul(hc, w, false, true);
    const zt = temperature === 1 ? z : z.div(temperature);
    const lse = tf.logSumExp(zt, 1, true);
    const onehot = tf.oneHot(tg.slice([s], [e - s]), vocab).toFloat();
    return { zt, lse, onehot };
  }

  // deno-lint-ignore no-explicit-any
  const op = tf.customGrad(
    ((hid: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
      const hp = m > 0 ? tf.tidy(() => pack(hid as tf.Tensor2D)) : tf.zeros([0, h]) as tf.Tensor2D;
      // The packed rows and targets are saved: the backward runs after the caller has disposed them.
      save([hp, w, tgt]);
      const value = tf.tidy(() => {
        const cols: tf.Tensor2D[] = [];
        for (const [s, e] of chunks) {
          cols.push(tf.tidy(() => {
            const { zt, lse, onehot } = chunkLogits(hp, w as tf.Tensor2D, tgt, s, e);
            const lp = zt.mul(onehot).sum(1, true).sub(lse);
            if (!withEntropy) return lp as tf.Tensor2D;
            // H = lse - sum(p * z): avoids log(0) on underflowed probabilities.
            const ent = lse.sub(zt.sub(lse).exp().mul(zt).sum(1, true));
            return tf.concat([lp, ent], 1) as tf.Tensor2D;
          }));
        }
        const packed = cols.length === 0
          ? tf.zeros([0, withEntropy ? 2 : 1]) as tf.Tensor2D
          : cols.length === 1
          ? cols[0]
          : concatMany(cols);
        const full = m === 0 ? tf.zeros([n, withEntropy ? 2 : 1]) as tf.Tensor2D : unpack(packed);
        return withEntropy ? full.transpose() : full.reshape([n]);
      });
      hp.dispose();
      const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [hs, ws, ts] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D];
        if (m === 0) return [tf.zeros([n, h]), tf.zerosLike(ws)];
        // Only the log-prob row of dy matters: the entropy is not differentiated.
        const dlp = tf.tidy(() =>
          pack((withEntropy ? dy.slice([0, 0], [1, n]) : dy).reshape([n, 1]) as tf.Tensor2D)
        );
        let dW: tf.Tensor2D | null = null;
        const dhParts: tf.Tensor2D[] = [];
        for (const [cs, ce] of chunks) {
          const [dh, next] = tf.tidy(() => {
            const { zt, lse, onehot } = chunkLogits(hs, ws, ts, cs, ce);
            const p = zt.sub(lse).exp();
            // d logp / d z = (onehot - softmax) / temperature, scaled by the upstream gradient.
            const g = dlp.slice([cs, 0], [ce - cs, 1]).div(temperature);
            const dz = onehot.sub(p).mul(g) as tf.Tensor2D;
            const dhc = tf.matMul(dz, ws) as tf.Tensor2D;
            const hc = hs.slice([cs, 0], [ce - cs, h]);
            const dWc = (slowTransposedMatMul()
              ? tf.matMul(dz.transpose(), hc)
              : tf.matMul(dz, hc, true, false)) as tf.Tensor2D;
            return [dhc, dW ? dW.add(dWc) as tf.Tensor2D : dWc];
          });
          dW?.dispose();
          dW = next;
          dhParts.push(dh);
        }
        dlp.dispose();
        const dH = tf.tidy(() => unpack(dhParts.length === 1 ? dhParts[0] : concatMany(dhParts)));
        tf.dispose(dhParts);
        return [dH, dW!];
      };
      return { value, gradFunc };
    }) as any,
  );

  const out = op(hidden, weight);
  tgt.dispose();
  if (!withEntropy) return { logprobs: out as tf.Tensor1D };
  const res = tf.tidy(() => ({
    logprobs: out.slice([0, 0], [1, n]).reshape([n]) as tf.Tensor1D,
    // The entropy carries no gradient: the op's gradient reads only the log-prob row of dy.
    entropy: out.slice([1, 0], [1, n]).reshape([n]) as tf.Tensor1D,
  }));
  out.dispose();
  return res;
}

/** Options of {@linkcode tokenLogprobs}. */
export interface TokenLogprobsOptions {
  /** `[B, T]` token ids of the whole sequences (prompt + completion). */
  inputIds: number[][] | tf.Tensor2D;
  /** `[B, T]` 1 = real token, 0 = padding. Default all ones. */
  attentionMask?: number[][] | tf.Tensor2D;
  /**
   * `[B, C]` tokens to score: the LAST `C` positions of the sequence, each predicted from the position before it
   * (TRL's `logits_to_keep`). Default: `inputIds[:, 1:]` (every next token, C = T - 1).
   */
  targets?: number[][] | tf.Tensor2D;
  /** `[B, C]` 1 = score, 0 = skip (gives 0). As numbers, skipped positions cost nothing. */
  mask?: number[][] | tf.Tensor2D;
  /** Logits are divided by it (the sampling temperature). Default 1. */
  temperature?: number;
  /** Rows of the vocabulary head computed at once. Default about 2^25 / V. */
  chunkSize?: number;
  /** Also return per-token entropies (not differentiated). */
  entropy?: boolean;
  /** Extra forward options (positions, images) passed to `model.hidden`. */
  forward?: Omit<ForwardOptions, "attentionMask">;
}

function toNumbers2d(x: number[][] | tf.Tensor2D | undefined): number[][] | undefined {
  return x === undefined || x instanceof tf.Tensor ? undefined : x;
}

/**
 * Per-token log-probabilities (and optionally entropies) of given tokens under a causal LM, without ever
 * materialising `[B, T, V]` logits. Differentiable with `tf.variableGrads`; GRPO's policy term uses it.
 *
 * @returns `logprobs` `[B, C]` (0 where `mask` is 0) and, when asked, `entropy` `[B, C]`.
 *
 * @example
 * ```ts ignore
 * const { logprobs } = tokenLogprobs(model, {
 *   inputIds: [[5, 6, 7, 8]], targets: [[7, 8]], mask: [[1, 1]],
 * });
 * ```
 */
export function tokenLogprobs(model: CausalLM, options: TokenLogprobsOptions): TokenLogprobs<tf.Tensor2D> {
  const ids = options.inputIds;
  const [b, t] = ids instanceof tf.Tensor ? ids.shape : [ids.length, ids[0]?.length ?? 0];
  const tg = options.targets;
  const c = tg === undefined ? t - 1 : tg instanceof tf.Tensor ? tg.shape[1] : (tg[0]?.length ?? 0);
  if (c < 1 || c > t - 1) {
    throw new Error(
      `targets must have between 1 and ${t - 1} columns for inputIds of length ${t}, got ${c}.`,
    );
  }
  const maskNums = toNumbers2d(options.mask);
  const hidden = model.hidden(ids, { ...options.forward, attentionMask: options.attentionMask });
  const out = tf.tidy(() => {
    const hsel = hidden.slice([0, t - 1 - c, 0], [b, c, hidden.shape[2]]).reshape([b * c, hidden.shape[2]]);
    let targets: tf.Tensor1D | number[];
    if (tg === undefined) {
      targets = ids instanceof tf.Tensor
        ? ids.slice([0, 1], [b, c]).reshape([b * c]) as tf.Tensor1D
        : ids.flatMap((r) => r.slice(1));
    } else {
      targets = tg instanceof tf.Tensor ? tg.reshape([b * c]) as tf.Tensor1D : tg.flat();
    }
    const res = headLogprobs(hsel as tf.Tensor2D, model.lmHeadWeight(), targets, {
      temperature: options.temperature,
      chunkSize: options.chunkSize,
      entropy: options.entropy,
      rows: maskNums?.flat(),
    });
    let lp = res.logprobs.reshape([b, c]) as tf.Tensor2D;
    let ent = res.entropy?.reshape([b, c]) as tf.Tensor2D | undefined;
    if (options.mask instanceof tf.Tensor) {
      const m = options.mask.toFloat();
      lp = lp.mul(m);
      ent = ent?.mul(m);
    }
    return ent ? { logprobs: lp, entropy: ent } : { logprobs: lp };
  });
  hidden.dispose();
  return out;
}

/** Options of {@linkcode sftLoss}. */
export interface SftLossOptions {
  /** `[B, T]` token ids. */
  inputIds: number[][] | tf.Tensor2D;
  /** `[B, T]` 1 = real token, 0 = padding. Default all ones. */
  attentionMask?: number[][] | tf.Tensor2D;
  /** `[B, T]` target ids, -100 = ignored; position t is predicted from t - 1 (Hugging Face shift). */
  labels: number[][] | tf.Tensor2D;
  /**
   * Divide the summed token loss by this instead of the count of labelled tokens in this batch: with
   * gradient accumulation, pass the count over the whole global batch (as the Hugging Face Trainer does).
   */
  numItems?: number;
  /** Rows of the vocabulary head computed at once. Default about 2^25 / V. */
  chunkSize?: number;
  /** Extra forward options (Qwen2.5-VL `pixelValues` / `imageGridThw`, positions) passed to `model.hidden`. */
  forward?: Omit<ForwardOptions, "attentionMask">;
}

/** The count of labels that enter the loss (not -100, after the shift). */
export function countLabelTokens(labels: number[][]): number {
  let n = 0;
  for (const row of labels) for (let t = 1; t < row.length; t++) if (row[t] !== IGNORE_INDEX) n++;
  return n;
}

/**
 * Masked causal-LM cross entropy with the Hugging Face shift: `logits[:, t]` against `labels[:, t + 1]`,
 * averaged over labels that are not -100. A scalar, differentiable with `tf.variableGrads`.
 *
 * @example
 * ```ts ignore
 * const { value, grads } = tf.variableGrads(() => sftLoss(model, { inputIds, attentionMask, labels }));
 * ```
 */
export function sftLoss(model: CausalLM, options: SftLossOptions): tf.Scalar {
  const { labels } = options;
  if (labels instanceof tf.Tensor) {
    const [b, t] = labels.shape;
    const tgt = tf.tidy(() => labels.slice([0, 1], [b, t - 1]).toInt());
    const mask = tf.tidy(() => tgt.notEqual(IGNORE_INDEX).toFloat()) as tf.Tensor2D;
    const { logprobs } = tokenLogprobs(model, {
      inputIds: options.inputIds,
      attentionMask: options.attentionMask,
      targets: tgt as tf.Tensor2D,
      mask,
      chunkSize: options.chunkSize,
      forward: options.forward,
    });
    const loss = tf.tidy(() => {
      const denom = options.numItems !== undefined ? tf.scalar(options.numItems) : mask.sum().maximum(1);
      return logprobs.sum().neg().div(denom) as tf.Scalar;
    });
    tf.dispose([tgt, mask, logprobs]);
    return loss;
  }
  const shifted = labels.map((r) => r.slice(1));
  const mask = shifted.map((r) => r.map((x) => (x === IGNORE_INDEX ? 0 : 1)));
  const count = countLabelTokens(labels);
  if (count === 0 && options.numItems === undefined) {
    throw new Error("sftLoss: every label is -100, there is nothing to learn from in this batch.");
  }
  const { logprobs } = tokenLogprobs(model, {
    inputIds: options.inputIds,
    attentionMask: options.attentionMask,
    targets: shifted,
    mask,
    chunkSize: options.chunkSize,
    forward: options.forward,
  });
  const loss = tf.tidy(() => logprobs.sum().neg().div(options.numItems ?? count) as tf.Scalar);
  logprobs.dispose();
  return loss;
}
