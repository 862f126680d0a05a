/**
 * One batch-1 decoding step's matrix-vector products on the Qwen2.5-0.5B shapes (24 layers x q, k, v, o,
 * gate, up, down, then the tied head: 1.98 GB of float32, more than any cache), three ways in one process,
 * interleaved: tfjs's `tf.matMul` (TensorFlow's `BatchMatMulV2`), TensorFlow's 2-D `MatMul` (what
 * `rowMatMulBT` in lib/model/fused.ts uses), and a C loop (AVX-512 FMA, OpenMP over the rows) compiled
 * here with `cc` and called through Deno's FFI on host `Float32Array`s. The weights are 64-byte aligned
 * JavaScript buffers that TensorFlow adopts without a copy (tfjs-node's `TF_NewTensor` keeps aligned
 * memory), so all three read the same 1.98 GB: RSS stays about 2.5 GB.
 *
 *   deno run -A bench/row_matmul_probe.ts [--reps 5]
 *   OMP_WAIT_POLICY=passive deno run -A bench/row_matmul_probe.ts   # under contention (see NOTES.md)
 *
 * A probe of a possible native decoding path (bench/NOTES.md, "Batch-1 decoding"), not library code.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";

const { values } = parseArgs({ args: Deno.args, options: { reps: { type: "string", default: "5" } } });
const reps = Number(values.reps);

const SOURCE = String.raw`
#include <stdint.h>
#include <immintrin.h>
void gemv(const float *restrict x, const float *restrict W, float *restrict y, int64_t N, int64_t K) {
  #pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float *w = W + n * K;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(w + k), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(w + k + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), _mm512_loadu_ps(w + k + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), _mm512_loadu_ps(w + k + 48), a3);
    }
    for (; k + 16 <= K; k += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(w + k), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; k < K; k++) s += x[k] * w[k];
    y[n] = s;
  }
}
`;
const dir = await Deno.makeTempDir({ prefix: "medthink-gemv-" });
await Deno.writeTextFile(`${dir}/gemv.c`, SOURCE);
const cc = await new Deno.Command("cc", {
  args: ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", `${dir}/gemv.c`, "-o", `${dir}/libgemv.so`],
}).output();
if (!cc.success) throw new Error(`cc failed (needs AVX-512): ${new TextDecoder().decode(cc.stderr)}`);
const lib = Deno.dlopen(`${dir}/libgemv.so`, {
  gemv: { parameters: ["buffer", "buffer", "buffer", "i64", "i64"], result: "void" },
});

await useBackend("tensorflow");
// deno-lint-ignore no-explicit-any
const be = tf.backend() as any;
const b = be.binding;
const attrs = [
  { name: "T", type: b.TF_ATTR_TYPE, value: b.TF_FLOAT },
  { name: "transpose_a", type: b.TF_ATTR_BOOL, value: false },
  { name: "transpose_b", type: b.TF_ATTR_BOOL, value: true },
];

function aligned(n: number): Float32Array {
  const buf = new ArrayBuffer(n * 4 + 64);
  const addr = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(new Uint8Array(buf))));
  return new Float32Array(buf, (64 - (addr % 64)) % 64, n);
}

interface Mat {
  host: Float32Array;
  w: tf.Tensor2D;
  N: number;
  K: number;
  x: Float32Array;
  xt: tf.Tensor2D;
  y: Float32Array;
}
const shapes: [number, number][] = [];
for (let l = 0; l < 24; l++) {
  shapes.push([896, 896], [128, 896], [128, 896], [896, 896], [4864, 896], [4864, 896], [896, 4864]);
}
shapes.push([151936, 896]);
const mats: Mat[] = shapes.map(([N, K]) => {
  const host = aligned(N * K);
  for (let i = 0; i < host.length; i += 997) host[i] = 0.01;
  const x = aligned(K).fill(1);
  return { host, w: tf.tensor2d(host, [N, K]), N, K, x, xt: tf.tensor2d(x, [1, K]), y: aligned(N) };
});
const bytes = shapes.reduce((s, [N, K]) => s + N * K * 4, 0);
for (const m of mats) be.executeSingleOutput("MatMul", attrs, [m.xt, m.w]).dispose(); // TensorFlow adopts them
console.log(
  `${(bytes / 1e9).toFixed(2)} GB of weights, RSS ${(Deno.memoryUsage().rss / 1e9).toFixed(2)} GB`,
);
const times: Record<string, number[]> = { BatchMatMulV2: [], MatMul: [], "C gemv": [] };
for (let r = 0; r < reps; r++) {
  let t0 = performance.now();
  for (const m of mats) {
    const o = tf.matMul(m.xt, m.w, false, true);
    o.dataSync();
    o.dispose();
  }
  times.BatchMatMulV2.push(performance.now() - t0);
  t0 = performance.now();
  for (const m of mats) {
    const o = be.executeSingleOutput("MatMul", attrs, [m.xt, m.w]);
    o.dataSync();
    o.dispose();
  }
  times.MatMul.push(performance.now() - t0);
  t0 = performance.now();
  for (const m of mats) lib.symbols.gemv(m.x, m.host, m.y, BigInt(m.N), BigInt(m.K));
  times["C gemv"].push(performance.now() - t0);
}
const last = mats[mats.length - 1];
const ref = tf.matMul(last.xt, last.w, false, true).dataSync();
let d = 0;
for (let i = 0; i < last.N; i++) d = Math.max(d, Math.abs(ref[i] - last.y[i]));
for (const [k, v] of Object.entries(times)) {
  const s = [...v].sort((p, q) => p - q);
  const med = s[Math.floor(s.length / 2)];
  console.log(
    `${k}: median ${med.toFixed(1)} ms per step (${(bytes / med / 1e6).toFixed(1)} GB/s), fastest ${
      s[0].toFixed(1)
    } ms; all ${v.map((t) => t.toFixed(0)).join(" ")}`,
  );
}
console.log(`head: C loop vs TensorFlow max |difference| ${d.toExponential(2)}`);
lib.close();
await Deno.remove(dir, { recursive: true });
