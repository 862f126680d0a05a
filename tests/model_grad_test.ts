// Gradients through the whole Qwen2 forward (tf.variableGrads) and the LoRA hook, against
// qwen2-tiny/train_golden.json, on every backend (wasm included: its gather has no gradient kernel).
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { batchMatMul, embeddingLookup, matMulBT, WASM_SLICE_MATMUL_MIN_WORK } from "../lib/model/qwen2.ts";
import type { CausalLM } from "../lib/model/types.ts";
import { BACKENDS, backendTest } from "./_backends.ts";
import { check, loadTrainGolden, maxAbsDiff, QWEN2_TINY, take } from "./_model_fixtures.ts";

interface TrainGolden {
  sft: {
    input_ids: number[][];
    attention_mask: number[][];
    labels: number[][];
    loss: number;
    grads: Record<string, number[] | number[][]>;
  };
  lora: {
    r: number;
    alpha: number;
    weights: Record<string, number[][]>;
    expected_logits: number[][][];
    expected_sft_loss: number;
    expected_grads: Record<string, number[][]>;
  };
}
const G = loadTrainGolden<TrainGolden>();

/** Hugging Face causal-LM loss: mean CE of logits[:, t] against labels[:, t + 1], -100 ignored. */
function sftLoss(model: CausalLM, ids: number[][], mask: number[][], labels: number[][]): tf.Scalar {
  const T = ids[0].length;
  const logits = model.logits(ids, { attentionMask: mask });
  const V = logits.shape[2];
  const lp = tf.logSoftmax(tf.slice(logits, [0, 0, 0], [ids.length, T - 1, V]));
  const next = labels.map((r) => r.slice(1));
  const valid = tf.tensor2d(next.map((r) => r.map((x) => (x === -100 ? 0 : 1))));
  const picked = tf.sum(
    tf.mul(lp, tf.oneHot(tf.tensor2d(next.map((r) => r.map((x) => Math.max(x, 0))), undefined, "int32"), V)),
    -1,
  );
  return tf.div(tf.neg(tf.sum(tf.mul(picked, valid))), tf.sum(valid)) as tf.Scalar;
}

function relL2(got: Float32Array | number[], want: number[]): number {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    num += (got[i] - want[i]) ** 2;
    den += want[i] ** 2;
  }
  return Math.sqrt(num / den);
}

for (const backend of BACKENDS) {
  backendTest("qwen2-tiny: SFT loss and gradients through variableGrads", backend, async () => {
    const model = await loadModel(QWEN2_TINY, { backend });
    try {
      const { value: loss, grads } = tf.variableGrads(() =>
        sftLoss(model, G.sft.input_ids, G.sft.attention_mask, G.sft.labels)
      );
      const l = (await loss.data())[0];
      check(Math.abs(l - G.sft.loss) / G.sft.loss < 1e-4, `loss ${l} vs ${G.sft.loss}`);
      const byVar = new Map(Object.entries(model.params).map(([n, v]) => [v.name, n]));
      const named: Record<string, tf.Tensor> = {};
      for (const [vn, g] of Object.entries(grads)) named[byVar.get(vn)!] = g;
      check(Object.keys(named).length === Object.keys(model.params).length, "a gradient for every parameter");
      for (const [name, want] of Object.entries(G.sft.grads)) {
        const got = await named[name].data() as Float32Array;
        const e = relL2(got, (want as number[]).flat());
        check(e < 1e-3, `grad ${name}: relative L2 error ${e}`);
      }
      loss.dispose();
      Object.values(grads).forEach((g) => g.dispose());
    } finally {
      model.dispose();
    }
  });

  backendTest(
    "qwen2-tiny: LoRA adapters (PEFT semantics): logits, loss and adapter gradients",
    backend,
    async () => {
      const model = await loadModel(QWEN2_TINY, { backend });
      try {
        const scale = G.lora.alpha / G.lora.r;
        const prefix = "base_model.model.";
        for (const [key, w] of Object.entries(G.lora.weights)) {
          const m = key.slice(prefix.length).replace(/\.lora_[AB]\.weight$/, "");
          const which = key.includes("lora_A") ? "A" : "B";
          const ad = model.lora[m] ?? (model.lora[m] = { A: null!, B: null!, scale });
          ad[which] = tf.variable(tf.tensor2d(w), true);
        }
        const { input_ids, attention_mask, labels } = G.sft;
        const got = await take(model.logits(input_ids, { attentionMask: attention_mask }));
        const d = maxAbsDiff(got, G.lora.expected_logits, attention_mask);
        check(d < 1e-3, `LoRA logits differ by ${d}`);
        // Only the adapters train; base weights stay frozen.
        const varList = Object.values(model.lora).flatMap((a) => [a.A, a.B]);
        const res = tf.variableGrads(() => sftLoss(model, input_ids, attention_mask, labels), varList);
        const l = (await res.value.data())[0];
        check(Math.abs(l - G.lora.expected_sft_loss) / G.lora.expected_sft_loss < 1e-4, `LoRA loss ${l}`);
        for (const [key, want] of Object.entries(G.lora.expected_grads)) {
          const m = key.slice(prefix.length).replace(/\.lora_[AB]\.weight$/, "");
          const v = key.includes("lora_A") ? model.lora[m].A : model.lora[m].B;
          const e = relL2(await res.grads[v.name].data() as Float32Array, want.flat());
          check(e < 1e-3, `grad ${key}: relative L2 error ${e}`);
        }
        // Disabled adapters give the base model back.
        model.loraEnabled = false;
        const base = await take(model.logits(input_ids, { attentionMask: attention_mask }));
        model.loraEnabled = true;
        check(
          maxAbsDiff(base, G.lora.expected_logits, attention_mask) > 1e-2,
          "disabling LoRA changes the logits",
        );
        res.value.dispose();
        Object.values(res.grads).forEach((g) => g.dispose());
      } finally {
        model.dispose();
      }
    },
  );
}

for (const backend of BACKENDS) {
  backendTest("embeddingLookup: gradient sums repeated ids (one-hot matmul reference)", backend, async () => {
    const W = tf.variable(tf.randomNormal([11, 5], 0, 1, "float32", 7), true);
    const ids = tf.tensor2d([[3, 3, 0, 10], [3, 7, 7, 1]], undefined, "int32");
    const up = tf.randomNormal([2, 4, 5], 0, 1, "float32", 8);
    const got = tf.variableGrads(() => tf.sum(tf.mul(embeddingLookup(W, ids), up)) as tf.Scalar, [W]);
    const want = tf.variableGrads(
      () =>
        tf.sum(
          tf.mul(tf.reshape(tf.matMul(tf.oneHot(tf.reshape(ids, [-1]), 11), W), [2, 4, 5]), up),
        ) as tf.Scalar,
      [W],
    );
    const d = (await tf.max(tf.abs(tf.sub(got.grads[W.name], want.grads[W.name]))).data())[0];
    check(d < 1e-5, `embedding gradient differs by ${d}`);
    check(
      Math.abs((await got.value.data())[0] - (await want.value.data())[0]) < 1e-4,
      "forward values differ",
    );
    tf.dispose([
      W,
      ids,
      up,
      got.value,
      want.value,
      ...Object.values(got.grads),
      ...Object.values(want.grads),
    ]);
  });
}

for (const backend of BACKENDS) {
  backendTest("batchMatMul and matMulBT: values and gradients equal tf.matMul's", backend, async () => {
    // Shapes above WASM_SLICE_MATMUL_MIN_WORK, so wasm takes its slice-by-slice path.
    const a = tf.randomNormal([2, 2, 96, 32], 0, 1, "float32", 1) as tf.Tensor4D;
    const bT = tf.randomNormal([2, 2, 64, 32], 0, 1, "float32", 2) as tf.Tensor4D;
    const b = tf.randomNormal([2, 2, 32, 64], 0, 1, "float32", 3) as tf.Tensor4D;
    const w = tf.randomNormal([40, 32], 0, 1, "float32", 4) as tf.Tensor2D;
    const x = tf.randomNormal([96, 32], 0, 1, "float32", 5) as tf.Tensor2D;
    const xs = tf.randomNormal([8, 32], 0, 1, "float32", 9) as tf.Tensor2D;
    check(96 * 32 * 64 >= WASM_SLICE_MATMUL_MIN_WORK, "test shapes exercise the sliced path");
    const cases: [
      string,
      (p: tf.Tensor, q: tf.Tensor) => tf.Tensor,
      (p: tf.Tensor, q: tf.Tensor) => tf.Tensor,
      tf.Tensor,
      tf.Tensor,
    ][] = [
      [
        "a b^T",
        (p, q) => batchMatMul(p as tf.Tensor4D, q as tf.Tensor4D, true),
        (p, q) => tf.matMul(p, q, false, true),
        a,
        bT,
      ],
      ["a b", (p, q) => batchMatMul(p as tf.Tensor4D, q as tf.Tensor4D), (p, q) => tf.matMul(p, q), a, b],
      [
        "x W^T",
        (p, q) => matMulBT(p as tf.Tensor2D, q as tf.Tensor2D),
        (p, q) => tf.matMul(p, q, false, true),
        x,
        w,
      ],
      // fewer rows than the weight: the transposed-product path on wasm
      [
        "x W^T, short x",
        (p, q) => matMulBT(p as tf.Tensor2D, q as tf.Tensor2D),
        (p, q) => tf.matMul(p, q, false, true),
        xs,
        w,
      ],
    ];
    for (const [name, f, ref, p, q] of cases) {
      const up = tf.randomNormal(ref(p, q).shape, 0, 1, "float32", 6);
      const g1 = tf.grads((pp: tf.Tensor, qq: tf.Tensor) => tf.sum(tf.mul(f(pp, qq), up)));
      const g2 = tf.grads((pp: tf.Tensor, qq: tf.Tensor) => tf.sum(tf.mul(ref(pp, qq), up)));
      const [dp1, dq1] = g1([p, q]), [dp2, dq2] = g2([p, q]);
      const dv = (await tf.max(tf.abs(tf.sub(f(p, q), ref(p, q)))).data())[0];
      const dp = (await tf.max(tf.abs(tf.sub(dp1, dp2))).data())[0];
      const dq = (await tf.max(tf.abs(tf.sub(dq1, dq2))).data())[0];
      check(dv < 1e-3 && dp < 1e-3 && dq < 1e-3, `${name}: value ${dv}, grads ${dp} ${dq}`);
    }
    tf.dispose([a, b, bT, w, x, xs]);
  });
}
