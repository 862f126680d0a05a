/**
 * A matrix product for few rows (decoding) on tfjs-webgpu, registered over its `BatchMatMul` kernel.
 *
 * tfjs-webgpu 4.22 runs every product through 32x32-tiled (or split-K / small-output) programs; on an
 * NVIDIA H200 under Deno each cost about 0.8 ms of GPU time whatever its size (bench/gpu/FINDINGS.md),
 * where decoding one token multiplies a few rows by each weight: a matrix-vector product that should
 * take microseconds. The program here is written for that case, `a` `[M, K]` with M <= 32:
 *
 * - `a bᵀ` (`b` `[N, K]`, a linear layer's weight, or the keys in attention scores): each workgroup
 *   owns a few rows of `b`; the threads of a row stride over K with vec4 loads, reading each weight
 *   element once and multiplying it into all M rows of `a` (kept in registers: one accumulator per
 *   row), then sum their partial results in workgroup memory.
 * - `a b` (`b` `[K, N]`, the values in attention): each thread owns 4 adjacent columns of `b` and a
 *   stride of K, so the threads of a workgroup read whole rows of `b` together; then the same sum.
 *
 * Anything else (more rows, `transposeA`, int32, a `b` that is large in K for `a b`, batch shapes that
 * broadcast other than one side being 1) goes to tfjs's own kernel unchanged. Gradients are defined on
 * the op (`tf.matMul`), not on the kernel, so they are unaffected (their products qualify or not on
 * their own shapes).
 *
 * The same kernel runs the products with more rows (and those with `transposeA`) through the tiled
 * program of lib/model/webgpu_tiled.ts.
 *
 * `useBackend("webgpu")` installs both unless `MEDTHINK_WEBGPU_MATMUL=tfjs` (neither) or `=small` (only
 * the small-M program); `MEDTHINK_WEBGPU_MATMUL_MAX_M` changes the row threshold.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { env as envVar } from "../util/env.ts";
import { runTiled, tiledPlan } from "./webgpu_tiled.ts";

/** Default largest M (rows of `a`, batch folded in where `b` has none) that the program takes. */
export const SMALL_MATMUL_MAX_M = 32;

/** Threads per workgroup. */
const WG = 128;
/** Floats of workgroup memory for the cross-thread sums (8 KiB: half of WebGPU's guaranteed 16 KiB). */
const RED_FLOATS = 2048;
/** `a b` (no transpose) only up to this K: its workgroups do not split K (a whole column per workgroup). */
const NT_MAX_K = 1024;
/** WebGPU's guaranteed maximum of workgroups per dispatch dimension. */
const MAX_DISPATCH = 65535;

// The parts of tfjs-webgpu's types used here, written out: the package is imported only by
// lib/model/backend.ts, when the webgpu backend is chosen.
interface TensorInfo {
  dataId: object;
  shape: number[];
  dtype: string;
}
interface WebGPUBackendLike {
  runWebGPUProgram(program: object, inputs: TensorInfo[], dtype: string): TensorInfo;
  disposeData(dataId: object): void;
}
interface KernelArgs {
  inputs: { a: TensorInfo; b: TensorInfo };
  backend: WebGPUBackendLike;
  attrs: { transposeA: boolean; transposeB: boolean };
}

/** The 16-bit formats of packed weights (lib/model/types.ts's `HalfWeight`). */
export type HalfDtype = "bfloat16" | "float16";

/** How one product runs: the shapes the program sees and its compile-time parameters. */
interface Plan {
  transposeB: boolean;
  /** `b` is 16-bit codes in this format, packed two per int32 word (`a bᵀ` only, K a multiple of 4). */
  half?: HalfDtype;
  /** A `[N]` bias is added to each output row (`a bᵀ` only): the linear layer's add, in the same dispatch. */
  bias?: boolean;
  batch: number;
  m: number;
  k: number;
  n: number;
  a3: number[];
  b3: number[];
  out: number[];
}

function prod(xs: number[]): number {
  return xs.reduce((p, x) => p * x, 1);
}

function pow2Floor(x: number): number {
  return x < 1 ? 1 : 2 ** Math.floor(Math.log2(x));
}

function pow2Ceil(x: number): number {
  return x <= 1 ? 1 : 2 ** Math.ceil(Math.log2(x));
}

/**
 * The rows a program is compiled for: M itself is a uniform, so that prompts of every length share a
 * few pipelines (1, 2, 4, 8, then multiples of 8); the rows past M repeat the last one and are not
 * written.
 */
function rowBucket(m: number): number {
  return m <= 8 ? pow2Ceil(m) : Math.ceil(m / 8) * 8;
}

/** Threads per row of `b` in `a bᵀ`: about a quarter of its vec4s each, 4 to 64. */
function threadsPerRow(kVecs: number): number {
  return Math.min(64, Math.max(4, pow2Floor(kVecs / 4)));
}

/** Threads across the columns of `b` in `a b`: enough for its vec4 columns, 4 to 64. */
function threadsAcross(nVecs: number): number {
  return Math.min(64, Math.max(4, pow2Ceil(nVecs)));
}

function plan(
  aShape: number[],
  bShape: number[],
  transposeA: boolean,
  transposeB: boolean,
  maxM: number,
): Plan | null {
  if (transposeA || aShape.length < 2 || bShape.length < 2) return null;
  const m = aShape[aShape.length - 2], k = aShape[aShape.length - 1];
  const n = transposeB ? bShape[bShape.length - 2] : bShape[bShape.length - 1];
  const kb = transposeB ? bShape[bShape.length - 1] : bShape[bShape.length - 2];
  if (k !== kb || m < 1 || k < 1 || n < 1) return null;
  const outerA = aShape.slice(0, -2), outerB = bShape.slice(0, -2);
  const batchA = prod(outerA), batchB = prod(outerB);
  // The program indexes a batch of `a` and of `b` by the output's batch (mod each one's size): right
  // when one side has a single batch, or both the same dimensions.
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (batchA !== 1 && batchB !== 1 && !sameOuter) return null;
  const rank = Math.max(outerA.length, outerB.length);
  const padA = [...Array(rank - outerA.length).fill(1), ...outerA];
  const padB = [...Array(rank - outerB.length).fill(1), ...outerB];
  const out = [...padA.map((d, i) => Math.max(d, padB[i])), m, n];
  // One weight for the whole batch: the batch is just more rows of `a`.
  const fold = batchB === 1;
  const rows = fold ? batchA * m : m;
  const batch = fold ? 1 : Math.max(batchA, batchB);
  if (rows > maxM || batch > MAX_DISPATCH) return null;
  const p: Plan = {
    transposeB,
    batch,
    m: rows,
    k,
    n,
    a3: fold ? [1, rows, k] : [batchA, m, k],
    b3: transposeB ? [batchB, n, k] : [batchB, k, n],
    out,
  };
  const tiles = transposeB
    ? Math.ceil(n / (WG / threadsPerRow(k % 4 === 0 ? k / 4 : k)))
    : Math.ceil((n % 4 === 0 ? n / 4 : n) / threadsAcross(n % 4 === 0 ? n / 4 : n));
  if (tiles > MAX_DISPATCH) return null;
  if (!transposeB && k > NT_MAX_K) return null;
  return p;
}

/** WGSL widening 4 packed codes (`vec2<i32>`) to `vec4<f32>`; bit operations, or `unpack2x16float`. */
function widenSource(half: HalfDtype): string {
  const two = half === "bfloat16"
    ? "return vec2<f32>(bitcast<f32>(u << 16u), bitcast<f32>(u & 0xffff0000u));"
    : "return unpack2x16float(u);";
  return `
    fn widen2(u : u32) -> vec2<f32> {
      ${two}
    }
    fn widen4(w : vec2<i32>) -> vec4<f32> {
      return vec4<f32>(widen2(bitcast<u32>(w.x)), widen2(bitcast<u32>(w.y)));
    }`;
}

// Reads convert to f32: a float32 tensor may sit in an int32 buffer (tfjs-webgpu casts int32 to float32
// without touching the data), and the pipeline is compiled for the buffers' types.

/**
 * WGSL of `a bᵀ`: workgroups of `rows` rows of `b`, `tpr` threads per row, vectors of `c` floats. With
 * `half`, `b` is 16-bit codes packed two per int32 word (element 2i in the low half), read as `vec2<i32>`
 * (4 codes) and widened in registers: half the bytes of a float32 weight.
 */
function sourceBT(m: number, c: number, tpr: number, half?: HalfDtype, bias = false): string {
  const rows = WG / tpr;
  const vec = c === 4 ? "vec4<f32>" : "f32";
  const mul = (x: string, y: string) => (c === 4 ? `dot(${x}, ${y})` : `${x} * ${y}`);
  const chunk = Math.min(m, RED_FLOATS / WG);
  const acc = Array.from(
    { length: m },
    (_, i) => `var acc${i} = 0.0;\nlet a${i} = aBase + min(${i}, mLast) * kv;`,
  )
    .join("\n");
  const fma = Array.from({ length: m }, (_, i) => `acc${i} += ${mul(`${vec}(A[a${i} + kk])`, "w")};`).join(
    "\n",
  );
  const load = half ? `let w = widen4(B[bBase + kk]);` : `let w = ${vec}(B[bBase + kk]);`;
  const sums: string[] = [];
  for (let m0 = 0; m0 < m; m0 += chunk) {
    const mc = Math.min(chunk, m - m0);
    const writes = Array.from(
      { length: mc },
      (_, j) => `red[(${j * tpr} + lane) * ${rows} + r] = acc${m0 + j};`,
    );
    sums.push(`
      ${writes.join("\n")}
      workgroupBarrier();
      for (var o = t; o < ${mc * rows}; o += ${WG}) {
        let j = o / ${rows};
        let rr = o % ${rows};
        var s = 0.0;
        for (var i = 0; i < ${tpr}; i++) {
          s += red[(j * ${tpr} + i) * ${rows} + rr];
        }
        let oc = tile * ${rows} + rr;
        if (oc < n && ${m0} + j < mRows) {
          result[(batch * mRows + ${m0} + j) * n + oc] = s${bias ? " + f32(BIAS[oc])" : ""};
        }
      }
      workgroupBarrier();`);
  }
  return `
    ${half ? widenSource(half) : ""}
    var<workgroup> red : array<f32, ${chunk * WG}>;
    fn main() {
      let t = i32(localId.x);
      let lane = t % ${tpr};
      let r = t / ${tpr};
      let tile = i32(workgroupId.x);
      let batch = i32(workgroupId.z);
      let n = uniforms.bShape.y;
      let kv = uniforms.aShape.z / ${c};
      let row = tile * ${rows} + r;
      let mRows = uniforms.aShape.y;
      let mLast = mRows - 1;
      let aBase = (batch % uniforms.aShape.x) * mRows * kv;
      let bBase = ((batch % uniforms.bShape.x) * n + row) * kv;
      ${acc}
      if (row < n) {
        for (var kk = lane; kk < kv; kk += ${tpr}) {
          ${load}
          ${fma}
        }
      }
      ${sums.join("\n")}
    }`;
}

/** WGSL of `a b`: `nt` threads across the columns of `b` (vectors of `c`), `WG / nt` down K. */
function sourceBN(m: number, c: number, nt: number): string {
  const kg = WG / nt;
  const vec = c === 4 ? "vec4<f32>" : "f32";
  const chunk = Math.max(1, Math.min(m, RED_FLOATS / (WG * c)));
  const acc = Array.from(
    { length: m },
    (_, i) => `var acc${i} = ${vec}(0.0);\nlet a${i} = aBase + min(${i}, mLast) * k;`,
  )
    .join("\n");
  const fma = Array.from({ length: m }, (_, i) => `acc${i} += f32(A[a${i} + kk]) * w;`).join("\n");
  const sums: string[] = [];
  for (let m0 = 0; m0 < m; m0 += chunk) {
    const mc = Math.min(chunk, m - m0);
    const writes = Array.from(
      { length: mc },
      (_, j) => `red[(${j * kg} + kl) * ${nt} + lane] = acc${m0 + j};`,
    );
    sums.push(`
      ${writes.join("\n")}
      workgroupBarrier();
      for (var o = t; o < ${mc * nt}; o += ${WG}) {
        let j = o / ${nt};
        let ll = o % ${nt};
        var s = ${vec}(0.0);
        for (var i = 0; i < ${kg}; i++) {
          s += red[(j * ${kg} + i) * ${nt} + ll];
        }
        let oc = tile * ${nt} + ll;
        if (oc < nv && ${m0} + j < mRows) {
          result[(batch * mRows + ${m0} + j) * nv + oc] = s;
        }
      }
      workgroupBarrier();`);
  }
  return `
    var<workgroup> red : array<${vec}, ${chunk * WG}>;
    fn main() {
      let t = i32(localId.x);
      let lane = t % ${nt};
      let kl = t / ${nt};
      let tile = i32(workgroupId.x);
      let batch = i32(workgroupId.z);
      let k = uniforms.aShape.z;
      let nv = uniforms.bShape.z / ${c};
      let col = tile * ${nt} + lane;
      let mRows = uniforms.aShape.y;
      let mLast = mRows - 1;
      let aBase = (batch % uniforms.aShape.x) * mRows * k;
      let bBase = (batch % uniforms.bShape.x) * k * nv + col;
      ${acc}
      if (col < nv) {
        for (var kk = kl; kk < k; kk += ${kg}) {
          let w = ${vec}(B[bBase + kk * nv]);
          ${fma}
        }
      }
      ${sums.join("\n")}
    }`;
}

/** A tfjs-webgpu `WebGPUProgram` (its interface, duck-typed) computing one planned product. */
class SmallMatMulProgram {
  variableNames: string[];
  variableComponents: number[];
  outputComponent: number;
  outputShape: number[];
  dispatchLayout = { x: [2], y: [1], z: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [WG, 1, 1];
  shaderKey: string;
  private source: () => string;

  constructor(p: Plan) {
    this.outputShape = [p.batch, p.m, p.n];
    if (p.transposeB) {
      const c = p.k % 4 === 0 ? 4 : 1;
      const tpr = threadsPerRow(p.k / c);
      this.variableNames = p.bias ? ["A", "B", "BIAS"] : ["A", "B"];
      this.variableComponents = p.bias ? [c, p.half ? 2 : c, 1] : [c, p.half ? 2 : c];
      this.outputComponent = 1;
      this.dispatch = [Math.ceil(p.n / (WG / tpr)), 1, p.batch];
      this.shaderKey = `smallMatMulBT_${rowBucket(p.m)}_${c}_${tpr}_${p.half ?? "f32"}_${
        p.bias ? "bias" : ""
      }`;
      this.source = () => sourceBT(rowBucket(p.m), c, tpr, p.half, p.bias);
    } else {
      const c = p.n % 4 === 0 ? 4 : 1;
      const nt = threadsAcross(p.n / c);
      this.variableNames = ["A", "B"];
      this.variableComponents = [1, c];
      this.outputComponent = c;
      this.dispatch = [Math.ceil(p.n / c / nt), 1, p.batch];
      this.shaderKey = `smallMatMulBN_${rowBucket(p.m)}_${c}_${nt}`;
      this.source = () => sourceBN(rowBucket(p.m), c, nt);
    }
  }

  getUserCode(): string {
    return this.source();
  }
}

/** Run a planned product on the backend: TensorInfo in, TensorInfo out (as tfjs kernels do). */
function run(
  p: Plan,
  a: TensorInfo,
  b: TensorInfo,
  backend: WebGPUBackendLike,
  bias?: TensorInfo,
): TensorInfo {
  const reshape = tf.getKernel("Reshape", "webgpu")!.kernelFunc as unknown as (
    args: { inputs: { x: TensorInfo }; backend: WebGPUBackendLike; attrs: { shape: number[] } },
  ) => TensorInfo;
  const a3 = reshape({ inputs: { x: a }, backend, attrs: { shape: p.a3 } });
  const b3 = reshape({ inputs: { x: b }, backend, attrs: { shape: p.b3 } });
  const inputs = bias ? [a3, b3, bias] : [a3, b3];
  const out3 = backend.runWebGPUProgram(new SmallMatMulProgram(p), inputs, "float32");
  const out = reshape({ inputs: { x: out3 }, backend, attrs: { shape: p.out } });
  for (const t of [a3, b3, out3]) backend.disposeData(t.dataId);
  return out;
}

/** Options of {@linkcode installSmallMatMul} (and of {@linkcode smallMatMulApplies}). */
export interface SmallMatMulOptions {
  /**
   * The largest M (rows of `a`; with a `b` without batch dimensions, all of `a`'s rows) that the
   * program takes (default: `MEDTHINK_WEBGPU_MATMUL_MAX_M`, else {@linkcode SMALL_MATMUL_MAX_M}).
   */
  maxM?: number;
  /**
   * Whether the products the small-M program does not take run the tiled program of
   * lib/model/webgpu_tiled.ts (default: true, unless `MEDTHINK_WEBGPU_MATMUL=small`).
   */
  tiled?: boolean;
}

/** Options of {@linkcode smallMatMulApplies}: the product's transposes, as `tf.matMul` takes them. */
export interface SmallMatMulProductOptions extends SmallMatMulOptions {
  /** Whether `a` is transposed (default false; never taken by the program). */
  transposeA?: boolean;
  /** Whether `b` is transposed (default false). */
  transposeB?: boolean;
}

function maxRows(opts: SmallMatMulOptions): number {
  return opts.maxM ?? (Number(envVar("MEDTHINK_WEBGPU_MATMUL_MAX_M")) || SMALL_MATMUL_MAX_M);
}

/**
 * Whether `tf.matMul(a, b, transposeA, transposeB)` of float32 tensors with these shapes runs the
 * small-M program once it is installed.
 *
 * @example
 * ```ts
 * import { smallMatMulApplies } from "./webgpu_matmul.ts";
 * console.log(smallMatMulApplies([1, 896], [4864, 896], { transposeB: true })); // true
 * ```
 */
export function smallMatMulApplies(
  aShape: number[],
  bShape: number[],
  opts: SmallMatMulProductOptions = {},
): boolean {
  const { transposeA = false, transposeB = false } = opts;
  return plan(aShape, bShape, transposeA, transposeB, maxRows(opts)) !== null;
}

/**
 * `a b` (`a bᵀ` with `transposeB`) through the small-M program on the active `webgpu` backend, whether
 * or not it is installed, and for any M: what the tests compare with the cpu backend. No gradient.
 * Throws when the backend is not `webgpu` or the shapes do not qualify.
 *
 * @example
 * ```ts ignore
 * import { tf } from "../util/deps.ts";
 * import { smallMatMul } from "./webgpu_matmul.ts";
 * const y = smallMatMul(tf.ones([1, 8]), tf.ones([3, 8]), { transposeB: true }); // [1, 3], on webgpu
 * ```
 */
export function smallMatMul(a: tf.Tensor, b: tf.Tensor, opts: { transposeB?: boolean } = {}): tf.Tensor {
  const transposeB = opts.transposeB ?? false;
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`smallMatMul runs on the 'webgpu' backend, not on '${tf.getBackend()}'.`);
  }
  const p = a.dtype === "float32" && b.dtype === "float32"
    ? plan(a.shape, b.shape, false, transposeB, Number.MAX_SAFE_INTEGER)
    : null;
  if (!p) {
    throw new Error(
      `smallMatMul does not take a ${a.dtype} [${a.shape}] times a ${b.dtype} [${b.shape}]` +
        `${transposeB ? " transposed" : ""}.`,
    );
  }
  const backend = tf.backend() as unknown as WebGPUBackendLike;
  const out = run(p, a as unknown as TensorInfo, b as unknown as TensorInfo, backend);
  return tf.engine().makeTensorFromTensorInfo(out as never, tf.backend());
}

/** A weight `[N, K]` kept as 16-bit codes packed two per int32 word (lib/model/types.ts's `HalfWeight`). */
export interface PackedWeight {
  /** `[N * K / 2]` int32 words, element 2i in the low half of word i. */
  packed: tf.Tensor;
  /** `[N, K]`. */
  shape: number[];
  /** The 16-bit format. */
  dtype: HalfDtype;
}

/**
 * A linear layer `a Wᵀ (+ bias)` for a float32 `a` `[M, K]` and a weight `W` `[N, K]` (float32, or packed
 * 16-bit codes widened in registers: half the bytes, no widened copy) in one dispatch of the small-M
 * program, the bias added as each output is written. Null when it does not apply (not on `webgpu`, M
 * above the row threshold, a packed weight with K not a multiple of 4, shapes that do not match): then
 * multiply and add as usual. No gradient (lib/model/fused.ts's `linearSmall` adds one).
 *
 * @example
 * ```ts ignore
 * import { smallLinear } from "./webgpu_matmul.ts";
 * const y = smallLinear(x, w, b) ?? tf.add(tf.matMul(x, w, false, true), b);
 * ```
 */
export function smallLinear(
  a: tf.Tensor,
  w: tf.Tensor | PackedWeight,
  bias?: tf.Tensor,
  opts: SmallMatMulOptions = {},
): tf.Tensor | null {
  if (tf.getBackend() !== "webgpu" || a.dtype !== "float32" || a.rank !== 2) return null;
  const packed = w instanceof tf.Tensor ? null : w;
  const shape = packed ? packed.shape : (w as tf.Tensor).shape;
  if (shape.length !== 2) return null;
  const [n, k] = shape;
  if (a.shape[1] !== k) return null;
  if (packed && (packed.packed.dtype !== "int32" || k % 4 !== 0 || packed.packed.size * 2 !== n * k)) {
    return null;
  }
  if (!packed && (w as tf.Tensor).dtype !== "float32") return null;
  if (bias && (bias.dtype !== "float32" || bias.size !== n)) return null;
  const p = plan(a.shape, shape, false, true, maxRows(opts));
  if (!p) return null;
  if (packed) {
    p.half = packed.dtype;
    p.b3 = [1, n, k / 2];
  }
  p.bias = bias !== undefined;
  const backend = tf.backend() as unknown as WebGPUBackendLike;
  const b = (packed ? packed.packed : w) as unknown as TensorInfo;
  const out = run(p, a as unknown as TensorInfo, b, backend, bias as unknown as TensorInfo | undefined);
  return tf.engine().makeTensorFromTensorInfo(out as never, tf.backend());
}

/**
 * {@linkcode smallLinear} of a packed 16-bit weight without a bias.
 *
 * @example
 * ```ts ignore
 * import { smallMatMulHalfBT } from "./webgpu_matmul.ts";
 * const y = smallMatMulHalfBT(x, w.packed, w.shape, w.dtype) ?? tf.matMul(x, widenHalf(w), false, true);
 * ```
 */
export function smallMatMulHalfBT(
  a: tf.Tensor,
  packed: tf.Tensor,
  shape: number[],
  dtype: HalfDtype,
  opts: SmallMatMulOptions = {},
): tf.Tensor | null {
  return smallLinear(a, { packed, shape, dtype }, undefined, opts);
}

let original: ReturnType<typeof tf.getKernel> | null = null;
let tiledInstalled = false;

/**
 * Register the small-M program over tfjs-webgpu's `BatchMatMul` kernel: products that qualify
 * ({@linkcode smallMatMulApplies}) run it, other float32 products the tiled program
 * (lib/model/webgpu_tiled.ts, unless `tiled` is false), every other call the original kernel. Returns whether it
 * is installed now. Does nothing when `MEDTHINK_WEBGPU_MATMUL=tfjs` (unless `opts` is given: the
 * bench switches it on and off), or when the webgpu backend's kernels are not registered.
 *
 * @example
 * ```ts ignore
 * import { installSmallMatMul, uninstallSmallMatMul } from "./webgpu_matmul.ts";
 * installSmallMatMul({ maxM: 16 });
 * uninstallSmallMatMul();
 * ```
 */
export function installSmallMatMul(opts?: SmallMatMulOptions): boolean {
  if (!opts && envVar("MEDTHINK_WEBGPU_MATMUL") === "tfjs") return false;
  const maxM = maxRows(opts ?? {});
  const tiled = opts?.tiled ?? envVar("MEDTHINK_WEBGPU_MATMUL") !== "small";
  uninstallSmallMatMul();
  const kernel = tf.getKernel("BatchMatMul", "webgpu");
  if (!kernel) return false;
  original = kernel;
  tiledInstalled = tiled;
  const fallback = kernel.kernelFunc;
  tf.unregisterKernel("BatchMatMul", "webgpu");
  tf.registerKernel({
    ...kernel,
    kernelFunc: (args) => {
      const { inputs, backend, attrs } = args as unknown as KernelArgs;
      const { a, b } = inputs;
      if (a.dtype === "float32" && b.dtype === "float32") {
        const p = plan(a.shape, b.shape, attrs.transposeA, attrs.transposeB, maxM);
        if (p) return run(p, a, b, backend) as never;
        const t = tiled ? tiledPlan(a.shape, b.shape, attrs.transposeA, attrs.transposeB) : null;
        if (t) return runTiled(t, a, b, backend) as never;
      }
      return fallback(args);
    },
  });
  return true;
}

/**
 * Whether the small-M program is installed now (by `useBackend("webgpu")` unless
 * `MEDTHINK_WEBGPU_MATMUL=tfjs`, or by {@linkcode installSmallMatMul}).
 *
 * @example
 * ```ts
 * import { smallMatMulInstalled } from "./webgpu_matmul.ts";
 * console.log(smallMatMulInstalled());
 * ```
 */
export function smallMatMulInstalled(): boolean {
  return original !== null;
}

/**
 * Whether the tiled program (lib/model/webgpu_tiled.ts) is installed with it (not with
 * `MEDTHINK_WEBGPU_MATMUL=small` or `tiled: false`).
 *
 * @example
 * ```ts
 * import { tiledMatMulInstalled } from "./webgpu_matmul.ts";
 * console.log(tiledMatMulInstalled());
 * ```
 */
export function tiledMatMulInstalled(): boolean {
  return original !== null && tiledInstalled;
}

/**
 * Put tfjs-webgpu's own `BatchMatMul` kernel back. Returns whether the small-M program was installed.
 *
 * @example
 * ```ts
 * import { uninstallSmallMatMul } from "./webgpu_matmul.ts";
 * uninstallSmallMatMul();
 * ```
 */
export function uninstallSmallMatMul(): boolean {
  if (!original) return false;
  tf.unregisterKernel("BatchMatMul", "webgpu");
  tf.registerKernel(original);
  original = null;
  tiledInstalled = false;
  return true;
}
