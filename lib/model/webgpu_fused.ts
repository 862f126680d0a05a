/**
 * Fused WGSL programs for what a decoder layer does between its matrix products, on tfjs-webgpu: each
 * replaces several tfjs kernels (one dispatch each, plus the intermediate tensors) by one dispatch.
 *
 * - RMSNorm with its weight: one workgroup per row (tf ops: square, mean, add, rsqrt, mul, mul: 6).
 * - SwiGLU `silu(gate) * up` (tf ops: sigmoid, mul, mul: 3).
 * - Rotary embedding `x cos + [x2, x1] sinSigned`, factors broadcast over heads (split, concat, mul, mul,
 *   add: 5).
 * - Attention `softmax(q kᵀ + bias) v` for a layer, keys and values in place (the KV cache included):
 *   one workgroup per query row walks the keys in chunks of 64 with an online softmax (a running maximum
 *   and sum, rescaling the accumulated output as in FlashAttention), so that no `[rows, keys]` score
 *   matrix is ever written. The same program serves a decode step (one row per query head) and a
 *   prefill (every row); for long prefills a version that tiles queries too (each key read once per
 *   tile of rows, not per row) would read K and V less often: not written.
 *
 * These are the forward passes only; lib/model/fused.ts wraps them with gradients made of tf ops and
 * falls back to plain tf ops on other backends. All float32.
 *
 * @module
 */
import { tf } from "../util/deps.ts";

// The parts of tfjs-webgpu's types used here, written out: the package is imported only by
// lib/model/backend.ts, when the webgpu backend is chosen.
interface TensorInfo {
  dataId: object;
  shape: number[];
  dtype: string;
}
interface Uniform {
  type: "int32" | "float32";
  data: number[];
}
interface WebGPUBackendLike {
  runWebGPUProgram(program: object, inputs: TensorInfo[], dtype: string, uniforms?: Uniform[]): TensorInfo;
}

/** Threads per workgroup of the elementwise programs. */
const EW = 256;
/** Workgroups along x before an elementwise dispatch wraps into y. */
const EW_X = 32768;
/** WebGPU's guaranteed maximum of workgroups per dispatch dimension. */
const MAX_DISPATCH = 65535;
/** Keys per chunk of the attention program (= its threads). */
const ATT_WG = 64;
/** Most query rows one workgroup of the attention program takes. */
const ATT_ROWS = 8;
/** Largest head dimension of the attention program (4 output values per thread). */
export const ATTENTION_MAX_HEAD_DIM = 4 * ATT_WG;

/** A program of this module: tfjs-webgpu's `WebGPUProgram` interface, duck-typed. */
class Program {
  outputShape: number[];
  // Flat: tfjs calls `main(globalIndex)`; the programs compute their own indices from the workgroup ids.
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number];
  uniforms: string;
  shaderKey: string;

  constructor(
    public variableNames: string[],
    outputShape: number[],
    dispatch: [number, number, number],
    workgroup: number,
    uniforms: string,
    key: string,
    private code: string,
  ) {
    this.outputShape = outputShape;
    this.dispatch = dispatch;
    this.workgroupSize = [workgroup, 1, 1];
    this.uniforms = uniforms;
    this.shaderKey = key;
  }

  getUserCode(): string {
    return this.code;
  }
}

function backend(): WebGPUBackendLike {
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`The fused programs run on the 'webgpu' backend, not on '${tf.getBackend()}'.`);
  }
  return tf.backend() as unknown as WebGPUBackendLike;
}

function run(program: Program, inputs: tf.Tensor[], uniforms: Uniform[]): tf.Tensor {
  const out = backend().runWebGPUProgram(program, inputs as unknown as TensorInfo[], "float32", uniforms);
  return tf.engine().makeTensorFromTensorInfo(out as never, tf.backend());
}

/** Workgroups for `n` elementwise outputs, wrapped into y past {@linkcode EW_X}. */
function ewDispatch(n: number): [number, number, number] {
  const groups = Math.max(1, Math.ceil(n / EW));
  const x = Math.min(groups, EW_X);
  return [x, Math.ceil(groups / x), 1];
}

const EW_INDEX = `let i = i32((workgroupId.y * numWorkgroups.x + workgroupId.x) * ${EW}u + localIndex);`;

function float32(t: tf.Tensor, what: string): void {
  if (t.dtype !== "float32") throw new Error(`${what} must be float32, not ${t.dtype}.`);
}

/**
 * `w * x / sqrt(mean(x²) + eps)` over the last axis of `x`, in one dispatch (`w`: `[H]`). Rows past
 * 65535 are an error: callers split them (lib/model/fused.ts falls back to tf ops).
 */
export function rmsNormProgram(x: tf.Tensor, w: tf.Tensor, eps: number): tf.Tensor {
  float32(x, "rmsNorm's input");
  const h = x.shape[x.shape.length - 1];
  const rows = x.size / h;
  if (w.size !== h) throw new Error(`rmsNorm's weight has ${w.size} values, the input's rows ${h}.`);
  if (rows > MAX_DISPATCH) throw new Error(`rmsNormProgram takes at most ${MAX_DISPATCH} rows, not ${rows}.`);
  const wg = 64;
  const code = `
    var<workgroup> part : array<f32, ${wg}>;
    fn main(gIndex : i32) {
      let t = i32(localId.x);
      let base = i32(workgroupId.x) * uniforms.h;
      var s = 0.0;
      for (var j = t; j < uniforms.h; j += ${wg}) {
        let v = f32(X[base + j]);
        s += v * v;
      }
      part[t] = s;
      workgroupBarrier();
      for (var o = ${wg / 2}; o > 0; o = o / 2) {
        if (t < o) { part[t] += part[t + o]; }
        workgroupBarrier();
      }
      let r = inverseSqrt(part[0] / f32(uniforms.h) + uniforms.eps);
      for (var j = t; j < uniforms.h; j += ${wg}) {
        result[base + j] = f32(W[j]) * (f32(X[base + j]) * r);
      }
    }`;
  const p = new Program(["X", "W"], x.shape, [rows, 1, 1], wg, "h : i32, eps : f32,", "fusedRmsNorm", code);
  return run(p, [x, w], [{ type: "int32", data: [h] }, { type: "float32", data: [eps] }]);
}

/** `gate * sigmoid(gate) * up` (same shapes), in one dispatch. */
export function swigluProgram(gate: tf.Tensor, up: tf.Tensor): tf.Tensor {
  float32(gate, "swiglu's gate");
  if (!tf.util.arraysEqual(gate.shape, up.shape)) {
    throw new Error(`swiglu's gate [${gate.shape}] and up [${up.shape}] must have one shape.`);
  }
  const code = `
    fn main(gIndex : i32) {
      ${EW_INDEX}
      if (i < uniforms.n) {
        let g = f32(G[i]);
        result[i] = g / (1.0 + exp(-g)) * f32(U[i]);
      }
    }`;
  const p = new Program(["G", "U"], gate.shape, ewDispatch(gate.size), EW, "n : i32,", "fusedSwiglu", code);
  return run(p, [gate, up], [{ type: "int32", data: [gate.size] }]);
}

/**
 * Rotary embedding `x * cos + [x2, x1] * sinSigned` for `x` `[B, heads, T, D]` and factors
 * `[B, 1, Tf, D]` with Tf = T, or Tf = 1 (broadcast over axes 1 and 2, as a decode step's
 * `[B, KV, G, D]` queries), in one dispatch.
 */
export function rotaryProgram(x: tf.Tensor4D, cos: tf.Tensor, sinSigned: tf.Tensor): tf.Tensor4D {
  float32(x, "applyRotary's input");
  const [b, heads, t, d] = x.shape;
  const tf_ = cos.shape[2];
  const ok = cos.rank === 4 && tf.util.arraysEqual(cos.shape, sinSigned.shape) && cos.shape[0] === b &&
    cos.shape[1] === 1 && (tf_ === t || tf_ === 1) && cos.shape[3] === d && d % 2 === 0;
  if (!ok) {
    throw new Error(
      `applyRotary takes x [B, heads, T, D] and factors [B, 1, T or 1, D], not [${x.shape}] and [${cos.shape}].`,
    );
  }
  const code = `
    fn main(gIndex : i32) {
      ${EW_INDEX}
      if (i < uniforms.n) {
        let d = i % uniforms.d;
        let row = i / uniforms.d;
        let t = row % uniforms.t;
        let b = row / (uniforms.t * uniforms.heads);
        let f = (b * uniforms.tf + t % uniforms.tf) * uniforms.d + d;
        let half = uniforms.d / 2;
        var partner = i + half;
        if (d >= half) { partner = i - half; }
        result[i] = f32(X[i]) * f32(C[f]) + f32(X[partner]) * f32(S[f]);
      }
    }`;
  const p = new Program(
    ["X", "C", "S"],
    x.shape,
    ewDispatch(x.size),
    EW,
    "n : i32, d : i32, t : i32, heads : i32, tf : i32,",
    "fusedRotary",
    code,
  );
  return run(p, [x, cos, sinSigned], [
    { type: "int32", data: [x.size] },
    { type: "int32", data: [d] },
    { type: "int32", data: [t] },
    { type: "int32", data: [heads] },
    { type: "int32", data: [tf_] },
  ]) as tf.Tensor4D;
}

/**
 * `softmax(q kᵀ + bias) v` per key/value head, in one dispatch: `q` `[B, KV, R, D]` (R = G·T rows: the G
 * query heads of a group stacked along the rows, row r being query position `r mod T`), `k` and `v`
 * `[B, KV, S, D]`, `bias` `[B, 1, T, S]` (additive: 0 or -1e9). Returns `[B, KV, R, D]`. The scale
 * 1/sqrt(D) is the caller's (folded into q).
 */
export function attentionProgram(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  bias: tf.Tensor4D,
): tf.Tensor4D {
  float32(q, "attention's queries");
  const [b, kv, r, d] = q.shape;
  const s = k.shape[2];
  const t = bias.shape[2];
  const ok = tf.util.arraysEqual(k.shape, [b, kv, s, d]) && tf.util.arraysEqual(v.shape, [b, kv, s, d]) &&
    tf.util.arraysEqual(bias.shape, [b, 1, t, s]) && r % t === 0 && d <= ATTENTION_MAX_HEAD_DIM &&
    r <= MAX_DISPATCH && kv <= MAX_DISPATCH && b <= MAX_DISPATCH;
  if (!ok) {
    throw new Error(
      `attention takes q [B, KV, R, D], k and v [B, KV, S, D], bias [B, 1, T, S] (R a multiple of T, ` +
        `D <= ${ATTENTION_MAX_HEAD_DIM}), not [${q.shape}], [${k.shape}], [${v.shape}], [${bias.shape}].`,
    );
  }
  const per = Math.ceil(d / ATT_WG); // output values per thread
  // Query rows per workgroup: they share every key and value read (a decode step's G query heads of a
  // group, a prefill's neighbouring positions), 8 at most (registers: 8 x 4 outputs per thread).
  const qb = r >= ATT_ROWS ? ATT_ROWS : 2 ** Math.ceil(Math.log2(r));
  const code = `
    var<workgroup> qs : array<f32, ${qb * ATTENTION_MAX_HEAD_DIM}>;
    var<workgroup> ps : array<f32, ${qb * ATT_WG}>;
    var<workgroup> red : array<f32, ${qb * ATT_WG}>;
    fn main(gIndex : i32) {
      let tid = i32(localId.x);
      let row0 = i32(workgroupId.x) * ${qb};
      let h = i32(workgroupId.y);
      let bb = i32(workgroupId.z);
      let D = uniforms.d;
      let S = uniforms.s;
      let R = uniforms.r;
      let headBase = (bb * uniforms.kv + h) * R;
      let kvBase = (bb * uniforms.kv + h) * S * D;
      // Rows past R (the last block) compute row R - 1 again and are not written.
      var biasBase : array<i32, ${qb}>;
      for (var qi = 0; qi < ${qb}; qi++) {
        biasBase[qi] = (bb * uniforms.t + min(row0 + qi, R - 1) % uniforms.t) * S;
      }
      for (var i = tid; i < ${qb} * D; i += ${ATT_WG}) {
        let row = min(row0 + i / D, R - 1);
        qs[i] = f32(Q[(headBase + row) * D + i % D]);
      }
      workgroupBarrier();
      var m : array<f32, ${qb}>;
      var l : array<f32, ${qb}>;
      var acc : array<f32, ${qb * per}>;
      for (var qi = 0; qi < ${qb}; qi++) { m[qi] = -3.0e38; l[qi] = 0.0; }
      for (var i = 0; i < ${qb * per}; i++) { acc[i] = 0.0; }
      for (var c0 = 0; c0 < S; c0 += ${ATT_WG}) {
        let cn = min(${ATT_WG}, S - c0);
        // This thread's key against every row: its scores, with the bias added as tf.add would.
        var sc : array<f32, ${qb}>;
        for (var qi = 0; qi < ${qb}; qi++) { sc[qi] = -3.0e38; }
        if (tid < cn) {
          let kb = kvBase + (c0 + tid) * D;
          // Zeroed explicitly: a declaration without initializer inside a loop was not re-zeroed on llvmpipe.
          var dots : array<f32, ${qb}>;
          for (var qi = 0; qi < ${qb}; qi++) { dots[qi] = 0.0; }
          for (var j = 0; j < D; j++) {
            let kj = f32(K[kb + j]);
            for (var qi = 0; qi < ${qb}; qi++) { dots[qi] += qs[qi * D + j] * kj; }
          }
          for (var qi = 0; qi < ${qb}; qi++) { sc[qi] = dots[qi] + f32(BIAS[biasBase[qi] + c0 + tid]); }
        }
        for (var qi = 0; qi < ${qb}; qi++) { red[qi * ${ATT_WG} + tid] = sc[qi]; }
        workgroupBarrier();
        for (var o = ${ATT_WG / 2}; o > 0; o = o / 2) {
          if (tid < o) {
            for (var qi = 0; qi < ${qb}; qi++) {
              let x = qi * ${ATT_WG} + tid;
              red[x] = max(red[x], red[x + o]);
            }
          }
          workgroupBarrier();
        }
        var mNew : array<f32, ${qb}>;
        for (var qi = 0; qi < ${qb}; qi++) { mNew[qi] = max(m[qi], red[qi * ${ATT_WG}]); }
        workgroupBarrier();
        for (var qi = 0; qi < ${qb}; qi++) {
          var p = 0.0;
          if (tid < cn) { p = exp(sc[qi] - mNew[qi]); }
          ps[qi * ${ATT_WG} + tid] = p;
          red[qi * ${ATT_WG} + tid] = p;
        }
        workgroupBarrier();
        for (var o = ${ATT_WG / 2}; o > 0; o = o / 2) {
          if (tid < o) {
            for (var qi = 0; qi < ${qb}; qi++) {
              let x = qi * ${ATT_WG} + tid;
              red[x] += red[x + o];
            }
          }
          workgroupBarrier();
        }
        var scale : array<f32, ${qb}>;
        for (var qi = 0; qi < ${qb}; qi++) {
          scale[qi] = exp(m[qi] - mNew[qi]);
          l[qi] = l[qi] * scale[qi] + red[qi * ${ATT_WG}];
          m[qi] = mNew[qi];
        }
        for (var c = 0; c < ${per}; c++) {
          let dd = tid + c * ${ATT_WG};
          if (dd < D) {
            var o : array<f32, ${qb}>;
            for (var qi = 0; qi < ${qb}; qi++) { o[qi] = acc[qi * ${per} + c] * scale[qi]; }
            for (var j = 0; j < cn; j++) {
              let vj = f32(V[kvBase + (c0 + j) * D + dd]);
              for (var qi = 0; qi < ${qb}; qi++) { o[qi] += ps[qi * ${ATT_WG} + j] * vj; }
            }
            for (var qi = 0; qi < ${qb}; qi++) { acc[qi * ${per} + c] = o[qi]; }
          }
        }
        workgroupBarrier();
      }
      for (var qi = 0; qi < ${qb}; qi++) {
        if (row0 + qi < R) {
          for (var c = 0; c < ${per}; c++) {
            let dd = tid + c * ${ATT_WG};
            if (dd < D) { result[(headBase + row0 + qi) * D + dd] = acc[qi * ${per} + c] / l[qi]; }
          }
        }
      }
    }`;
  const p = new Program(
    ["Q", "K", "V", "BIAS"],
    q.shape,
    [Math.ceil(r / qb), kv, b],
    ATT_WG,
    "d : i32, s : i32, kv : i32, r : i32, t : i32,",
    `fusedAttention_${per}_${qb}`,
    code,
  );
  return run(p, [q, k, v, bias], [
    { type: "int32", data: [d] },
    { type: "int32", data: [s] },
    { type: "int32", data: [kv] },
    { type: "int32", data: [r] },
    { type: "int32", data: [t] },
  ]) as tf.Tensor4D;
}

/**
 * The float32 values of 16-bit codes packed two per int32 word (element 2i in the low half of word i),
 * `bfloat16` or `float16`, in one dispatch: exact for every code (bit operations only, no float
 * arithmetic on the codes, so none of tfjs-webgpu's float32-emulated int32 kernels), subnormals and
 * signed zeros included. Needs no `shader-f16`. With `startWord`, the codes from that word on (a slice of
 * rows: tfjs-webgpu's `slice` of int32 words passes them through float32 and changes them).
 */
export function widenHalfProgram(
  packed: tf.Tensor,
  shape: number[],
  dtype: "bfloat16" | "float16",
  startWord = 0,
): tf.Tensor {
  const n = shape.reduce((p, d) => p * d, 1);
  const whole = startWord === 0 && packed.size * 2 === n;
  if (packed.dtype !== "int32" || !(whole || (startWord >= 0 && 2 * (packed.size - startWord) >= n))) {
    throw new Error(
      `widenHalfProgram takes ${
        n / 2
      } int32 words for [${shape}] from word ${startWord}, not a ${packed.dtype} [${packed.shape}].`,
    );
  }
  const widen = dtype === "bfloat16" ? `return bitcast<f32>(c << 16u);` : `let s = (c & 0x8000u) << 16u;
       let e = (c >> 10u) & 0x1fu;
       let m = c & 0x3ffu;
       if (e == 0u) { return bitcast<f32>(bitcast<u32>(f32(m) * 5.9604644775390625e-8) | s); }
       if (e == 31u) { return bitcast<f32>(s | 0x7f800000u | (m << 13u)); }
       return bitcast<f32>(s | ((e + 112u) << 23u) | (m << 13u));`;
  const code = `
    fn widen(c : u32) -> f32 {
      ${widen}
    }
    fn main(gIndex : i32) {
      ${EW_INDEX}
      if (i < uniforms.n) {
        let word = bitcast<u32>(P[uniforms.start + i / 2]);
        var c = word & 0xffffu;
        if (i % 2 == 1) { c = word >> 16u; }
        result[i] = widen(c);
      }
    }`;
  const p = new Program(["P"], shape, ewDispatch(n), EW, "n : i32, start : i32,", `widenHalf_${dtype}`, code);
  return run(p, [packed], [{ type: "int32", data: [n] }, { type: "int32", data: [startWord] }]);
}

/**
 * The gradient of {@linkcode rmsNormProgram} with respect to `x`, in one dispatch: with `r = 1/rms(x)`,
 * `dx = r (dy w - x r · mean(dy w x r))`, both row sums in one pass over the row.
 */
export function rmsNormGradProgram(x: tf.Tensor, w: tf.Tensor, dy: tf.Tensor, eps: number): tf.Tensor {
  float32(x, "rmsNorm's input");
  const h = x.shape[x.shape.length - 1];
  const rows = x.size / h;
  if (rows > MAX_DISPATCH || w.size !== h || !tf.util.arraysEqual(x.shape, dy.shape)) {
    throw new Error(`rmsNormGradProgram takes x and dy of one shape [rows <= ${MAX_DISPATCH}, ${w.size}].`);
  }
  const wg = 64;
  const code = `
    var<workgroup> p1 : array<f32, ${wg}>;
    var<workgroup> p2 : array<f32, ${wg}>;
    fn main(gIndex : i32) {
      let t = i32(localId.x);
      let base = i32(workgroupId.x) * uniforms.h;
      var s1 = 0.0;
      var s2 = 0.0;
      for (var j = t; j < uniforms.h; j += ${wg}) {
        let v = f32(X[base + j]);
        s1 += v * v;
        s2 += f32(DY[base + j]) * f32(W[j]) * v;
      }
      p1[t] = s1;
      p2[t] = s2;
      workgroupBarrier();
      for (var o = ${wg / 2}; o > 0; o = o / 2) {
        if (t < o) {
          p1[t] += p1[t + o];
          p2[t] += p2[t + o];
        }
        workgroupBarrier();
      }
      let r = inverseSqrt(p1[0] / f32(uniforms.h) + uniforms.eps);
      let c = r * p2[0] / f32(uniforms.h);
      for (var j = t; j < uniforms.h; j += ${wg}) {
        let v = f32(X[base + j]);
        result[base + j] = r * (f32(DY[base + j]) * f32(W[j]) - v * r * c);
      }
    }`;
  const p = new Program(
    ["X", "W", "DY"],
    x.shape,
    [rows, 1, 1],
    wg,
    "h : i32, eps : f32,",
    "fusedRmsNormGrad",
    code,
  );
  return run(p, [x, w, dy], [{ type: "int32", data: [h] }, { type: "float32", data: [eps] }]);
}

/**
 * The gradients of {@linkcode swigluProgram}, one per dispatch: `which` `gate`:
 * `dy · up · s (1 + gate (1 - s))` (s = sigmoid(gate)), `up`: `dy · gate · s`.
 */
export function swigluGradProgram(
  gate: tf.Tensor,
  up: tf.Tensor,
  dy: tf.Tensor,
  which: "gate" | "up",
): tf.Tensor {
  float32(gate, "swiglu's gate");
  const value = which === "gate"
    ? "f32(DY[i]) * f32(U[i]) * s * (1.0 + g * (1.0 - s))"
    : "f32(DY[i]) * g * s";
  const code = `
    fn main(gIndex : i32) {
      ${EW_INDEX}
      if (i < uniforms.n) {
        let g = f32(G[i]);
        let s = 1.0 / (1.0 + exp(-g));
        result[i] = ${value};
      }
    }`;
  // Every declared input must be read: WebGPU's automatic layout drops unused bindings, and then the
  // bind group tfjs makes for all inputs fails validation (the dispatch silently does nothing).
  const names = which === "gate" ? ["G", "U", "DY"] : ["G", "DY"];
  const p = new Program(
    names,
    gate.shape,
    ewDispatch(gate.size),
    EW,
    "n : i32,",
    `fusedSwigluGrad_${which}`,
    code,
  );
  return run(p, which === "gate" ? [gate, up, dy] : [gate, dy], [{ type: "int32", data: [gate.size] }]);
}

/**
 * The gradient of {@linkcode rotaryProgram} with respect to `x`, in one dispatch:
 * `dx_i = dy_i cos_i + dy_p sinSigned_p`, p the partner of i in the other half (the swap is its own
 * inverse).
 */
export function rotaryGradProgram(dy: tf.Tensor4D, cos: tf.Tensor, sinSigned: tf.Tensor): tf.Tensor4D {
  float32(dy, "applyRotary's gradient");
  const [, heads, t, d] = dy.shape;
  const tf_ = cos.shape[2] as number;
  const code = `
    fn main(gIndex : i32) {
      ${EW_INDEX}
      if (i < uniforms.n) {
        let d = i % uniforms.d;
        let row = i / uniforms.d;
        let t = row % uniforms.t;
        let b = row / (uniforms.t * uniforms.heads);
        let fBase = (b * uniforms.tf + t % uniforms.tf) * uniforms.d;
        let half = uniforms.d / 2;
        var partner = i + half;
        var pd = d + half;
        if (d >= half) {
          partner = i - half;
          pd = d - half;
        }
        result[i] = f32(DY[i]) * f32(C[fBase + d]) + f32(DY[partner]) * f32(S[fBase + pd]);
      }
    }`;
  const p = new Program(
    ["DY", "C", "S"],
    dy.shape,
    ewDispatch(dy.size),
    EW,
    "n : i32, d : i32, t : i32, heads : i32, tf : i32,",
    "fusedRotaryGrad",
    code,
  );
  return run(p, [dy, cos, sinSigned], [
    { type: "int32", data: [dy.size] },
    { type: "int32", data: [d] },
    { type: "int32", data: [t] },
    { type: "int32", data: [heads] },
    { type: "int32", data: [tf_] },
  ]) as tf.Tensor4D;
}
