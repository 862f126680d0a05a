import { ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { headLogprobs, sftLoss, tokenLogprobs } from "../lib/train/losses.ts";
import { allBackendsTest } from "./_backends.ts";
import { fakeLM } from "./_fake_lm.ts";

function assertAlmostEquals(got: number, want: number, tol: number): void {
  assert(Math.abs(got - want) <= tol * Math.max(1, Math.abs(want)), `${got} != ${want} (tol ${tol})`);
}

const IDS = [[3, 5, 7, 9, 11, 2, 4], [0, 0, 6, 8, 10, 12, 14]];
const MASK = [[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]];
const LABELS = [[-100, -100, -100, 9, 11, 2, -100], [-100, -100, -100, -100, 10, 12, 14]];

// Reference: the full [B, T, V] logits, log-softmax, one-hot pick; the obvious way.
function referenceLoss(model: ReturnType<typeof fakeLM>): tf.Scalar {
  return tf.tidy(() => {
    const logits = model.logits(IDS, { attentionMask: MASK });
    const [b, t, v] = logits.shape;
    const lp = tf.logSoftmax(logits.slice([0, 0, 0], [b, t - 1, v]));
    const tgt = LABELS.map((r) => r.slice(1).map((x) => (x < 0 ? 0 : x)));
    const w = tf.tensor2d(LABELS.map((r) => r.slice(1).map((x) => (x < 0 ? 0 : 1))));
    const picked = lp.mul(tf.oneHot(tf.tensor2d(tgt, undefined, "int32"), v).toFloat()).sum(2);
    return picked.mul(w).sum().neg().div(w.sum()) as tf.Scalar;
  });
}

async function relL2(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const [x, y] = [await a.data(), await b.data()];
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

allBackendsTest("sftLoss: chunked head equals the full-logits loss, value and gradients", async () => {
  const model = fakeLM();
  const vars = Object.values(model.params);
  const want = tf.variableGrads(() => referenceLoss(model), vars);
  for (const labels of [LABELS, tf.tensor2d(LABELS, undefined, "int32")]) {
    for (const chunkSize of [1, 2, 1000]) {
      const got = tf.variableGrads(
        () => sftLoss(model, { inputIds: IDS, attentionMask: MASK, labels, chunkSize }),
        vars,
      );
      assertAlmostEquals((await got.value.data())[0], (await want.value.data())[0], 1e-5);
      for (const name of Object.keys(want.grads)) {
        const e = await relL2(got.grads[name], want.grads[name]);
        assert(e < 1e-4, `grad ${name} rel L2 ${e} (chunk ${chunkSize})`);
      }
      tf.dispose([got.value, ...Object.values(got.grads)]);
    }
    if (labels instanceof tf.Tensor) labels.dispose();
  }
  tf.dispose([want.value, ...Object.values(want.grads)]);
  model.dispose();
});

allBackendsTest("tokenLogprobs: last-C targets, temperature, mask and entropy", async () => {
  const model = fakeLM();
  const c = 3;
  const targets = IDS.map((r) => r.slice(-c));
  const mask = [[1, 1, 0], [1, 1, 1]];
  const temp = 0.7;
  const got = tokenLogprobs(model, {
    inputIds: IDS,
    attentionMask: MASK,
    targets,
    mask,
    temperature: temp,
    entropy: true,
    chunkSize: 2,
  });
  const [lpWant, entWant] = tf.tidy(() => {
    const logits = model.logits(IDS, { attentionMask: MASK });
    const [b, t, v] = logits.shape;
    const lp = tf.logSoftmax(logits.slice([0, t - 1 - c, 0], [b, c, v]).div(temp));
    const pick = lp.mul(tf.oneHot(tf.tensor2d(targets, undefined, "int32"), v).toFloat()).sum(2);
    const ent = lp.exp().mul(lp).sum(2).neg();
    const m = tf.tensor2d(mask);
    return [pick.mul(m), ent.mul(m)];
  });
  assert(await relL2(got.logprobs, lpWant) < 1e-5);
  assert(await relL2(got.entropy!, entWant) < 1e-5);
  const lp = await got.logprobs.array();
  assert(lp[0][2] === 0, "masked position gives 0");
  tf.dispose([got.logprobs, got.entropy!, lpWant, entWant]);

  // the same with a tensor mask
  const m = tf.tensor2d(mask);
  const got2 = tokenLogprobs(model, {
    inputIds: IDS,
    attentionMask: MASK,
    targets,
    mask: m,
    temperature: temp,
  });
  const got1 = tokenLogprobs(model, { inputIds: IDS, attentionMask: MASK, targets, mask, temperature: temp });
  assert(await relL2(got2.logprobs, got1.logprobs) < 1e-6);
  tf.dispose([m, got1.logprobs, got2.logprobs]);
  model.dispose();
});

allBackendsTest("headLogprobs: no tensors leak in forward and backward", () => {
  const h = tf.variable(tf.randomNormal([6, 4], 0, 1, "float32", 3)) as unknown as tf.Tensor2D & tf.Variable;
  const w = tf.variable(tf.randomNormal([11, 4], 0, 1, "float32", 4)) as unknown as tf.Tensor2D & tf.Variable;
  const run = () => {
    const g = tf.variableGrads(() => {
      const { logprobs } = headLogprobs(h, w, [1, 2, 3, 4, 5, 6], { chunkSize: 4, rows: [0, 1, 1, 0, 1, 1] });
      return logprobs.sum() as tf.Scalar;
    }, [h, w]);
    tf.dispose([g.value, ...Object.values(g.grads)]);
  };
  run();
  const before = tf.memory().numTensors;
  run();
  run();
  assert(tf.memory().numTensors === before, `leak: ${tf.memory().numTensors} vs ${before}`);
  tf.dispose([h, w]);
});

allBackendsTest("headLogprobs: many scattered rows and chunks (more than 8 pieces to join)", async () => {
  const n = 40;
  const h = tf.randomNormal([n, 4], 0, 1, "float32", 5) as tf.Tensor2D;
  const w = tf.randomNormal([9, 4], 0, 1, "float32", 6) as tf.Tensor2D;
  const targets = Array.from({ length: n }, (_, i) => i % 9);
  const rows = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 0 : 1));
  const got = headLogprobs(h, w, targets, { chunkSize: 1, rows, entropy: true });
  const want = tf.tidy(() => {
    const lp = tf.logSoftmax(tf.matMul(h, w, false, true));
    return lp.mul(tf.oneHot(tf.tensor1d(targets, "int32"), 9).toFloat()).sum(1).mul(tf.tensor1d(rows));
  });
  assert(await relL2(got.logprobs, want) < 1e-5);
  const ent = await got.entropy!.data();
  assert(ent[0] === 0 && ent[1] > 0, "entropy 0 on skipped rows only");
  tf.dispose([h, w, got.logprobs, got.entropy!, want]);
});

allBackendsTest(
  "headLogprobs: kept and recomputed logits give the same gradients as full logits",
  async () => {
    const n = 9, v = 13, hd = 5;
    const h = tf.variable(tf.randomNormal([n, hd], 0, 1, "float32", 7)) as unknown as
      & tf.Tensor2D
      & tf.Variable;
    const w = tf.variable(tf.randomNormal([v, hd], 0, 1, "float32", 8)) as unknown as
      & tf.Tensor2D
      & tf.Variable;
    const targets = Array.from({ length: n }, (_, i) => (i * 5) % v);
    const rows = Array.from({ length: n }, (_, i) => (i % 4 === 1 ? 0 : 1));
    const scale = tf.tensor1d(Array.from({ length: n }, (_, i) => 0.5 + i));
    const temperature = 0.7;
    const want = tf.variableGrads(() =>
      tf.tidy(() => {
        const lp = tf.logSoftmax(tf.matMul(h, w, false, true).div(temperature));
        const picked = lp.mul(tf.oneHot(tf.tensor1d(targets, "int32"), v).toFloat()).sum(1);
        return picked.mul(tf.tensor1d(rows)).mul(scale).sum() as tf.Scalar;
      }), [h, w]);
    for (const keepLogits of [true, false]) {
      for (const chunkSize of [1, 3, 100]) {
        const got = tf.variableGrads(() => {
          const { logprobs, entropy } = headLogprobs(h, w, targets, {
            chunkSize,
            rows,
            temperature,
            keepLogits,
            entropy: true,
          });
          entropy!.dispose();
          return logprobs.mul(scale).sum() as tf.Scalar;
        }, [h, w]);
        assertAlmostEquals((await got.value.data())[0], (await want.value.data())[0], 1e-5);
        for (const k of Object.keys(want.grads)) {
          const e = await relL2(got.grads[k], want.grads[k]);
          assert(e < 1e-5, `grad ${k} rel L2 ${e} (keep ${keepLogits}, chunk ${chunkSize})`);
        }
        tf.dispose([got.value, ...Object.values(got.grads)]);
      }
    }
    tf.dispose([h, w, scale, want.value, ...Object.values(want.grads)]);
  },
);
