// The native single-row products (lib/model/native_gemv.ts, C loop in lib/model/native/gemv.c) on the
// tensorflow backend: the same values as TensorFlow's product (float32, and the widened 2-byte weights),
// only where no gradient is taken and only for the data a weight was loaded with (an assigned weight goes
// back to TensorFlow: no stale host copy), and the same greedy tokens and log-probs on the text and VL
// fixtures with the path on as off. The test builds the library itself (as `deno task setup:tensorflow`).
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import {
  buildNativeGemv,
  hostFloatTensor,
  hostHalfWords,
  nativeGemvCalls,
  nativeGemvReason,
  nativeHalfRowMatMulBT,
  nativeRowMatMulBT,
  setNativeGemv,
} from "../lib/model/native_gemv.ts";
import { loadModel } from "../lib/model/load.ts";
import { matMulBT } from "../lib/model/qwen2.ts";
import { f32BitsToBf16, f32BitsToF16, widenHalf } from "../lib/model/weights.ts";
import type { GenerateResult, HalfWeight } from "../lib/model/types.ts";
import { backendTest } from "./_backends.ts";
import { loadGolden, QWEN2_TINY } from "./_model_fixtures.ts";
import { assertGoldenGreedy, VL_DIR } from "./_vl_fixture.ts";
import { lcgValues, maxRelDiff } from "./_numeric.ts";

const built = buildNativeGemv();
if (!built.lib) console.warn(`native products not built here: ${built.reason}`);

const SHAPES = [[7, 5], [300, 64], [1000, 896], [4864, 896], [896, 4864], [33, 37]];

backendTest("native gemv: float32 rows equal TensorFlow's product", "tensorflow", async () => {
  assertEquals(nativeGemvReason(), "", "the library is built and on here");
  for (const [N, K] of SHAPES) {
    const w = hostFloatTensor(lcgValues(N * K, N), [N, K]) as tf.Tensor2D;
    assert(w !== null, "host memory on tensorflow");
    const x = tf.tensor2d(lcgValues(K, K + 1), [1, K]);
    const before = nativeGemvCalls();
    const got = nativeRowMatMulBT(x, w);
    assert(got !== null, "applies to one float32 row without a tape");
    assertEquals(nativeGemvCalls(), before + 1);
    assertEquals(got.shape, [1, N]);
    const want = tf.matMul(x, w, false, true);
    const d = await maxRelDiff(got, want);
    assert(d < 1e-6, `[1, ${K}] x [${N}, ${K}]^T differs by ${d} (relative)`);
    tf.dispose([w, x, got, want]);
  }
});

backendTest("native gemv: 2-byte rows equal the product of the widened weight", "tensorflow", async () => {
  for (const dtype of ["bfloat16", "float16"] as const) {
    for (const [N, K] of SHAPES.filter(([n, k]) => (n * k) % 2 === 0)) {
      const bits = new Uint32Array(lcgValues(N * K, N + K).buffer);
      const codes = new Uint16Array(N * K);
      for (let i = 0; i < codes.length; i++) {
        codes[i] = dtype === "bfloat16" ? f32BitsToBf16(bits[i]) : f32BitsToF16(bits[i]);
      }
      const packed = hostHalfWords(new Int32Array(codes.buffer), dtype);
      assert(packed !== null);
      const w: HalfWeight = { packed, shape: [N, K], dtype };
      const x = tf.tensor2d(lcgValues(K, 7), [1, K]);
      const got = nativeHalfRowMatMulBT(x, w);
      assert(got !== null, `${dtype}: applies`);
      const wide = widenHalf(w);
      const want = tf.matMul(x, wide as tf.Tensor2D, false, true);
      const d = await maxRelDiff(got, want);
      assert(d < 1e-6, `${dtype} [${N}, ${K}]: differs by ${d} (relative)`);
      // The float32 matrix widened in C at load equals TensorFlow's widening exactly.
      const loaded = hostFloatTensor(codes, [N, K], dtype)!;
      assertEquals(Array.from(await loaded.data()), Array.from(await wide.data()));
      tf.dispose([packed, x, got, wide, want, loaded]);
    }
  }
});

backendTest(
  "native gemv: only without a tape, only when on, never for assigned data",
  "tensorflow",
  async () => {
    const w = tf.variable(hostFloatTensor(lcgValues(12, 1), [3, 4])!, true);
    const x1 = tf.tensor2d([[1, 2, 3, 4]]);
    try {
      assert(
        nativeRowMatMulBT(x1, w as tf.Tensor as tf.Tensor2D) !== null,
        "a variable shares its data's view",
      );
      assert(
        nativeRowMatMulBT(tf.ones([2, 4]) as tf.Tensor2D, w as tf.Tensor as tf.Tensor2D) === null,
        "2 rows",
      );
      assert(nativeRowMatMulBT(x1, tf.ones([3, 4]) as tf.Tensor2D) === null, "a tensor without host memory");
      setNativeGemv(false);
      assert(nativeRowMatMulBT(x1, w as tf.Tensor as tf.Tensor2D) === null, "switched off");
      setNativeGemv(null);
      // Under a tape the tf op runs, so the gradient is there.
      const grad = tf.grad((a: tf.Tensor) =>
        tf.sum(matMulBT(a as tf.Tensor2D, w as tf.Tensor as tf.Tensor2D))
      )(x1);
      const col = await tf.sum(w, 0).data();
      assertEquals(Array.from(await grad.data()), Array.from(col));
      // An optimizer's update or a merge assigns new data: the product must see it (TensorFlow's path).
      w.assign(tf.fill([3, 4], 2));
      assert(nativeRowMatMulBT(x1, w as tf.Tensor as tf.Tensor2D) === null, "no view of the assigned data");
      assertEquals(Array.from(await matMulBT(x1, w as tf.Tensor as tf.Tensor2D).data()), [20, 20, 20]);
      tf.dispose(grad);
    } finally {
      setNativeGemv(null);
      w.dispose();
      x1.dispose();
    }
  },
);

backendTest(
  "native gemv: an optimizer step on a loaded model is seen by decoding",
  "tensorflow",
  async () => {
    const g = loadGolden();
    const model = await loadModel(QWEN2_TINY, { backend: "tensorflow" });
    try {
      const ids = [[g.input_ids[0][0]]];
      const name = "model.layers.0.mlp.down_proj.weight";
      const v = model.params[name];
      // One SGD step on every parameter (the update assigns each variable), then compare on vs off.
      const opt = tf.train.sgd(0.5);
      opt.minimize(() => tf.mean(model.logits([g.input_ids[0].slice(0, 4)])) as tf.Scalar);
      opt.dispose();
      const changed = await tf.sum(tf.abs(v)).data();
      assert(changed[0] > 0);
      const before = nativeGemvCalls();
      setNativeGemv(true);
      const on = model.logits(ids);
      setNativeGemv(false);
      const off = model.logits(ids);
      assert(
        nativeGemvCalls() - before <= 1,
        "after the update only the untouched tensors could read host memory",
      );
      assert(await maxRelDiff(on, off) < 1e-6, "the updated weights are used with the path on");
      tf.dispose([on, off]);
    } finally {
      setNativeGemv(null);
      model.dispose();
    }
  },
);

for (const weightsDtype of ["float32", "bfloat16"] as const) {
  backendTest(
    `qwen2-tiny batch 1 (${weightsDtype} weights): native on gives the same logits, greedy tokens and log-probs`,
    "tensorflow",
    async () => {
      const g = loadGolden();
      const model = await loadModel(QWEN2_TINY, { backend: "tensorflow", weightsDtype });
      try {
        const ids = [g.input_ids[0]];
        const runs: { logits: tf.Tensor; out: GenerateResult; calls: number }[] = [];
        for (const on of [false, true]) {
          setNativeGemv(on);
          const c0 = nativeGemvCalls();
          const logits = model.logits(ids.map((r) => r.slice(0, 1))); // one position: single-row products
          const out = await model.generate(ids, { maxNewTokens: 8, temperature: 0, eosTokenIds: [] });
          runs.push({ logits, out, calls: nativeGemvCalls() - c0 });
        }
        assertEquals(runs[0].calls, 0);
        // 7 linear layers per decoder layer and the head, per single-row forward pass (the logits call and
        // the 7 decode steps after the prompt), plus the head on the prompt's last position; the tied head
        // is float32 also under 2-byte weights.
        assertEquals(runs[1].calls, 8 * (7 * model.config.numHiddenLayers + 1) + 1);
        // The decoder layers run in C as a whole (RMSNorm, SwiGLU, residuals; RoPE on the host): a
        // one-position forward pass has only the final norm's Rsqrt, no Sigmoid and no SplitV among its
        // tfjs kernels (the check can fail).
        const kernels = async (on: boolean) => {
          setNativeGemv(on);
          const info = await tf.profile(() => model.logits([[g.input_ids[0][0]]]));
          tf.dispose(info.result as tf.Tensor);
          const count = (name: string) => info.kernels.filter((k) => k.name === name).length;
          return [count("Rsqrt"), count("Sigmoid"), count("SplitV")];
        };
        const L = model.config.numHiddenLayers;
        // (RoPE's split of q and k per layer: rotated on the host with the path on.)
        const off = await kernels(false);
        assertEquals(off.slice(0, 2), [2 * L + 1, L]);
        assertEquals(await kernels(true), [1, 0, off[2] - 2 * L]);
        const d = await maxRelDiff(runs[1].logits, runs[0].logits);
        assert(d < 1e-5, `one-position logits differ by ${d} (relative)`);
        assertEquals(runs[1].out.tokens, runs[0].out.tokens);
        if (weightsDtype === "float32") assertEquals(runs[1].out.tokens, [g.greedy_new_tokens[0]]);
        for (let i = 0; i < runs[0].out.logprobs[0].length; i++) {
          const a = runs[0].out.logprobs[0][i], b = runs[1].out.logprobs[0][i];
          assert(Math.abs(a - b) < 1e-5, `log-prob ${i}: ${b} vs ${a}`);
        }
        tf.dispose(runs.map((r) => r.logits));
      } finally {
        setNativeGemv(null);
        model.dispose();
      }
    },
  );
}

backendTest("qwen25vl-tiny batch 1: native on gives the same greedy tokens", "tensorflow", async () => {
  const model = await loadModel(VL_DIR, { backend: "tensorflow" });
  try {
    const c0 = nativeGemvCalls();
    await assertGoldenGreedy(model, { label: "native products on" });
    assert(nativeGemvCalls() > c0, "the native products ran");
  } finally {
    model.dispose();
  }
});
