/**
 * AdamW's host path: the update of one parameter as one fused loop over `Float32Array`s, for the backends
 * whose tensors live in CPU memory (`cpu`, `wasm`, `tensorflow`).
 *
 * Besides the moments, the optimizer keeps a host copy of each parameter (as PyTorch's CPU AdamW works on
 * the parameter's own memory). Reading a parameter back every step cost as much as the update itself: on
 * the `tensorflow` binding `dataSync` allocates a new array and copies the tensor into it (for
 * Qwen2.5-0.5B, 2 GB into freshly faulted pages per step), and the update then needed a third array for
 * its result. With the copy, a step reads only the gradient, updates parameter and moments in place, and
 * hands the parameter to the backend as a new tensor.
 *
 * The copy is valid while the parameter still holds the tensor this path assigned (same `dataId`): an
 * `assign` from anywhere else (a checkpoint load, LoRA merge, user code) changes the `dataId`, and the next
 * step reads the parameter again.
 *
 * @module
 */
import { tf } from "../deps.ts";

/** Constants of one AdamW step (the same for every element of a parameter). */
export interface HostStep {
  b1: number;
  b2: number;
  eps: number;
  /** `lr / (1 - b1^t)`. */
  stepSize: number;
  /** `sqrt(1 - b2^t)`. */
  bc2Sqrt: number;
  /** `1 - lr * weightDecay`. */
  keep: number;
  /**
   * Factor applied to the gradient first (global-norm clipping folded into the update), already rounded
   * to float32: `fround(g * scale)` is then bit for bit the float32 product a separate `g.mul(scale)` gives.
   */
  scale: number;
}

/** A parameter's host copy and the tensor (by `dataId`) it was last handed to the backend as. */
export interface HostParam {
  values: Float32Array;
  dataId: object | null;
}

/**
 * A host array for a parameter of `n` elements, starting 4 bytes into its buffer. tfjs-node hands a
 * tensor's JS array to TensorFlow's `TF_NewTensor`, which SHARES the memory when it is 64-byte aligned and
 * copies it otherwise; this array is never aligned (buffers are 16-byte aligned, +4 is not), so the
 * parameter tensor made from it never aliases the copy that the next step updates in place.
 */
export function hostParamArray(n: number): Float32Array {
  return new Float32Array(n + 1).subarray(1);
}

/**
 * A tensor holding a copy of `values` (which the caller goes on changing in place): on `tensorflow` the
 * copy into TensorFlow happens at the tensor's first use, so a `reshape` (an op, and no other work) makes
 * it happen now; `wasm` copies into its heap when the tensor is made; `cpu` would keep the array itself.
 */
export function tensorFromHost(values: Float32Array, shape: number[]): tf.Tensor {
  const backend = tf.getBackend();
  if (backend === "tensorflow") return tf.tidy(() => tf.tensor(values, shape, "float32").reshape(shape));
  if (backend === "wasm") return tf.tensor(values, shape, "float32");
  return tf.tensor(values.slice(), shape, "float32");
}

/**
 * One AdamW update of `p` with gradient `g`: `m`, `v` and the host copy `hp` are updated in place, then `p`
 * is assigned a tensor of the new values. Reads `p` only when `hp` is not its current value.
 */
export function hostUpdate(
  p: tf.Variable,
  g: tf.Tensor,
  hp: HostParam,
  m: Float32Array,
  v: Float32Array,
  k: HostStep,
): void {
  const pd = hp.values;
  if (hp.dataId !== p.dataId) pd.set(p.dataSync() as Float32Array);
  const gd = g.dataSync() as Float32Array;
  const { b1, b2, eps, stepSize, bc2Sqrt, keep, scale } = k;
  const c1 = 1 - b1, c2 = 1 - b2;
  for (let i = 0; i < pd.length; i++) {
    const gi = Math.fround(gd[i] * scale);
    const mi = m[i] = b1 * m[i] + c1 * gi;
    const vi = v[i] = b2 * v[i] + c2 * gi * gi;
    pd[i] = pd[i] * keep - stepSize * mi / (Math.sqrt(vi) / bc2Sqrt + eps);
  }
  const next = tensorFromHost(pd, p.shape);
  p.assign(next);
  next.dispose();
  hp.dataId = p.dataId;
}
