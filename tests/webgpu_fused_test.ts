// The fused WebGPU programs (lib/model/webgpu_fused.ts, through lib/model/fused.ts) against the same
// functions on the cpu backend (plain tf ops): values and gradients, on decode and prefill shapes with
// grouped heads, a KV cache longer than a key chunk, causal and padding masks.
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import {
  applyRotary,
  attention,
  fusedOn,
  linearSmall,
  rmsNorm,
  setFused,
  swiglu,
} from "../lib/model/fused.ts";
import { attentionBias } from "../lib/model/qwen2.ts";
import {
  installSmallMatMul,
  smallMatMulInstalled,
  uninstallSmallMatMul,
} from "../lib/model/webgpu_matmul.ts";
import { backendTest } from "./_backends.ts";
import { lcgValues } from "./_numeric.ts";

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(what);
}

type Inputs = { shape: number[]; data?: Float32Array }[];

/**
 * `fn` and the gradient of `sum(fn(...) * r)` (r fixed random weights) for every input, on the current
 * backend: the values read back.
 */
async function evaluate(inputs: Inputs, fn: (...xs: tf.Tensor[]) => tf.Tensor, seed: number) {
  const xs = inputs.map((x, i) =>
    tf.tensor(x.data ?? lcgValues(x.shape.reduce((p, d) => p * d, 1), seed + i, 2), x.shape)
  );
  const y = fn(...xs);
  const r = tf.tensor(lcgValues(y.size, seed + 99, 2), y.shape);
  const grads = tf.grads((...a: tf.Tensor[]) => tf.sum(tf.mul(fn(...a), r)))(xs);
  const out = [await y.data(), ...await Promise.all(grads.map((g) => g.data()))] as Float32Array[];
  tf.dispose([...xs, y, r, ...grads]);
  return out;
}

async function compare(label: string, inputs: Inputs, fn: (...xs: tf.Tensor[]) => tf.Tensor, seed: number) {
  check(fusedOn(), "the fused programs should be on under webgpu");
  const got = await evaluate(inputs, fn, seed);
  await useBackend("cpu");
  const want = await evaluate(inputs, fn, seed);
  await useBackend("webgpu");
  want.forEach((w, j) => {
    const what = j === 0 ? "value" : `gradient ${j - 1}`;
    check(got[j].length === w.length, `${label} ${what}: ${got[j].length} values, want ${w.length}`);
    let err = 0, scale = 1;
    for (let i = 0; i < w.length; i++) {
      err = Math.max(err, Math.abs(got[j][i] - w[i]));
      scale = Math.max(scale, Math.abs(w[i]));
    }
    check(err <= 2e-5 * scale, `${label} ${what}: max |diff| ${err} (scale ${scale})`);
  });
}

/** A `[B, 1, T, S]` bias from a key mask (rows of 0/1) for T new tokens, computed on the cpu backend. */
async function bias(mask: number[][], t: number): Promise<Float32Array> {
  await useBackend("cpu");
  const b = attentionBias(tf.tensor2d(mask), t);
  const out = await b.data() as Float32Array;
  b.dispose();
  await useBackend("webgpu");
  return out;
}

/**
 * A webgpu test with the programs on whatever MEDTHINK_WEBGPU_FUSED / MEDTHINK_WEBGPU_MATMUL say (they test
 * the programs, not the switches), put back as the environment has them afterwards.
 */
function programTest(name: string, fn: () => Promise<void>): void {
  backendTest(name, "webgpu", async () => {
    const wasInstalled = smallMatMulInstalled();
    setFused(true);
    installSmallMatMul({});
    try {
      await fn();
    } finally {
      setFused(null);
      uninstallSmallMatMul();
      if (wasInstalled) installSmallMatMul();
    }
  });
}

programTest("fused: rmsNorm, swiglu and rotary against tf ops on cpu", async () => {
  await compare(
    "rmsNorm [5, 130]",
    [{ shape: [5, 130] }, { shape: [130] }],
    (x, w) => rmsNorm(x, w, 1e-6),
    1,
  );
  await compare(
    "rmsNorm [2, 3, 7]",
    [{ shape: [2, 3, 7] }, { shape: [7] }],
    (x, w) => rmsNorm(x, w, 1e-5),
    2,
  );
  await compare("swiglu [3, 301]", [{ shape: [3, 301] }, { shape: [3, 301] }], (g, u) => swiglu(g, u), 3);
  const rot = (x: tf.Tensor, c: tf.Tensor, s: tf.Tensor) => applyRotary(x as tf.Tensor4D, c, s);
  // Prefill layout [B, heads, T, D], and a decode step's [B, KV, G, D] with factors [B, 1, 1, D].
  await compare(
    "rotary prefill",
    [{ shape: [2, 3, 5, 8] }, { shape: [2, 1, 5, 8] }, { shape: [2, 1, 5, 8] }],
    rot,
    4,
  );
  await compare(
    "rotary decode",
    [{ shape: [2, 2, 3, 8] }, { shape: [2, 1, 1, 8] }, { shape: [2, 1, 1, 8] }],
    rot,
    5,
  );
});

programTest(
  "fused: a linear layer with its bias in one dispatch (small-M and tiled), and its gradients",
  async () => {
    const x = tf.ones([3, 40]) as tf.Tensor2D, w = tf.ones([21, 40]), b = tf.ones([21]);
    check(linearSmall(x, w, b) !== null, "linearSmall should take [3, 40] x [21, 40]ᵀ + [21] on webgpu");
    tf.dispose([x, w, b]);
    const lin = (x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
      linearSmall(x as tf.Tensor2D, w, b) ?? tf.add(tf.matMul(x, w, false, true), b);
    await compare("linear + bias", [{ shape: [3, 40] }, { shape: [21, 40] }, { shape: [21] }], lin, 40);
    await compare(
      "linear + bias, 32 rows",
      [{ shape: [32, 64] }, { shape: [9, 64] }, { shape: [9] }],
      lin,
      41,
    );
    // 70 rows: the tiled program with the bias (prefill, training forward).
    const x70 = tf.ones([70, 33]) as tf.Tensor2D, w70 = tf.ones([45, 33]), b70 = tf.ones([45]);
    check(linearSmall(x70, w70, b70) !== null, "linearSmall should take [70, 33] x [45, 33]ᵀ + [45] (tiled)");
    tf.dispose([x70, w70, b70]);
    await compare(
      "linear + bias, 70 rows",
      [{ shape: [70, 33] }, { shape: [45, 33] }, { shape: [45] }],
      lin,
      42,
    );
  },
);

programTest("fused: attention (decode, prefill, masks) against tf ops on cpu", async () => {
  const att = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, b: tf.Tensor) =>
    attention(q as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, b as tf.Tensor4D);
  // Decode: 2 rows, 2 KV heads of G = 3 query heads, 70 cached keys (two chunks), the first row
  // left-padded by 5.
  const padded = [Array.from({ length: 70 }, (_, j) => (j < 5 ? 0 : 1)), Array(70).fill(1)];
  await compare(
    "attention decode",
    [
      { shape: [2, 2, 3, 32] },
      { shape: [2, 2, 70, 32] },
      { shape: [2, 2, 70, 32] },
      { shape: [2, 1, 1, 70], data: await bias(padded, 1) },
    ],
    att,
    10,
  );
  // Prefill: T = 9 new tokens after 60 cached ones, G = 2 (R = 18 rows), head dim 80 (two values per
  // thread), causal and padding mask; and a row that is all padding (every key masked).
  const mask = [Array.from({ length: 69 }, (_, j) => (j < 3 ? 0 : 1)), Array(69).fill(1)];
  await compare(
    "attention prefill",
    [
      { shape: [2, 1, 18, 80] },
      { shape: [2, 1, 69, 80] },
      { shape: [2, 1, 69, 80] },
      { shape: [2, 1, 9, 69], data: await bias(mask, 9) },
    ],
    att,
    20,
  );
  await compare(
    "attention all masked",
    [
      { shape: [1, 1, 2, 16] },
      { shape: [1, 1, 4, 16] },
      { shape: [1, 1, 4, 16] },
      { shape: [1, 1, 2, 4], data: await bias([[0, 0, 0, 0]], 2) },
    ],
    att,
    30,
  );
});

backendTest("fused: MEDTHINK_WEBGPU_FUSED off means tf ops", "webgpu", () => {
  setFused(false);
  try {
    check(!fusedOn(), "setFused(false) should turn the programs off");
  } finally {
    setFused(null);
  }
  check(
    fusedOn() === (Deno.env.get("MEDTHINK_WEBGPU_FUSED") !== "0"),
    "setFused(null) should follow the env",
  );
});
