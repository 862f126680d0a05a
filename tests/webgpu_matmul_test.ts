// The small-M WebGPU matrix product (lib/model/webgpu_matmul.ts) against the cpu backend's tf.matMul.
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import {
  installSmallMatMul,
  smallMatMul,
  smallMatMulApplies,
  smallMatMulHalfBT,
  smallMatMulInstalled,
  uninstallSmallMatMul,
} from "../lib/model/webgpu_matmul.ts";
import { halfMatMulBT } from "../lib/model/fused.ts";
import { f32BitsToBf16, f32BitsToF16, widenHalf } from "../lib/model/weights.ts";
import { backendTest } from "./_backends.ts";
import { lcgValues } from "./_numeric.ts";

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

interface Case {
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB: boolean;
}

function size(shape: number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

/** tf.matMul on the cpu backend (the reference), then back to webgpu. */
async function reference(c: Case, av: Float32Array, bv: Float32Array): Promise<Float32Array> {
  await useBackend("cpu");
  const y = tf.tidy(() =>
    tf.matMul(tf.tensor(av, c.a), tf.tensor(bv, c.b), c.transposeA ?? false, c.transposeB)
  );
  const out = await y.data() as Float32Array;
  y.dispose();
  await useBackend("webgpu");
  return out;
}

/** Largest |got - want|, checked against 1e-4 of the result's scale. */
async function compare(c: Case, run: (a: tf.Tensor, b: tf.Tensor) => tf.Tensor, seed: number): Promise<void> {
  const av = lcgValues(size(c.a), seed, 2), bv = lcgValues(size(c.b), seed + 1, 2);
  const want = await reference(c, av, bv);
  const a = tf.tensor(av, c.a), b = tf.tensor(bv, c.b);
  const y = run(a, b);
  const got = await y.data() as Float32Array;
  const shape = y.shape;
  tf.dispose([a, b, y]);
  const wantShape = await (async () => {
    await useBackend("cpu");
    const s = tf.matMul(tf.zeros(c.a), tf.zeros(c.b), c.transposeA ?? false, c.transposeB).shape;
    await useBackend("webgpu");
    return s;
  })();
  const label = `[${c.a}] x [${c.b}]${c.transposeA ? " tA" : ""}${c.transposeB ? " tB" : ""}`;
  check(
    JSON.stringify(shape) === JSON.stringify(wantShape),
    `${label}: shape [${shape}], want [${wantShape}]`,
  );
  check(got.length === want.length, `${label}: ${got.length} values, want ${want.length}`);
  let err = 0, scale = 1;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  check(err <= 1e-4 * scale, `${label}: max |diff| ${err} (scale ${scale})`);
}

const DECODE: Case[] = [];
for (const m of [1, 3, 8, 32]) {
  for (const [k, n] of [[10, 7], [897, 33], [4864, 31], [896, 129], [64, 5]]) {
    DECODE.push({ a: [m, k], b: [n, k], transposeB: true });
  }
}
const OTHER: Case[] = [
  { a: [2, 3, 7, 64], b: [2, 3, 19, 64], transposeB: true }, // attention scores, batched b
  { a: [2, 3, 7, 19], b: [2, 3, 19, 64], transposeB: false }, // attention context
  { a: [1, 3, 12], b: [4, 12, 9], transposeB: false }, // batch 1 a against a batched b
  { a: [3, 10], b: [10, 7], transposeB: false }, // scalar columns, N odd
  { a: [8, 33], b: [33, 20], transposeB: false },
  { a: [1, 1000], b: [1000, 300], transposeB: false },
  { a: [13, 100], b: [17, 100], transposeB: true }, // compiled for 16 rows
  { a: [29, 40], b: [40, 36], transposeB: false }, // compiled for 32 rows
  { a: [2, 5, 16], b: [9, 16], transposeB: true }, // 10 rows once the batch is folded in
];
const FALLBACK: Case[] = [
  { a: [64, 40], b: [24, 40], transposeB: true }, // too many rows
  { a: [40, 5], b: [24, 40], transposeA: true, transposeB: true },
  { a: [5, 2000], b: [2000, 24], transposeB: false }, // a b with K > 1024
  { a: [33, 40], b: [24, 40], transposeB: true },
  { a: [2, 20, 16], b: [9, 16], transposeB: true }, // 40 rows once the batch is folded in
];

backendTest("small-M matmul: smallMatMul against the cpu backend", "webgpu", async () => {
  let seed = 1;
  for (const c of [...DECODE, ...OTHER]) {
    check(smallMatMulApplies(c.a, c.b, c), `[${c.a}] x [${c.b}] should qualify`);
    await compare(c, (a, b) => smallMatMul(a, b, c), seed++);
  }
});

backendTest("small-M matmul: installed under tf.matMul, fallbacks and gradients", "webgpu", async (t) => {
  check(
    installSmallMatMul({ maxM: 32, tiled: false }),
    "installSmallMatMul should install over webgpu's BatchMatMul",
  );
  try {
    await t.step("qualifying products", async () => {
      let seed = 100;
      for (const c of [DECODE[1], DECODE[17], ...OTHER.slice(0, 3), OTHER[OTHER.length - 1]]) {
        await compare(c, (a, b) => tf.matMul(a, b, false, c.transposeB), seed++);
      }
    });
    await t.step("other products go to tfjs's kernel", async () => {
      let seed = 200;
      for (const c of FALLBACK) {
        check(
          !smallMatMulApplies(c.a, c.b, { ...c, maxM: 32 }),
          `[${c.a}] x [${c.b}] should not qualify`,
        );
        await compare(c, (a, b) => tf.matMul(a, b, c.transposeA ?? false, c.transposeB), seed++);
      }
      // int32 data cast to float32 (tfjs-webgpu keeps the int32 buffer): the program reads it as floats.
      const idList = [3, 3, 0, 5, 3, 7, 7, 1];
      const ids = tf.tensor1d(idList, "int32");
      const w = tf.tensor2d(lcgValues(11 * 8, 300, 2), [11, 8]);
      const rows = await w.array();
      for (const transposeB of [false, true]) {
        const oneHot = tf.cast(transposeB ? tf.oneHot(ids, 8) : tf.oneHot(ids, 11), "float32");
        const got = await tf.matMul(oneHot, w, false, transposeB).array() as number[][];
        const want = transposeB
          ? idList.map((id) => rows.map((r) => r[id])) // rows of w^T
          : idList.map((id) => rows[id]);
        const d = Math.max(...got.flat().map((v, i) => Math.abs(v - want.flat()[i])));
        check(d < 1e-6, `one-hot (int32 data) times w${transposeB ? "^T" : ""}: max |diff| ${d}`);
        oneHot.dispose();
      }
      tf.dispose([ids, w]);
      const i = tf.matMul(tf.ones([2, 3], "int32"), tf.ones([4, 3], "int32"), false, true);
      check(i.dtype === "int32", `int32 product gave ${i.dtype}`);
      check((await i.data()).every((v) => v === 3), "int32 product of ones should be 3");
      i.dispose();
    });
    await t.step("gradients of x wᵀ", async () => {
      const xv = lcgValues(3 * 10, 7, 2), wv = lcgValues(7 * 10, 8, 2);
      const grads = async () => {
        const x = tf.tensor2d(xv, [3, 10]), w = tf.tensor2d(wv, [7, 10]);
        const g = tf.grads((x: tf.Tensor, w: tf.Tensor) => tf.matMul(x, w, false, true).square().sum());
        const [gx, gw] = g([x, w]);
        const out = [await gx.data(), await gw.data()];
        tf.dispose([x, w, gx, gw]);
        return out;
      };
      const got = await grads();
      await useBackend("cpu");
      const want = await grads();
      await useBackend("webgpu");
      for (let j = 0; j < 2; j++) {
        const d = Math.max(...got[j].map((v, i) => Math.abs(v - want[j][i])));
        check(d < 1e-4, `gradient ${j}: max |diff| ${d}`);
      }
    });
  } finally {
    uninstallSmallMatMul();
    installSmallMatMul(); // as useBackend left it
  }
});

backendTest(
  "small-M matmul: packed bfloat16/float16 weights read as stored, with x's gradient",
  "webgpu",
  async () => {
    // The program on whatever MEDTHINK_WEBGPU_MATMUL says (halfMatMulBT needs it installed), put back after.
    const wasInstalled = smallMatMulInstalled();
    installSmallMatMul({});
    try {
      for (const dtype of ["bfloat16", "float16"] as const) {
        for (const [m, k, n] of [[1, 64, 33], [5, 136, 7], [32, 264, 40]]) {
          // Random weights rounded to the format, packed two codes per word (element 2i low).
          const bitsOf = new Uint32Array(lcgValues(n * k, m + k, 2).buffer);
          const codes = new Uint16Array(n * k).map((_, i) =>
            dtype === "bfloat16" ? f32BitsToBf16(bitsOf[i]) : f32BitsToF16(bitsOf[i])
          );
          const packed = tf.tensor1d(new Int32Array(codes.buffer), "int32");
          const w = { packed, shape: [n, k], dtype };
          const xv = lcgValues(m * k, n, 2);
          const x = tf.tensor2d(xv, [m, k]);
          const wide = widenHalf(w); // exact on webgpu (tests/model_half_weights_test.ts)
          const wideValues = await wide.data() as Float32Array;
          const got = smallMatMulHalfBT(x, packed, [n, k], dtype);
          check(got !== null, `[${m},${k}] x ${dtype} [${n},${k}] should qualify`);
          check(
            JSON.stringify(got!.shape) === JSON.stringify([m, n]),
            `shape [${got!.shape}], want [${m},${n}]`,
          );
          const [gv, want] = [
            await got!.data(),
            await (async () => {
              await useBackend("cpu");
              const y = tf.matMul(tf.tensor2d(xv, [m, k]), tf.tensor2d(wideValues, [n, k]), false, true);
              const out = await y.data();
              await useBackend("webgpu");
              return out;
            })(),
          ];
          const d = Math.max(...gv.map((v, i) => Math.abs(v - want[i])));
          const scale = Math.max(1, ...want.map(Math.abs));
          check(d <= 1e-5 * scale, `${dtype} [${m},${k}]x[${n},${k}]ᵀ: max |diff| ${d}`);
          // d/dx sum(y * r) = r W, through halfMatMulBT's gradient.
          const r = tf.tensor2d(lcgValues(m * n, 9, 2), [m, n]);
          const gx = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(halfMatMulBT(xx as tf.Tensor2D, w)!, r)))(x);
          const wantGx = tf.matMul(r, wide);
          const dg = await tf.max(tf.abs(tf.sub(gx, wantGx))).data();
          check(dg[0] <= 1e-4, `${dtype} gradient: max |diff| ${dg[0]}`);
          tf.dispose([packed, x, wide, got!, r, gx, wantGx]);
        }
      }
    } finally {
      uninstallSmallMatMul();
      if (wasInstalled) installSmallMatMul();
    }
  },
);
