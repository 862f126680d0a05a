/**
 * A tiled matrix product for many rows (prefill, training's forward and both backward products) on
 * tfjs-webgpu, run from the `BatchMatMul` kernel that lib/model/webgpu_matmul.ts registers.
 *
 * Each workgroup of 16x16 threads owns a 64x64 tile of the output; each thread a 4x4 block of it, in
 * registers. K is walked in chunks of 16: the workgroup stages a 64x16 slice of `a` and a 16x64 slice of
 * `b` in workgroup memory (each element read from global memory once per tile, the loads coalesced along
 * whichever axis is contiguous in the operand's layout), then every thread multiplies 4 values of `a`
 * by 4 of `b` per step of K. Transposed operands (`transposeA`, `transposeB`) are read in place, without
 * a transpose kernel; a batch dimension broadcasts when one side has a single batch or both have the
 * same batch dimensions (the rule of tfjs's own kernel). Float32 only: tfjs-webgpu creates its device
 * without `shader-f16`, so half-precision storage would need a device of our own (not done).
 *
 * @module
 */
import { tf } from "../util/deps.ts";

/** Output tile edge per workgroup. */
const TILE = 64;
/** K per staged chunk. */
const KC = 16;
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

/** How one product runs on the tiled program. */
export interface TiledPlan {
  transposeA: boolean;
  transposeB: boolean;
  batch: number;
  m: number;
  k: number;
  n: number;
  /** `a` as the program reads it: `[batchA, M, K]`, or `[batchA, K, M]` transposed. */
  a3: number[];
  /** `b` as the program reads it: `[batchB, K, N]`, or `[batchB, N, K]` transposed. */
  b3: number[];
  /** The output's shape, batch dimensions broadcast. */
  out: number[];
}

function prod(xs: number[]): number {
  return xs.reduce((p, x) => p * x, 1);
}

/**
 * The plan of `matMul(a, b, transposeA, transposeB)` on the tiled program, or null when its shapes do
 * not fit it (ranks below 2, inner sizes that differ, batches that broadcast other than one side being
 * 1, or more workgroups than a dispatch allows).
 */
export function tiledPlan(
  aShape: number[],
  bShape: number[],
  transposeA: boolean,
  transposeB: boolean,
): TiledPlan | null {
  if (aShape.length < 2 || bShape.length < 2) return null;
  const ra = aShape.length, rb = bShape.length;
  const m = transposeA ? aShape[ra - 1] : aShape[ra - 2];
  const k = transposeA ? aShape[ra - 2] : aShape[ra - 1];
  const kb = transposeB ? bShape[rb - 1] : bShape[rb - 2];
  const n = transposeB ? bShape[rb - 2] : bShape[rb - 1];
  if (k !== kb || m < 1 || n < 1 || k < 1) return null;
  const outerA = aShape.slice(0, -2), outerB = bShape.slice(0, -2);
  const batchA = prod(outerA), batchB = prod(outerB);
  const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
  if (batchA !== 1 && batchB !== 1 && !sameOuter) return null;
  const rank = Math.max(outerA.length, outerB.length);
  const padA = [...Array(rank - outerA.length).fill(1), ...outerA];
  const padB = [...Array(rank - outerB.length).fill(1), ...outerB];
  const batch = Math.max(batchA, batchB);
  if (batch > MAX_DISPATCH || Math.ceil(m / TILE) > MAX_DISPATCH || Math.ceil(n / TILE) > MAX_DISPATCH) {
    return null;
  }
  return {
    transposeA,
    transposeB,
    batch,
    m,
    k,
    n,
    a3: transposeA ? [batchA, k, m] : [batchA, m, k],
    b3: transposeB ? [batchB, n, k] : [batchB, k, n],
    out: [...padA.map((d, i) => Math.max(d, padB[i])), m, n],
  };
}

/**
 * WGSL of the tiled product. Reads convert to f32: a float32 tensor may sit in an int32 buffer (tfjs-webgpu
 * casts int32 to float32 without touching the data).
 */
function source(transposeA: boolean, transposeB: boolean, bias: boolean): string {
  // Staging: element e (0..1023) of a chunk, 4 per thread. The axis contiguous in memory varies fastest
  // across threads, so that neighbouring threads read neighbouring addresses.
  const loadA = transposeA
    ? `let kk = e / ${TILE}; let r = e % ${TILE};
       let gr = row0 + r; let gk = k0 + kk;
       var v = 0.0;
       if (gr < M && gk < K) { v = f32(A[aBase + gk * M + gr]); }
       As[kk * ${TILE / 4} + r / 4][r % 4] = v;`
    : `let r = e / ${KC}; let kk = e % ${KC};
       let gr = row0 + r; let gk = k0 + kk;
       var v = 0.0;
       if (gr < M && gk < K) { v = f32(A[aBase + gr * K + gk]); }
       As[kk * ${TILE / 4} + r / 4][r % 4] = v;`;
  const loadB = transposeB
    ? `let c = e / ${KC}; let kk = e % ${KC};
       let gc = col0 + c; let gk = k0 + kk;
       var v = 0.0;
       if (gc < N && gk < K) { v = f32(B[bBase + gc * K + gk]); }
       Bs[kk * ${TILE / 4} + c / 4][c % 4] = v;`
    : `let kk = e / ${TILE}; let c = e % ${TILE};
       let gc = col0 + c; let gk = k0 + kk;
       var v = 0.0;
       if (gc < N && gk < K) { v = f32(B[bBase + gk * N + gc]); }
       Bs[kk * ${TILE / 4} + c / 4][c % 4] = v;`;
  return `
    // vec4 elements: each thread reads its 4 rows of a and 4 columns of b in one 16-byte load each.
    var<workgroup> As : array<vec4<f32>, ${(KC * TILE) / 4}>;
    var<workgroup> Bs : array<vec4<f32>, ${(KC * TILE) / 4}>;
    fn main() {
      let tx = i32(localId.x);
      let ty = i32(localId.y);
      let tid = ty * 16 + tx;
      let batch = i32(workgroupId.z);
      let M = uniforms.outShape.y;
      let N = uniforms.outShape.z;
      let K = ${transposeA ? "uniforms.aShape.y" : "uniforms.aShape.z"};
      let row0 = i32(workgroupId.y) * ${TILE};
      let col0 = i32(workgroupId.x) * ${TILE};
      let aBase = (batch % uniforms.aShape.x) * uniforms.aShape.y * uniforms.aShape.z;
      let bBase = (batch % uniforms.bShape.x) * uniforms.bShape.y * uniforms.bShape.z;
      var acc0 = vec4<f32>(0.0);
      var acc1 = vec4<f32>(0.0);
      var acc2 = vec4<f32>(0.0);
      var acc3 = vec4<f32>(0.0);
      for (var k0 = 0; k0 < K; k0 += ${KC}) {
        for (var i = 0; i < ${(KC * TILE) / 256}; i++) {
          let e = tid + i * 256;
          {
            ${loadA}
          }
          {
            ${loadB}
          }
        }
        workgroupBarrier();
        for (var kk = 0; kk < ${KC}; kk++) {
          let ao = kk * ${TILE / 4} + ty;
          let bo = kk * ${TILE / 4} + tx;
          let a = As[ao];
          let b = Bs[bo];
          acc0 += a.x * b;
          acc1 += a.y * b;
          acc2 += a.z * b;
          acc3 += a.w * b;
        }
        workgroupBarrier();
      }
      let r0 = row0 + ty * 4;
      let c0 = col0 + tx * 4;
      let oBase = batch * M * N;
      for (var j = 0; j < 4; j++) {
        let c = c0 + j;
        if (c < N) {
          let bj = ${bias ? "f32(BIAS[c])" : "0.0"};
          if (r0 < M) { result[oBase + r0 * N + c] = acc0[j] + bj; }
          if (r0 + 1 < M) { result[oBase + (r0 + 1) * N + c] = acc1[j] + bj; }
          if (r0 + 2 < M) { result[oBase + (r0 + 2) * N + c] = acc2[j] + bj; }
          if (r0 + 3 < M) { result[oBase + (r0 + 3) * N + c] = acc3[j] + bj; }
        }
      }
    }`;
}

/** A tfjs-webgpu `WebGPUProgram` (its interface, duck-typed) computing one planned product. */
class TiledMatMulProgram {
  variableNames: string[];
  outputShape: number[];
  dispatchLayout = { x: [2], y: [1], z: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [16, 16, 1];
  shaderKey: string;
  private transposeA: boolean;
  private transposeB: boolean;

  private bias: boolean;

  constructor(p: TiledPlan, bias = false) {
    this.bias = bias;
    this.variableNames = bias ? ["A", "B", "BIAS"] : ["A", "B"];
    this.outputShape = [p.batch, p.m, p.n];
    this.dispatch = [Math.ceil(p.n / TILE), Math.ceil(p.m / TILE), p.batch];
    this.transposeA = p.transposeA;
    this.transposeB = p.transposeB;
    this.shaderKey = `tiledMatMul_${p.transposeA}_${p.transposeB}_${bias}`;
  }

  getUserCode(): string {
    return source(this.transposeA, this.transposeB, this.bias);
  }
}

/** Run a planned product on the backend: TensorInfo in, TensorInfo out (as tfjs kernels do). */
export function runTiled(
  p: TiledPlan,
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
  const out3 = backend.runWebGPUProgram(new TiledMatMulProgram(p, bias !== undefined), inputs, "float32");
  const out = reshape({ inputs: { x: out3 }, backend, attrs: { shape: p.out } });
  for (const t of [a3, b3, out3]) backend.disposeData(t.dataId);
  return out;
}

/**
 * `tf.matMul(a, b, transposeA, transposeB)` through the tiled program on the active `webgpu` backend,
 * whether or not it is installed: what the tests compare with the cpu backend. No gradient. Throws when
 * the backend is not `webgpu` or the shapes do not fit. `bias` (`[N]`) is added to every output row as it
 * is written.
 *
 * @example
 * ```ts ignore
 * import { tf } from "../util/deps.ts";
 * import { tiledMatMul } from "./webgpu_tiled.ts";
 * const y = tiledMatMul(tf.ones([100, 8]), tf.ones([3, 8]), { transposeB: true }); // [100, 3]
 * ```
 */
export function tiledMatMul(
  a: tf.Tensor,
  b: tf.Tensor,
  opts: { transposeA?: boolean; transposeB?: boolean; bias?: tf.Tensor } = {},
): tf.Tensor {
  const { transposeA = false, transposeB = false, bias } = opts;
  if (tf.getBackend() !== "webgpu") {
    throw new Error(`tiledMatMul runs on the 'webgpu' backend, not on '${tf.getBackend()}'.`);
  }
  const p = a.dtype === "float32" && b.dtype === "float32"
    ? tiledPlan(a.shape, b.shape, transposeA, transposeB)
    : null;
  if (!p) {
    throw new Error(
      `tiledMatMul does not take a ${a.dtype} [${a.shape}]${transposeA ? " transposed" : ""} times a ` +
        `${b.dtype} [${b.shape}]${transposeB ? " transposed" : ""}.`,
    );
  }
  const backend = tf.backend() as unknown as WebGPUBackendLike;
  if (bias && (bias.dtype !== "float32" || bias.size !== p.n)) {
    throw new Error(
      `tiledMatMul's bias has ${bias.size} ${bias.dtype} values, the product's columns ${p.n}.`,
    );
  }
  const out = runTiled(
    p,
    a as unknown as TensorInfo,
    b as unknown as TensorInfo,
    backend,
    bias as unknown as TensorInfo | undefined,
  );
  return tf.engine().makeTensorFromTensorInfo(out as never, tf.backend());
}
