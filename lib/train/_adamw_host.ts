/**
 * AdamW's host path: the update of each parameter as one fused loop over `Float32Array`s, for the backends
 * whose tensors live in CPU memory (`cpu`, `wasm`, `tensorflow`).
 *
 * Besides the moments, the optimizer keeps a host copy of each parameter (as PyTorch's CPU AdamW works on
 * the parameter's own memory). Reading a parameter back every step cost as much as the update itself: on
 * the `tensorflow` binding `dataSync` allocates a new array and copies the tensor into it (for
 * Qwen2.5-0.5B, 2 GB into freshly faulted pages per step), and the update then needed a third array for
 * its result. With the copy, a step reads only the gradient (in slices, see {@linkcode READ_CHUNK}),
 * updates parameter and moments in place, and hands the parameter to the backend as a new tensor.
 *
 * The copy is valid while the parameter still holds the tensor this path assigned (same `dataId`): an
 * `assign` from anywhere else (a checkpoint load, LoRA merge, user code) changes the `dataId`, and the next
 * step reads the parameter again, as part of the same loop.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { HostStep, NativeAdamw } from "./_adamw_native.ts";

export type { HostStep };

/** A parameter's host copy and moments, and the tensor (by `dataId`) the copy was last handed out as. */
export interface HostParam {
  values: Float32Array;
  m: Float32Array;
  v: Float32Array;
  dataId: object | null;
  /** The moments have never been written (all zero): the next update need not read them. */
  zeroMoments: boolean;
}

/**
 * Host state of a parameter of `n` elements. The copy starts 4 bytes into its buffer: tfjs-node hands a
 * tensor's JS array to TensorFlow's `TF_NewTensor`, which SHARES the memory when it is 64-byte aligned and
 * copies it otherwise; this array is never aligned (buffers are 16-byte aligned, +4 is not), so the
 * parameter tensor made from it never aliases the copy that the next step updates in place.
 */
export function hostParam(n: number): HostParam {
  return {
    values: new Float32Array(n + 1).subarray(1),
    m: new Float32Array(n),
    v: new Float32Array(n),
    dataId: null,
    zeroMoments: true,
  };
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
 * Elements read back at a time. On the `tensorflow` binding every read allocates a new array and copies
 * into it; one read of a whole `[151936, 896]` gradient (545 MB) took 0.35-1.5 s, mostly faulting in the
 * new pages, against 0.2-0.4 s for the same data read as 16 MB slices (whose memory the allocator
 * reuses). Slices also keep the host memory of a step to one slice instead of a gradient copy.
 */
const READ_CHUNK = 1 << 22;

/** Elements `[off, off + len)` of `t` (flattened) as a host array (only to be read). */
function readSlice(t: tf.Tensor, off: number, len: number): Float32Array {
  if (off === 0 && len === t.size) return t.dataSync() as Float32Array;
  const part = tf.tidy(() => t.reshape([t.size]).slice(off, len));
  const data = part.dataSync() as Float32Array;
  part.dispose();
  return data;
}

/**
 * One AdamW update of `p` with gradient `g`: the host copy `hp` (read from `p` first when it is not `p`'s
 * current value) and its moments are updated in place, then `p` is assigned a tensor of the new values.
 * `native`: the same loop in C where it could be built (`_adamw_native.ts`: the same bits, 4-5x faster);
 * otherwise the JavaScript loops below.
 */
export function hostUpdate(
  p: tf.Variable,
  g: tf.Tensor,
  hp: HostParam,
  k: HostStep,
  native: NativeAdamw | null = null,
): void {
  const stale = hp.dataId !== p.dataId;
  const n = hp.values.length;
  for (let off = 0; off < n; off += READ_CHUNK) {
    const len = Math.min(READ_CHUNK, n - off);
    const end = off + len;
    const from = stale ? readSlice(p, off, len) : hp.values.subarray(off, end);
    const gd = readSlice(g, off, len);
    const to = hp.values.subarray(off, end), m = hp.m.subarray(off, end), v = hp.v.subarray(off, end);
    if (native) native(from, to, m, v, gd, k, hp.zeroMoments);
    else if (hp.zeroMoments) firstUpdateRange(from, to, m, v, gd, k);
    else updateRange(from, to, m, v, gd, k);
  }
  hp.zeroMoments = false;
  const next = tensorFromHost(hp.values, p.shape);
  p.assign(next);
  next.dispose();
  hp.dataId = p.dataId;
}

/**
 * The fused update of one range: parameter values `from` (the copy itself, or the values read from the
 * tensor) written to `to`, moments `m`, `v` in place, gradients `gd`; all arrays are views of the range.
 */
export function updateRange(
  from: Float32Array,
  to: Float32Array,
  m: Float32Array,
  v: Float32Array,
  gd: Float32Array,
  k: HostStep,
): void {
  const { b1, b2, eps, stepSize, bc2Sqrt, keep, scale } = k;
  const c1 = 1 - b1, c2 = 1 - b2;
  for (let j = 0; j < gd.length; j++) {
    const gi = Math.fround(gd[j] * scale);
    const mi = m[j] = b1 * m[j] + c1 * gi;
    const vi = v[j] = b2 * v[j] + c2 * gi * gi;
    to[j] = from[j] * keep - stepSize * mi / (Math.sqrt(vi) / bc2Sqrt + eps);
  }
}

/**
 * {@linkcode updateRange} for moments that are still zero (`m = (1 - b1) g`, `v = (1 - b2) g^2`, bit for
 * bit what the general loop computes): they are written without being read. Memory that was never
 * written reads as the kernel's shared zero page, and the write that follows faults a second time. Clip +
 * AdamW's first update of Qwen2.5-0.5B's shapes (4 GB of new moments): 8.1 s reading them, 6.3 s not
 * (later updates 3.7 s; 2-core benchmark machine).
 */
export function firstUpdateRange(
  from: Float32Array,
  to: Float32Array,
  m: Float32Array,
  v: Float32Array,
  gd: Float32Array,
  k: HostStep,
): void {
  const { b1, b2, eps, stepSize, bc2Sqrt, keep, scale } = k;
  const c1 = 1 - b1, c2 = 1 - b2;
  for (let j = 0; j < gd.length; j++) {
    const gi = Math.fround(gd[j] * scale);
    const mi = m[j] = c1 * gi;
    const vi = v[j] = c2 * gi * gi;
    to[j] = from[j] * keep - stepSize * mi / (Math.sqrt(vi) / bc2Sqrt + eps);
  }
}
