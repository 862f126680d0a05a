/**
 * The steps of a decoder layer between its matrix products, each one function: on the `webgpu` backend
 * the fused programs of lib/model/webgpu_fused.ts (one dispatch each instead of 3 to 6 tfjs kernels;
 * attention one dispatch per layer), elsewhere the plain tf ops. Gradients are those of the tf ops,
 * written out (`tf.customGrad`), so that training on webgpu runs the fused forward passes too.
 *
 * `MEDTHINK_WEBGPU_FUSED=0` turns the programs off (then every function is its tf ops).
 *
 * On the `tensorflow` backend, {@linkcode rowMatMulBT} sends single-row products (decoding one sequence) to
 * TensorFlow's 2-D `MatMul` (`MEDTHINK_TF_ROW_MATMUL=0` turns that off).
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { env as envVar } from "../util/env.ts";
import {
  ATTENTION_MAX_HEAD_DIM,
  attentionProgram,
  rmsNormGradProgram,
  rmsNormProgram,
  rotaryGradProgram,
  rotaryProgram,
  swigluGradProgram,
  swigluProgram,
  widenHalfProgram,
} from "./webgpu_fused.ts";
import {
  type PackedWeight,
  smallLinear,
  smallMatMulApplies,
  smallMatMulInstalled,
  tiledMatMulInstalled,
} from "./webgpu_matmul.ts";
import { tiledMatMul, tiledPlan } from "./webgpu_tiled.ts";

let forced: boolean | null = null;

/**
 * Whether the fused programs run now: on the `webgpu` backend, unless `MEDTHINK_WEBGPU_FUSED=0` (or
 * {@linkcode setFused} said otherwise).
 *
 * @example
 * ```ts
 * import { fusedOn } from "./fused.ts";
 * console.log(fusedOn()); // false on cpu
 * ```
 */
export function fusedOn(): boolean {
  if (tf.getBackend() !== "webgpu") return false;
  return forced ?? envVar("MEDTHINK_WEBGPU_FUSED") !== "0";
}

/**
 * Turn the fused programs on or off for this process (null: back to `MEDTHINK_WEBGPU_FUSED`); the
 * tests and the probe compare both ways.
 *
 * @example
 * ```ts
 * import { setFused } from "./fused.ts";
 * setFused(false);
 * setFused(null);
 * ```
 */
export function setFused(on: boolean | null): void {
  forced = on;
}

/** `tf.customGrad` for functions of several tensors (its declared type takes a single tensor list). */
// deno-lint-ignore no-explicit-any
const customGrad = tf.customGrad as unknown as (
  f: (...args: any[]) => unknown,
) => (...xs: tf.Tensor[]) => tf.Tensor;

/** Sum `g` over the axes along which a tensor of `shape` was broadcast to `g`'s shape. */
function sumToShape(g: tf.Tensor, shape: number[]): tf.Tensor {
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  return tf.reshape(axes.length ? tf.sum(g, axes) : g, shape);
}

/** `[x2, x1]` of `x`'s last axis halves. */
function swapHalves(x: tf.Tensor): tf.Tensor {
  const d = x.shape[x.rank - 1];
  const [x1, x2] = tf.split(x, [d / 2, d / 2], x.rank - 1);
  return tf.concat([x2, x1], x.rank - 1);
}

/** RMSNorm with tf ops: the reference, and what other backends run. */
function rmsNormOps(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  const variance = tf.mean(tf.square(x), -1, true);
  return tf.mul(weight, tf.mul(x, tf.rsqrt(tf.add(variance, eps))));
}

const rmsNormFused = (eps: number) =>
  customGrad((x: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x, w]);
    return {
      value: rmsNormProgram(x, w, eps),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw] = saved;
        // dn/dx with n = x / rms: r (g - n mean(g n)), g = dy w: one program; dw = Σ dy n.
        const dx = rmsNormGradProgram(sx, sw, dy, eps);
        const dw = sumToShape(tf.mul(dy, rmsNormProgram(sx, tf.onesLike(sw), eps)), sw.shape);
        return [dx, dw];
      },
    };
  });

/**
 * RMSNorm `weight * x / sqrt(mean(x²) + eps)` over the last axis (`weight` `[H]`), differentiable.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { rmsNorm } from "./fused.ts";
 * const y = rmsNorm(tf.ones([2, 4]), tf.ones([4]), 1e-6);
 * ```
 */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  const rows = x.size / x.shape[x.rank - 1];
  if (!fusedOn() || x.dtype !== "float32" || rows > 65535 || weight.rank !== 1) {
    return rmsNormOps(x, weight, eps);
  }
  return rmsNormFused(eps)(x, weight);
}

const swigluFused = customGrad((g: tf.Tensor, u: tf.Tensor, save: tf.GradSaveFunc) => {
  save([g, u]);
  return {
    value: swigluProgram(g, u),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sg, su] = saved;
      // d silu / dg = s (1 + g (1 - s)), s = sigmoid(g): one program per gradient.
      return [swigluGradProgram(sg, su, dy, "gate"), swigluGradProgram(sg, su, dy, "up")];
    },
  };
});

/**
 * SwiGLU `silu(gate) * up` (same shapes), differentiable.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { swiglu } from "./fused.ts";
 * const y = swiglu(tf.ones([2, 4]), tf.ones([2, 4]));
 * ```
 */
export function swiglu(gate: tf.Tensor, up: tf.Tensor): tf.Tensor {
  if (!fusedOn() || gate.dtype !== "float32" || !tf.util.arraysEqual(gate.shape, up.shape)) {
    return tf.mul(tf.mul(gate, tf.sigmoid(gate)), up);
  }
  return swigluFused(gate, up);
}

const rotaryFused = customGrad((x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, cos, sin]);
  return {
    value: rotaryProgram(x as tf.Tensor4D, cos, sin),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sx, sc, ss] = saved;
      // y = x c + swap(x) s, swap its own inverse: dx = dy c + swap(dy s) (one program).
      const dx = rotaryGradProgram(dy as tf.Tensor4D, sc, ss);
      return [dx, sumToShape(tf.mul(dy, sx), sc.shape), sumToShape(tf.mul(dy, swapHalves(sx)), ss.shape)];
    },
  };
});

/**
 * Rotary embedding `x * cos + [x2, x1] * sinSigned` (`sinSigned` = `[-sin1, sin2]`, so that this is
 * `x cos + rotate_half(x) sin`), `x` `[B, heads, T, D]`, factors `[B, 1, T or 1, D]`, differentiable.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { applyRotary } from "./fused.ts";
 * const y = applyRotary(tf.ones([1, 2, 3, 4]), tf.ones([1, 1, 3, 4]), tf.zeros([1, 1, 3, 4]));
 * ```
 */
export function applyRotary(x: tf.Tensor4D, cos: tf.Tensor, sinSigned: tf.Tensor): tf.Tensor4D {
  const [b, , t, d] = x.shape;
  const fits = fusedOn() && x.dtype === "float32" && cos.rank === 4 && sinSigned.rank === 4 &&
    tf.util.arraysEqual(cos.shape, sinSigned.shape) && cos.shape[0] === b && cos.shape[1] === 1 &&
    (cos.shape[2] === t || cos.shape[2] === 1) && cos.shape[3] === d && d % 2 === 0;
  if (!fits) return tf.add(tf.mul(x, cos), tf.mul(swapHalves(x), sinSigned)) as tf.Tensor4D;
  return rotaryFused(x, cos, sinSigned) as tf.Tensor4D;
}

/** Probabilities `softmax(q kᵀ + bias)` `[B, KV, R, S]` with tf ops (bias `[B, 1, T, S]`, R = G·T). */
function attentionProbs(q: tf.Tensor4D, k: tf.Tensor4D, bias: tf.Tensor4D): tf.Tensor {
  const [b, kv, r] = q.shape;
  const [, , t, s] = bias.shape;
  const scores = tf.reshape(tf.matMul(q, k, false, true), [b, kv, r / t, t, s]);
  const probs = tf.softmax(tf.add(scores, tf.reshape(bias, [b, 1, 1, t, s])));
  return tf.reshape(probs, [b, kv, r, s]);
}

const attentionFused = customGrad(
  (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, bias: tf.Tensor, save: tf.GradSaveFunc) => {
    save([q, k, v, bias]);
    return {
      value: attentionProgram(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, bias as tf.Tensor4D),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sb] = saved as tf.Tensor4D[];
        const [b, kv, r] = sq.shape;
        const [, , t, s] = sb.shape;
        const p = attentionProbs(sq, sk, sb); // recomputed, as FlashAttention's backward pass does
        const dv = tf.matMul(p, dy, true, false);
        const dp = tf.matMul(dy, sv, false, true);
        const ds = tf.mul(p, tf.sub(dp, tf.sum(tf.mul(dp, p), -1, true)));
        const dq = tf.matMul(ds, sk);
        const dk = tf.matMul(ds, sq, true, false);
        const dbias = tf.reshape(tf.sum(tf.reshape(ds, [b, kv * (r / t), t, s]), 1), sb.shape);
        return [dq, dk, dv, dbias];
      },
    };
  },
);

/**
 * Whether {@linkcode attention} runs the fused program for these shapes now (webgpu, fused on, float32,
 * head dim at most 256); when not, callers use their own tf ops (lib/model/qwen2.ts keeps its wasm
 * fast paths).
 *
 * @example
 * ```ts
 * import { attentionFusable } from "./fused.ts";
 * console.log(attentionFusable([1, 2, 2, 64])); // false on cpu
 * ```
 */
export function attentionFusable(qShape: number[]): boolean {
  return fusedOn() && qShape.length === 4 && qShape[3] <= ATTENTION_MAX_HEAD_DIM && qShape[2] <= 65535;
}

/**
 * Attention `softmax(q kᵀ + bias) v` for one layer, differentiable: `q` `[B, KV, R, D]` (the G query heads
 * of a key/value head stacked along the rows, R = G·T, row r at query position `r mod T`; already scaled
 * by 1/sqrt(D)), `k`, `v` `[B, KV, S, D]` (the cache included), `bias` `[B, 1, T, S]` additive (causal and
 * padding mask). Returns `[B, KV, R, D]`. One dispatch on webgpu ({@linkcode attentionFusable}), else tf
 * ops.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { attention } from "./fused.ts";
 * const y = attention(tf.ones([1, 1, 2, 4]), tf.ones([1, 1, 3, 4]), tf.ones([1, 1, 3, 4]), tf.zeros([1, 1, 2, 3]));
 * ```
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, bias: tf.Tensor4D): tf.Tensor4D {
  if (attentionFusable(q.shape) && q.dtype === "float32") {
    return attentionFused(q, k, v, bias) as tf.Tensor4D;
  }
  return tf.matMul(attentionProbs(q, k, bias), v) as tf.Tensor4D;
}

/** A weight kept as 16-bit codes, two per int32 word (the shape of lib/model/types.ts's `HalfWeight`). */
export type PackedHalf = PackedWeight;

/**
 * A linear layer `x Wᵀ (+ bias)` for `x` `[M, K]` in one dispatch on webgpu: a float32 `W` `[N, K]` with
 * its bias added as the outputs are written (with the fused programs on; the small-M program for
 * decode-sized M, the tiled one for more rows), or a packed 16-bit `W` read as it is stored by the small-M
 * program (with or without a bias). Differentiable: `dx = dy W`,
 * `dW = dyᵀ x` (float32 weights), `db = Σ dy`; a packed weight is frozen. Null where it does not apply
 * (other backends, more rows, the small-M program not installed, nothing to gain): the caller multiplies
 * and adds as usual.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { linearSmall } from "./fused.ts";
 * console.log(linearSmall(tf.ones([1, 4]) as tf.Tensor2D, tf.ones([2, 4]), tf.zeros([2]))); // null on cpu
 * ```
 */
export function linearSmall(x: tf.Tensor2D, w: tf.Tensor | PackedHalf, bias?: tf.Tensor): tf.Tensor2D | null {
  if (tf.getBackend() !== "webgpu" || !smallMatMulInstalled() || x.dtype !== "float32" || x.rank !== 2) {
    return null;
  }
  const packed = w instanceof tf.Tensor ? null : w;
  if (!packed && (!bias || !fusedOn())) return null; // a plain product: the installed kernel takes it
  if (bias && !fusedOn()) bias = undefined;
  const shape = packed ? packed.shape : (w as tf.Tensor).shape;
  if (shape.length !== 2 || (packed && shape[1] % 4 !== 0)) return null;
  if (bias && (bias.rank !== 1 || bias.size !== shape[0] || bias.dtype !== "float32")) return null;
  const small = smallMatMulApplies(x.shape, shape, { transposeB: true });
  // More rows (prefill, training): a float32 weight's product and bias in one dispatch of the tiled program.
  const tiled = !small && !packed && bias !== undefined && tiledMatMulInstalled() &&
    tiledPlan(x.shape, shape, false, true) !== null;
  if (!small && !tiled) return null;
  const wide =
    () => (packed ? widenHalfProgram(packed.packed, packed.shape, packed.dtype) : (w as tf.Tensor));
  const dBias = (dy: tf.Tensor) => tf.sum(dy, 0);
  if (packed) {
    const f = bias
      ? customGrad((xx: tf.Tensor, b: tf.Tensor) => ({
        value: smallLinear(xx, packed, b)!,
        gradFunc: (dy: tf.Tensor) => [tf.matMul(dy, wide()), dBias(dy)],
      }))
      : customGrad((xx: tf.Tensor) => ({
        value: smallLinear(xx, packed)!,
        gradFunc: (dy: tf.Tensor) => tf.matMul(dy, wide()),
      }));
    return (bias ? f(x, bias) : f(x)) as tf.Tensor2D;
  }
  const f = customGrad((xx: tf.Tensor, ww: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
    save([xx, ww]);
    return {
      value: small ? smallLinear(xx, ww, b)! : tiledMatMul(xx, ww, { transposeB: true, bias: b }),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [
        tf.matMul(dy, saved[1]),
        tf.matMul(dy, saved[0], true, false),
        dBias(dy),
      ],
    };
  });
  return f(x, w as tf.Tensor, bias!) as tf.Tensor2D;
}

/**
 * `x Wᵀ` for `x` `[M, K]` and a packed 16-bit weight `W` `[N, K]`: {@linkcode linearSmall} without a bias.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { halfMatMulBT } from "./fused.ts";
 * const w = { packed: tf.zeros([4], "int32"), shape: [2, 4], dtype: "bfloat16" as const };
 * console.log(halfMatMulBT(tf.ones([1, 4]) as tf.Tensor2D, w)); // null on cpu
 * ```
 */
export function halfMatMulBT(x: tf.Tensor2D, w: PackedHalf): tf.Tensor2D | null {
  return linearSmall(x, w);
}

let rowForced: boolean | null = null;

/**
 * Turn {@linkcode rowMatMulBT} on or off for this process (null: back to `MEDTHINK_TF_ROW_MATMUL`); the
 * tests compare both ways.
 *
 * @example
 * ```ts
 * import { setRowMatMul } from "./fused.ts";
 * setRowMatMul(false);
 * setRowMatMul(null);
 * ```
 */
export function setRowMatMul(on: boolean | null): void {
  rowForced = on;
}

/** The parts of tfjs-node's backend that {@linkcode rowMatMulBT} calls. */
interface TfNodeExec {
  binding: { TF_FLOAT: number; TF_ATTR_TYPE: number; TF_ATTR_BOOL: number };
  executeSingleOutput(
    name: string,
    attrs: { name: string; type: number; value: unknown }[],
    inputs: tf.Tensor[],
  ): tf.Tensor;
}

/**
 * `x Wᵀ` for one row `x` `[1, K]` and a float32 `W` `[N, K]` through TensorFlow's 2-D `MatMul` op, or
 * null where it does not apply (another backend, more rows, a gradient tape recording, not float32,
 * `MEDTHINK_TF_ROW_MATMUL=0`). tfjs sends every product to `BatchMatMulV2`, which for a single row is
 * about 2x slower than `MatMul` (measured on the 0.5B decode's shapes; for 8 or more rows `MatMul` is
 * the slower one, so it stays single-row). Not differentiable: under a tape the caller's tf op runs.
 *
 * @example
 * ```ts
 * import { tf } from "../util/deps.ts";
 * import { rowMatMulBT } from "./fused.ts";
 * console.log(rowMatMulBT(tf.ones([1, 4]) as tf.Tensor2D, tf.ones([2, 4]) as tf.Tensor2D)); // null on cpu
 * ```
 */
export function rowMatMulBT(x: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D | null {
  if (tf.getBackend() !== "tensorflow" || x.rank !== 2 || w.rank !== 2 || x.shape[0] !== 1) return null;
  if (x.dtype !== "float32" || w.dtype !== "float32" || x.shape[1] !== w.shape[1]) return null;
  if (!(rowForced ?? envVar("MEDTHINK_TF_ROW_MATMUL") !== "0")) return null;
  // deno-lint-ignore no-explicit-any
  if ((tf.engine() as any).isTapeOn()) return null;
  const be = tf.backend() as unknown as Partial<TfNodeExec>;
  if (typeof be.executeSingleOutput !== "function" || !be.binding) return null;
  const b = be.binding;
  return be.executeSingleOutput("MatMul", [
    { name: "T", type: b.TF_ATTR_TYPE, value: b.TF_FLOAT },
    { name: "transpose_a", type: b.TF_ATTR_BOOL, value: false },
    { name: "transpose_b", type: b.TF_ATTR_BOOL, value: true },
  ], [x, w]) as tf.Tensor2D;
}
