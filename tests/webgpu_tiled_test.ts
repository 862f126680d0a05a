// The tiled WebGPU matrix product (lib/model/webgpu_tiled.ts) against the cpu backend's tf.matMul, on
// every shape class the model produces: many rows, odd K and N, transposed operands (the backward
// products), batch broadcasting; and through tf.matMul once installed (with its gradients).
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import { tiledMatMul, tiledPlan } from "../lib/model/webgpu_tiled.ts";
import { installSmallMatMul, uninstallSmallMatMul } from "../lib/model/webgpu_matmul.ts";
import { backendTest } from "./_backends.ts";
import { lcgValues } from "./_numeric.ts";

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

interface Case {
  a: number[];
  b: number[];
  transposeA: boolean;
  transposeB: boolean;
}

const size = (s: number[]) => s.reduce((p, d) => p * d, 1);

async function cpuMatMul(c: Case, av: Float32Array, bv: Float32Array): Promise<[Float32Array, number[]]> {
  await useBackend("cpu");
  const y = tf.tidy(() => tf.matMul(tf.tensor(av, c.a), tf.tensor(bv, c.b), c.transposeA, c.transposeB));
  const out: [Float32Array, number[]] = [await y.data() as Float32Array, y.shape];
  y.dispose();
  await useBackend("webgpu");
  return out;
}

async function compare(c: Case, run: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, seed: number): Promise<void> {
  const av = lcgValues(size(c.a), seed, 2), bv = lcgValues(size(c.b), seed + 1, 2);
  const [want, wantShape] = await cpuMatMul(c, av, bv);
  const a = tf.tensor(av, c.a), b = tf.tensor(bv, c.b);
  const y = run(a, b);
  const got = await y.data() as Float32Array;
  const label = `[${c.a}]${c.transposeA ? "ᵀ" : ""} x [${c.b}]${c.transposeB ? "ᵀ" : ""}`;
  check(
    JSON.stringify(y.shape) === JSON.stringify(wantShape),
    `${label}: shape [${y.shape}], want [${wantShape}]`,
  );
  tf.dispose([a, b, y]);
  let err = 0, scale = 1;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  check(err <= 1e-4 * scale, `${label}: max |diff| ${err} (scale ${scale})`);
}

const CASES: Case[] = [];
// Every transpose combination on odd sizes that leave partial tiles in M, N and K.
for (const [tA, tB] of [[false, false], [false, true], [true, false], [true, true]]) {
  for (const [m, k, n] of [[1, 7, 5], [65, 33, 67], [130, 17, 9], [37, 200, 129]]) {
    CASES.push({ a: tA ? [k, m] : [m, k], b: tB ? [n, k] : [k, n], transposeA: tA, transposeB: tB });
  }
}
CASES.push(
  { a: [4096, 24], b: [40, 24], transposeA: false, transposeB: true }, // prefill-sized M
  { a: [2, 3, 70, 32], b: [2, 3, 90, 32], transposeA: false, transposeB: true }, // attention scores
  { a: [2, 3, 70, 90], b: [2, 3, 90, 32], transposeA: false, transposeB: false }, // attention context
  { a: [2, 3, 90, 70], b: [2, 3, 90, 32], transposeA: true, transposeB: false }, // dV = Pᵀ dO
  { a: [3, 80, 12], b: [12, 9], transposeA: false, transposeB: false }, // b without batch
  { a: [80, 12], b: [4, 12, 9], transposeA: false, transposeB: false }, // a without batch
  { a: [1, 12, 80], b: [4, 1, 12, 9], transposeA: true, transposeB: false }, // batch of 1 against 4
);

backendTest("tiled matmul: tiledMatMul against the cpu backend", "webgpu", async () => {
  let seed = 1;
  for (const c of CASES) {
    check(tiledPlan(c.a, c.b, c.transposeA, c.transposeB) !== null, `[${c.a}] x [${c.b}] should fit`);
    await compare(c, (a, b) => tiledMatMul(a, b, c), seed++);
  }
  check(tiledPlan([2, 5, 4], [3, 4, 6], false, false) === null, "batches 2 and 3 should not fit");
  check(tiledPlan([5, 4], [5, 6], false, false) === null, "inner sizes 4 and 5 should not fit");
});

backendTest(
  "tiled matmul: installed under tf.matMul, with a linear layer's gradients",
  "webgpu",
  async () => {
    check(installSmallMatMul({ maxM: 32 }), "install over webgpu's BatchMatMul");
    try {
      // One product per transpose combination, through tf.matMul.
      for (const i of [1, 5, 9, 13]) {
        const c = CASES[i];
        await compare(c, (a, b) => tf.matMul(a, b, c.transposeA, c.transposeB), 50 + i);
      }
      // x Wᵀ with 70 rows: the forward, dy W and dyᵀ x all run the tiled program.
      const xv = lcgValues(70 * 33, 7, 2), wv = lcgValues(45 * 33, 8, 2);
      const grads = async () => {
        const x = tf.tensor2d(xv, [70, 33]), w = tf.tensor2d(wv, [45, 33]);
        const [gx, gw] = tf.grads((x: tf.Tensor, w: tf.Tensor) =>
          tf.matMul(x, w, false, true).square().sum()
        )([x, w]);
        const out = [await gx.data(), await gw.data()];
        tf.dispose([x, w, gx, gw]);
        return out;
      };
      const got = await grads();
      await useBackend("cpu");
      const want = await grads();
      await useBackend("webgpu");
      for (let j = 0; j < 2; j++) {
        const scale = Math.max(1, ...want[j].map(Math.abs));
        const d = Math.max(...got[j].map((v, i) => Math.abs(v - want[j][i])));
        check(d < 1e-4 * scale, `gradient ${j}: max |diff| ${d} (scale ${scale})`);
      }
    } finally {
      uninstallSmallMatMul();
      installSmallMatMul(); // as useBackend left it
    }
  },
);
