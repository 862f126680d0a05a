// Activation checkpointing (model.gradientCheckpointing): the gradients of a full fine-tune and of LoRA
// adapters equal the stored-activations path's (1e-5 relative) on qwen2-tiny, through tf.variableGrads
// and through the trainers' lean backward (valueAndGrads), while the tape keeps fewer tensors.
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { addLora, loraParams } from "../lib/model/lora.ts";
import type { Qwen2Model } from "../lib/model/qwen2.ts";
import { sftLoss } from "../lib/train/losses.ts";
import { valueAndGrads } from "../lib/train/optimizer.ts";
import { backendTest } from "./_backends.ts";
import { check, loadTrainGolden, QWEN2_TINY } from "./_model_fixtures.ts";

const G = loadTrainGolden<{
  sft: { input_ids: number[][]; attention_mask: number[][]; labels: number[][] };
}>().sft;

/** Largest |a - b| over the largest |b|, over all gradients. */
async function relDiff(a: Record<string, tf.Tensor>, b: Record<string, tf.Tensor>): Promise<number> {
  let num = 0, den = 0;
  check(Object.keys(a).length === Object.keys(b).length, "the same gradients");
  for (const [name, g] of Object.entries(b)) {
    const x = await a[name].data(), y = await g.data();
    for (let i = 0; i < y.length; i++) {
      num = Math.max(num, Math.abs(x[i] - y[i]));
      den = Math.max(den, Math.abs(y[i]));
    }
  }
  return num / den;
}

/** Loss, gradients by name and the count of live tensors at the end of the forward pass. */
function run(model: Qwen2Model, params: Record<string, tf.Variable>, lean: boolean) {
  let liveAfterForward = 0;
  const f = () => {
    const loss = sftLoss(model, {
      inputIds: tf.tensor2d(G.input_ids, undefined, "int32"),
      attentionMask: tf.tensor2d(G.attention_mask),
      labels: tf.tensor2d(G.labels, undefined, "int32"),
    });
    liveAfterForward = tf.memory().numTensors;
    return loss;
  };
  if (lean) return { ...valueAndGrads(f, params), liveAfterForward };
  const byVar = new Map(Object.entries(params).map(([n, v]) => [v.name, n]));
  const { value, grads } = tf.variableGrads(f, Object.values(params));
  const named: Record<string, tf.Tensor> = {};
  for (const [vn, g] of Object.entries(grads)) named[byVar.get(vn)!] = g;
  return { value, grads: named, liveAfterForward };
}

for (const backend of ["cpu", "tensorflow"] as const) {
  for (const lora of [false, true]) {
    for (const lean of [false, true]) {
      const what = `${lora ? "LoRA" : "full"} gradients, ${lean ? "valueAndGrads" : "tf.variableGrads"}`;
      backendTest(`qwen2-tiny checkpointing: ${what} equal the stored-activation path`, backend, async () => {
        const model = await loadModel(QWEN2_TINY, { backend }) as Qwen2Model;
        try {
          const params = lora ? addLora(model, { r: 4, alpha: 8, seed: 3 }) : model.params;
          // Non-zero B so that every adapter gradient is non-trivial.
          if (lora) {
            for (const ad of Object.values(model.lora)) {
              ad.B.assign(tf.randomNormal(ad.B.shape, 0, 0.05, "float32", 7));
            }
          }
          const plain = run(model, lora ? loraParams(model) : params, lean);
          model.gradientCheckpointing = true;
          const ckpt = run(model, lora ? loraParams(model) : params, lean);
          const [l0, l1] = [(await plain.value.data())[0], (await ckpt.value.data())[0]];
          check(Math.abs(l0 - l1) <= 1e-6 * Math.abs(l0), `loss ${l1} vs ${l0}`);
          const d = await relDiff(ckpt.grads, plain.grads);
          check(d < 1e-5, `checkpointed gradients differ by ${d} (relative to the largest)`);
          check(
            ckpt.liveAfterForward < plain.liveAfterForward,
            `the tape keeps fewer tensors (${ckpt.liveAfterForward} vs ${plain.liveAfterForward})`,
          );
          tf.dispose([plain.value, ckpt.value, ...Object.values(plain.grads), ...Object.values(ckpt.grads)]);
        } finally {
          model.dispose();
        }
      });
    }
  }
}

Deno.test("sft({ gradientCheckpointing: true }) takes the same steps as without (losses and gradient norms)", async () => {
  const { sft } = await import("../lib/train/sft.ts");
  const rows = Array.from({ length: 4 }, (_, i) => {
    const n = 8 + (i % 2) * 4;
    const inputIds = Array.from({ length: n }, (_, t) => 3 + ((i * 37 + t * 11) % 290));
    return { inputIds, labels: inputIds.map((x, t) => (t < n / 2 ? -100 : x)) };
  });
  const runs: { losses: number[]; gradNorms: number[] }[] = [];
  for (const gradientCheckpointing of [false, true]) {
    const model = await loadModel(QWEN2_TINY, { backend: "cpu" });
    try {
      const r = await sft(model, rows, {
        batchSize: 2,
        maxSteps: 2,
        learningRate: 1e-2,
        seed: 7,
        progress: false,
        gradientCheckpointing,
      });
      check(model.gradientCheckpointing === gradientCheckpointing, "the option reaches the model");
      runs.push({ losses: r.history.map((m) => m.loss), gradNorms: r.history.map((m) => m.grad_norm) });
    } finally {
      model.dispose();
    }
  }
  for (const k of ["losses", "gradNorms"] as const) {
    runs[0][k].forEach((v: number, i: number) => {
      const w = runs[1][k][i];
      check(Math.abs(v - w) <= 1e-5 * Math.abs(v), `${k}[${i}]: ${w} vs ${v}`);
    });
  }
});

for (const backend of ["cpu", "tensorflow"] as const) {
  backendTest(
    "qwen25vl-tiny checkpointing: gradients of every weight (vision tower included) unchanged",
    backend,
    async () => {
      const { GOLDEN, VL_DIR } = await import("./_vl_fixture.ts");
      const c = GOLDEN.single_image;
      const model = await loadModel(VL_DIR, { backend }) as Qwen2Model;
      const pv = tf.tensor2d(c.pixel_values);
      try {
        const f = () =>
          tf.mean(
            tf.square(model.logits(c.input_ids, { pixelValues: pv, imageGridThw: c.image_grid_thw })),
          ) as tf.Scalar;
        const plain = valueAndGrads(f, model.params);
        model.gradientCheckpointing = true;
        const ckpt = valueAndGrads(f, model.params);
        check(
          Object.keys(plain.grads).some((n) => n.startsWith("visual.blocks.")),
          "the vision tower gets gradients",
        );
        const d = await relDiff(ckpt.grads, plain.grads);
        check(d < 1e-5, `checkpointed gradients differ by ${d} (relative to the largest)`);
        // The tower's gradients on their own scale (they are much smaller than the decoder's).
        const only = (g: Record<string, tf.Tensor>) =>
          Object.fromEntries(Object.entries(g).filter(([n]) => n.startsWith("visual.")));
        const dv = await relDiff(only(ckpt.grads), only(plain.grads));
        check(dv < 1e-5, `checkpointed vision gradients differ by ${dv} (relative to the largest)`);
        tf.dispose([plain.value, ckpt.value, ...Object.values(plain.grads), ...Object.values(ckpt.grads)]);
      } finally {
        pv.dispose();
        model.dispose();
      }
    },
  );
}
