// Single-row products on the tensorflow backend (rowMatMulBT: TensorFlow's 2-D MatMul instead of tfjs's
// BatchMatMulV2): the same values as the batched op, only where no gradient is taken, and the same greedy
// tokens and log-probs (within float32 rounding) for a batch-1 generation of the golden fixtures.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { rowMatMulBT, setRowMatMul } from "../lib/model/fused.ts";
import { setNativeGemv } from "../lib/model/native_gemv.ts";
import { loadModel } from "../lib/model/load.ts";
import { matMulBT } from "../lib/model/qwen2.ts";
import type { GenerateResult } from "../lib/model/types.ts";
import { backendTest } from "./_backends.ts";
import { loadGolden, QWEN2_TINY } from "./_model_fixtures.ts";
import { assertGoldenGreedy, VL_DIR } from "./_vl_fixture.ts";
import { maxRelDiff } from "./_numeric.ts";

backendTest("rowMatMulBT: one row through MatMul equals the batched product", "tensorflow", async () => {
  try {
    setRowMatMul(true);
    for (const [N, K] of [[7, 5], [300, 64], [1000, 896]]) {
      const x = tf.randomNormal([1, K], 0, 1, "float32", 1) as tf.Tensor2D;
      const w = tf.randomNormal([N, K], 0, 1, "float32", 2) as tf.Tensor2D;
      const got = rowMatMulBT(x, w);
      assert(got !== null, "the row path applies to one float32 row without a tape");
      const want = tf.matMul(x, w, false, true);
      assertEquals(got.shape, [1, N]);
      const d = await maxRelDiff(got, want);
      assert(d < 1e-6, `[1, ${K}] x [${N}, ${K}]^T differs by ${d} (relative)`);
      tf.dispose([x, w, got, want]);
    }
    const x2 = tf.ones([2, 4]) as tf.Tensor2D,
      w = tf.ones([3, 4]) as tf.Tensor2D,
      x1 = tf.ones([1, 4]) as tf.Tensor2D;
    assert(rowMatMulBT(x2, w) === null, "two rows take the batched op");
    setRowMatMul(false);
    assert(rowMatMulBT(x1, w) === null, "off when switched off");
    setRowMatMul(true);
    // Under a tape the batched op runs, so the gradient is there (and the same as without the row path).
    const grad = tf.grad((a: tf.Tensor) => tf.sum(matMulBT(a as tf.Tensor2D, w)))(x1);
    assertEquals(Array.from(await grad.data()), [3, 3, 3, 3]);
    tf.dispose([x2, w, x1, grad]);
  } finally {
    setRowMatMul(null);
  }
});

backendTest(
  "qwen2-tiny batch 1: the row path gives the batched path's logits, greedy tokens and log-probs",
  "tensorflow",
  async () => {
    const g = loadGolden();
    const model = await loadModel(QWEN2_TINY, { backend: "tensorflow" });
    try {
      const ids = [g.input_ids[0]];
      const runs: { logits: tf.Tensor; out: GenerateResult }[] = [];
      setNativeGemv(false); // this file tests TensorFlow's row path (model_native_gemv_test.ts the native one)
      for (const on of [false, true]) {
        setRowMatMul(on);
        const logits = model.logits(ids.map((r) => r.slice(0, 1))); // one position: single-row products
        const out = await model.generate(ids, { maxNewTokens: 8, temperature: 0, eosTokenIds: [] });
        runs.push({ logits, out });
      }
      // The row path does run: with it on, the linear layers and the head leave tfjs's BatchMatMul.
      const batched = async (on: boolean) => {
        setRowMatMul(on);
        const info = await tf.profile(() => model.logits([[g.input_ids[0][0]]]));
        tf.dispose(info.result as tf.Tensor);
        return info.kernels.filter((k) => k.name === "BatchMatMul").length;
      };
      const off = await batched(false), on = await batched(true);
      // 7 linear layers per decoder layer and the head; attention's two products stay batched.
      assertEquals(off - on, 7 * model.config.numHiddenLayers + 1);
      const d = await maxRelDiff(runs[1].logits, runs[0].logits);
      assert(d < 1e-5, `one-position logits differ by ${d} (relative)`);
      assertEquals(runs[1].out.tokens, runs[0].out.tokens);
      assertEquals(runs[1].out.tokens, [g.greedy_new_tokens[0]]);
      for (let i = 0; i < runs[0].out.logprobs[0].length; i++) {
        const a = runs[0].out.logprobs[0][i], b = runs[1].out.logprobs[0][i];
        assert(Math.abs(a - b) < 1e-5, `log-prob ${i}: ${b} vs ${a}`);
      }
      tf.dispose(runs.map((r) => r.logits));
    } finally {
      setRowMatMul(null);
      setNativeGemv(null);
      model.dispose();
    }
  },
);

backendTest(
  "qwen25vl-tiny batch 1: the row path gives the batched path's greedy tokens",
  "tensorflow",
  async () => {
    const model = await loadModel(VL_DIR, { backend: "tensorflow" });
    setNativeGemv(false);
    try {
      for (const on of [false, true]) {
        setRowMatMul(on);
        await assertGoldenGreedy(model, { label: `row path ${on ? "on" : "off"}` });
      }
    } finally {
      setRowMatMul(null);
      setNativeGemv(null);
      model.dispose();
    }
  },
);
