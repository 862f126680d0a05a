/**
 * Token-level losses on a causal LM, computed through the vocabulary head in chunks.
 *
 * With a 151,936-token vocabulary the logits of a whole batch (`[B, T, V]`) would take gigabytes, and
 * autograd would keep every piece alive until the backward pass even if the forward were chunked. So the
 * head is one custom-gradient op over slices of the vocabulary: the forward computes log-probs (and
 * entropies) slice by slice; the backward builds each slice of the weight gradient once. The logits are
 * kept between the passes when they fit in 1 GiB (as PyTorch keeps them), else recomputed slice by slice,
 * so that peak memory is one `[rows, slice]` piece plus the hidden states. Rows whose targets are masked
 * out (the prompt, padding) are skipped entirely when the mask is given as plain numbers.
 *
 * The gradient is written by hand (the wasm backend lacks the gradient of `gather`; the forward's gather
 * of target rows needs none).
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { CausalLM, ForwardOptions } from "../model/types.ts";
import { addMany, concatMany } from "./_ops.ts";

/** Label value that excludes a position from the loss (Hugging Face convention). */
export const IGNORE_INDEX: number = -100;

/** Default chunk: about 2^25 logits (128 MiB of float32) per piece of the vocabulary head. */
function defaultChunkRows(vocab: number): number {
  return Math.max(1, Math.floor(2 ** 25 / vocab));
}

/** Logits kept from the forward pass for the backward when there are at most this many (1 GiB of float32). */
const KEEP_LOGITS_MAX = 2 ** 28;

function slowTransposedMatMul(): boolean {
  return tf.getBackend() === "wasm";
}

/** Options of {@linkcode headLogprobs}. */
export interface HeadLogprobsOptions {
  /** Logits are divided by it before the softmax. Default 1. */
  temperature?: number;
  /**
   * Bounds each piece of logits to `chunkSize * V` values (the head is computed in slices of the vocabulary,
   * all rows at once). Default about 2^25 / V, i.e. 128 MiB pieces.
   */
  chunkSize?: number;
  /** Rows to compute (1) or skip (0), as plain numbers; skipped rows give 0 and receive no gradient. */
  rows?: ArrayLike<number>;
  /** Also return the entropy of each row's distribution (not differentiated). */
  entropy?: boolean;
  /**
   * Keep the forward pass's logits for the backward instead of recomputing them (a third less matmul work
   * in the head, `rows * V` floats held between the passes). Default: when they take at most 1 GiB.
   */
  keepLogits?: boolean;
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
 * computed in slices of the vocabulary so that at most `chunkSize * V` logits exist at a time.
 *
 * Forward: for each vocabulary slice, the logits of every row, their log-sum-exp (combined across slices)
 * and, for entropies, their softmax-weighted sum; the target logit is picked with a gather, not a one-hot
 * product. Backward: per slice, `dz = (onehot - exp(z - lse)) g`, `dW_slice = dz^T h`, `dh += dz W_slice`;
 * `dW` is the slices concatenated, written once. The logits are recomputed in the backward unless kept
 * (`keepLogits`).
 *
 * @param hidden `[N, H]` hidden states (final norm applied).
 * @param weight `[V, H]` output projection.
 * @param targets `[N]` token ids (int32 tensor or numbers); ids of skipped rows are ignored.
 * @returns `logprobs` `[N]` (and `entropy` `[N]` when asked).
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
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
  // Selected rows are packed together; the vocabulary is cut into slices of at most chunk * V logits for
  // all of them. dW is then built slice by slice (concatenated once) instead of summed over row chunks,
  // each sum moving a whole [V, H] matrix.
  const width = m === 0 ? vocab : Math.max(2, Math.min(vocab, Math.floor((chunk * vocab) / m)));
  const slices: Array<[number, number]> = [];
  for (let v = 0; v < vocab; v += width) slices.push([v, Math.min(vocab, v + width)]);
  // tf.oneHot needs a depth of at least 2: a last slice of one column joins the one before it.
  if (slices.length > 1 && slices[slices.length - 1][1] - slices[slices.length - 1][0] < 2) {
    slices.pop();
    slices[slices.length - 1][1] = vocab;
  }
  // Kept only under a gradient tape: a forward-only call (reference / old log-probs) would hold them for nothing.
  // deno-lint-ignore no-explicit-any
  const taped = ((tf.engine() as any).state?.gradientDepth ?? 1) > 0;
  const keep = taped && (options.keepLogits ?? m * vocab <= KEEP_LOGITS_MAX);
  const targetRows = targets instanceof tf.Tensor ? null : Array.from(targets);
  const tgt: tf.Tensor1D = m === 0
    ? tf.zeros([0], "int32") as tf.Tensor1D
    : targets instanceof tf.Tensor
    ? tf.tidy(() =>
      pack(targets.toInt().reshape([n, 1])).reshape([m]).clipByValue(0, vocab - 1).toInt() as tf.Tensor1D
    )
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

  // `[M, vs]` logits (at the temperature) of the vocabulary slice [v0, v1) for every packed row.
  function sliceLogits(hp: tf.Tensor2D, w: tf.Tensor2D, v0: number, v1: number): tf.Tensor2D {
    const ws = v0 === 0 && v1 === vocab ? w : w.slice([v0, 0], [v1 - v0, h]);
    // wasm's matMul with a transposed operand is ~8x slower than without (measured with V = 151,936):
    // there, W (hp^T) and an explicit transpose of the small result are faster.
    const z = slowTransposedMatMul()
      ? tf.matMul(ws, hp.transpose()).transpose()
      : tf.matMul(hp, ws, false, true);
    return (temperature === 1 ? z : z.div(temperature)) as tf.Tensor2D;
  }

  // deno-lint-ignore no-explicit-any
  const op = tf.customGrad(
    ((hid: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
      const hp = m > 0 ? tf.tidy(() => pack(hid as tf.Tensor2D)) : tf.zeros([0, h]) as tf.Tensor2D;
      const kept: tf.Tensor2D[] = [];
      // Per slice: its log-sum-exp and (for entropies) sum(softmax_slice * z); combined across slices below.
      const lseParts: tf.Tensor2D[] = [];
      const ezParts: tf.Tensor2D[] = [];
      if (m > 0) {
        for (const [v0, v1] of slices) {
          tf.tidy(() => {
            const z = sliceLogits(hp, w as tf.Tensor2D, v0, v1);
            const lse = tf.logSumExp(z, 1, true) as tf.Tensor2D;
            lseParts.push(tf.keep(lse));
            if (withEntropy) ezParts.push(tf.keep(z.sub(lse).exp().mul(z).sum(1, true) as tf.Tensor2D));
            if (keep) kept.push(tf.keep(z));
          });
        }
      }
      const lse: tf.Tensor2D = m === 0
        ? tf.zeros([0, 1]) as tf.Tensor2D
        : lseParts.length === 1
        ? lseParts[0].clone()
        : tf.tidy(() => tf.logSumExp(concatMany(lseParts, 1), 1, true) as tf.Tensor2D);
      // The packed rows, targets and log-sum-exps are saved: the backward runs after the caller has disposed
      // the inputs.
      save([hp, w, tgt, lse, ...kept]);
      const value = tf.tidy(() => {
        if (m === 0) {
          const zero = tf.zeros([n, withEntropy ? 2 : 1]) as tf.Tensor2D;
          return withEntropy ? zero.transpose() : zero.reshape([n]);
        }
        // The target's logit: its row of W against the hidden state (a gather, no [M, V] one-hot product).
        let picked = tf.gather(w, tgt).mul(hp).sum(1, true);
        if (temperature !== 1) picked = picked.div(temperature);
        const lp = picked.sub(lse) as tf.Tensor2D;
        let packed = lp;
        if (withEntropy) {
          // H = lse - sum_j p_j z_j = lse - sum_slices exp(lse_s - lse) * E_s (no log(0) on underflow).
          const ez = addManyWeighted(lseParts, ezParts, lse);
          packed = tf.concat([lp, lse.sub(ez)], 1) as tf.Tensor2D;
        }
        const full = unpack(packed);
        return withEntropy ? full.transpose() : full.reshape([n]);
      });
      tf.dispose([hp, lse, ...lseParts, ...ezParts, ...kept]);
      const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [hs, ws, ts, ls] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor2D];
        const zs = saved.slice(4) as tf.Tensor2D[];
        if (m === 0) return [tf.zeros([n, h]), tf.zerosLike(ws)];
        // Only the log-prob row of dy matters: the entropy is not differentiated.
        // d logp / d z = (onehot - softmax), and dz / d(hW^T) = 1 / temperature.
        const g = tf.tidy(() =>
          pack((withEntropy ? dy.slice([0, 0], [1, n]) : dy).reshape([n, 1]) as tf.Tensor2D).div(temperature)
        );
        let dh: tf.Tensor2D | null = null;
        const dWParts: tf.Tensor2D[] = [];
        slices.forEach(([v0, v1], i) => {
          const [dWs, next] = tf.tidy(() => {
            const z = zs.length ? zs[i] : sliceLogits(hs, ws, v0, v1);
            const p = z.sub(ls).exp();
            // Made as float32 directly (not int32 then cast: one pass less over [M, slice]); wasm's kernel
            // writes int32 bits whatever the dtype, so it still casts.
            const at = v0 === 0 ? ts : ts.sub(tf.scalar(v0, "int32"));
            const onehot = tf.getBackend() === "wasm"
              ? tf.oneHot(at, v1 - v0).toFloat()
              : tf.oneHot(at, v1 - v0, 1, 0, "float32");
            const dz = onehot.sub(p).mul(g) as tf.Tensor2D;
            const wsl = v0 === 0 && v1 === vocab ? ws : ws.slice([v0, 0], [v1 - v0, h]);
            const dhs = tf.matMul(dz, wsl) as tf.Tensor2D;
            const dW = (slowTransposedMatMul()
              ? tf.matMul(dz.transpose(), hs)
              : tf.matMul(dz, hs, true, false)) as tf.Tensor2D;
            return [dW, dh ? dh.add(dhs) as tf.Tensor2D : dhs];
          });
          dh?.dispose();
          dh = next;
          dWParts.push(dWs);
        });
        g.dispose();
        const dW = dWParts.length === 1 ? dWParts[0] : concatMany(dWParts, 0);
        if (dWParts.length > 1) tf.dispose(dWParts);
        const dH = tf.tidy(() => unpack(dh!));
        (dh as tf.Tensor2D | null)?.dispose();
        return [dH, dW];
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

/** `sum_s exp(lse_s - lse) * e_s`: per-slice softmax-weighted sums combined into the whole row's. */
function addManyWeighted(lseParts: tf.Tensor2D[], parts: tf.Tensor2D[], lse: tf.Tensor2D): tf.Tensor2D {
  return addMany(parts.map((e, i) => lseParts[i].sub(lse).exp().mul(e) as tf.Tensor2D));
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
