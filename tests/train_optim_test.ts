import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import {
  accumulateGrads,
  adamw,
  clipGradNorm,
  clipScale,
  hfParamGroups,
  valueAndGrads,
} from "../lib/train/optimizer.ts";
import { lrSchedule, warmupStepsOf } from "../lib/train/schedule.ts";
import { allBackendsTest } from "./_backends.ts";

function close(a: number, b: number, rel = 1e-6): boolean {
  return Math.abs(a - b) <= rel * Math.max(1e-12, Math.abs(b));
}

// The update of torch.optim.AdamW written out in float64, for one tensor.
function refAdamW(
  p: number[],
  grads: number[][],
  lr: number,
  b1: number,
  b2: number,
  eps: number,
  wd: number,
): number[] {
  const m = p.map(() => 0), v = p.map(() => 0);
  p = p.slice();
  grads.forEach((g, k) => {
    const t = k + 1;
    for (let i = 0; i < p.length; i++) {
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const denom = Math.sqrt(v[i]) / Math.sqrt(1 - b2 ** t) + eps;
      p[i] -= (lr / (1 - b1 ** t)) * m[i] / denom;
    }
  });
  return p;
}

allBackendsTest("adamw: PyTorch semantics over three steps, per-group weight decay", async () => {
  const p0 = [0.5, -1.5, 2.0, 0.01];
  const gs = [[0.1, -0.2, 0.3, 0.0], [1.0, 0.5, -0.5, 1e-3], [-0.3, 0.2, 0.1, -2.0]];
  const w = tf.variable(tf.tensor1d(p0));
  const b = tf.variable(tf.tensor1d(p0));
  const opt = adamw({
    params: { "x.weight": w, "x.bias": b },
    lr: 0.05,
    betas: [0.9, 0.95],
    eps: 1e-8,
    paramGroups: hfParamGroups(["x.weight", "x.bias"], 0.1),
  });
  assertEquals(opt.weightDecay, { "x.weight": 0.1, "x.bias": 0 });
  const before = tf.memory().numTensors;
  for (const g of gs) {
    const gt = { "x.weight": tf.tensor1d(g), "x.bias": tf.tensor1d(g) };
    opt.step(gt);
    tf.dispose(Object.values(gt));
    assertEquals(tf.memory().numTensors, before);
  }
  const wantW = refAdamW(p0, gs, 0.05, 0.9, 0.95, 1e-8, 0.1);
  const wantB = refAdamW(p0, gs, 0.05, 0.9, 0.95, 1e-8, 0);
  const gotW = await w.data(), gotB = await b.data();
  for (let i = 0; i < p0.length; i++) {
    assert(close(gotW[i], wantW[i], 1e-5), `w[${i}] ${gotW[i]} vs ${wantW[i]}`);
    assert(close(gotB[i], wantB[i], 1e-5), `b[${i}] ${gotB[i]} vs ${wantB[i]}`);
  }
  assertEquals(opt.stepCount, 3);

  // state round trip: a second optimizer loaded with the state continues identically
  const w2 = tf.variable(w.clone());
  const b2 = tf.variable(b.clone());
  const opt2 = adamw({
    params: { "x.weight": w2, "x.bias": b2 },
    lr: 0.05,
    betas: [0.9, 0.95],
    paramGroups: hfParamGroups(["x.weight", "x.bias"], 0.1),
  });
  opt2.loadState(opt.state());
  const g = { "x.weight": tf.tensor1d([0.2, 0.2, 0.2, 0.2]), "x.bias": tf.tensor1d([0.1, 0.1, 0.1, 0.1]) };
  opt.step(g);
  opt2.step(g);
  assertEquals(Array.from(await w2.data()), Array.from(await w.data()));
  assertEquals(Array.from(await b2.data()), Array.from(await b.data()));
  tf.dispose([w, b, w2, b2, ...Object.values(g)]);
  opt.dispose();
  opt2.dispose();
});

allBackendsTest(
  "adamw: host moments and tensor moments give the same updates and exchange state",
  async (backend) => {
    if (backend === "webgpu") {
      // no host moments there (tensors are not readable synchronously): the option says so
      const w = tf.variable(tf.zeros([2]));
      assertThrows(() => adamw({ params: { w }, hostMoments: true }), /hostMoments needs a backend/);
      w.dispose();
      return;
    }
    const start = tf.memory().numTensors;
    const p0 = Array.from({ length: 37 }, (_, i) => Math.sin(i) * 0.7);
    const grad = (k: number) =>
      tf.tensor2d(p0.map((_, i) => Math.cos(i * (k + 1)) * (i % 3 ? 1 : 1e-3)), [1, 37]);
    const opts = { lr: 0.01, betas: [0.9, 0.95] as [number, number], weightDecay: 0.1 };
    // tf.variable keeps its own reference to the initial value: make it inside tidy so nothing else stays
    const variable = (f: () => tf.Tensor) => tf.tidy(() => tf.variable(f()));
    const wh = variable(() => tf.tensor2d(p0, [1, 37]));
    const wt = variable(() => tf.tensor2d(p0, [1, 37]));
    const host = adamw({ params: { w: wh }, ...opts, hostMoments: true });
    const tens = adamw({ params: { w: wt }, ...opts, hostMoments: false });
    // a clone taken before the update keeps the old values (the host path never writes into shared storage)
    const before = wh.clone();
    const n0 = tf.memory().numTensors;
    for (let k = 0; k < 3; k++) {
      const g = { w: grad(k) };
      host.step(g);
      tens.step(g);
      tf.dispose(g.w);
      assertEquals(tf.memory().numTensors, n0);
    }
    assertEquals(Array.from(await before.data()), Array.from(new Float32Array(p0)));
    const a = await wh.data(), b = await wt.data();
    for (let i = 0; i < 37; i++) assert(close(a[i], b[i], 1e-5), `w[${i}] ${a[i]} vs ${b[i]}`);
    // state crosses between the two kinds: host -> tensor and tensor -> host continue identically
    const w2 = variable(() => wh.clone()), w3 = variable(() => wt.clone());
    const tens2 = adamw({ params: { w: w2 }, ...opts, hostMoments: false });
    const host2 = adamw({ params: { w: w3 }, ...opts, hostMoments: true });
    tens2.loadState(host.state());
    host2.loadState(tens.state());
    const g = { w: grad(7) };
    for (const o of [host, tens, tens2, host2]) o.step(g);
    const [x, y, z, u] = await Promise.all([wh.data(), wt.data(), w2.data(), w3.data()]);
    for (let i = 0; i < 37; i++) {
      assert(close(z[i], x[i], 1e-6) && close(u[i], y[i], 1e-6), `resumed w[${i}]`);
      assert(close(x[i], y[i], 1e-5), `w[${i}] after resume`);
    }
    // the host state's tensors are freed with the optimizer (no leak from state())
    host.state();
    host.dispose();
    host2.dispose();
    tens.dispose();
    tens2.dispose();
    tf.dispose([wh, wt, w2, w3, before, g.w]);
    assertEquals(tf.memory().numTensors, start);
  },
);

allBackendsTest("clipGradNorm: global L2 norm, returns the pre-clip norm", async () => {
  const grads: Record<string, tf.Tensor> = { a: tf.tensor1d([3, 0]), b: tf.tensor2d([[0, 4]]) };
  const norm = await clipGradNorm(grads, 1);
  assert(close(norm, 5));
  const a = await grads.a.data(), b = await grads.b.data();
  assert(close(a[0], 3 / (5 + 1e-6)) && close(b[1], 4 / (5 + 1e-6)));
  // below the limit: untouched
  const n2 = await clipGradNorm(grads, 10);
  assert(close(n2, 1, 1e-5));
  assert(close((await grads.a.data())[0], 3 / (5 + 1e-6)));
  tf.dispose(Object.values(grads));
});

allBackendsTest(
  "clipScale + step({ gradScale }): the same parameters as clipGradNorm + step, bit for bit",
  async (backend) => {
    const start = tf.memory().numTensors;
    const shapes: Record<string, number[]> = { "a.weight": [3, 5], "a.bias": [5], "b.weight": [41] };
    const init = (n: string, k: number) =>
      Array.from({ length: shapes[n].reduce((x, y) => x * y) }, (_, i) => Math.sin(i * 1.3 + k) * 0.8);
    const variable = (f: () => tf.Tensor) => tf.tidy(() => tf.variable(f()));
    const make = () =>
      Object.fromEntries(
        Object.keys(shapes).map((n, k) => [n, variable(() => tf.tensor(init(n, k), shapes[n]))]),
      );
    const grads = (step: number, size: number) =>
      Object.fromEntries(
        Object.keys(shapes).map((n, k) => [
          n,
          tf.tensor(init(n, k + 7 * step).map((x, i) => x * size * (i % 4 ? 1 : 0.01)), shapes[n]),
        ]),
      );
    // host and tensor moments where the backend has both; every step's norm is above maxNorm except the
    // second (scale 1: nothing to clip)
    for (const hostMoments of backend === "webgpu" ? [false] : [true, false]) {
      const pa = make(), pb = make();
      const opts = { lr: 0.02, betas: [0.9, 0.95] as [number, number], weightDecay: 0.1, hostMoments };
      const oa = adamw({ params: pa, ...opts }), ob = adamw({ params: pb, ...opts });
      const norms: number[] = [];
      for (const [k, size] of [[0, 5], [1, 0.01], [2, 30]]) {
        const ga = grads(k, size), gb = grads(k, size);
        const norm = await clipGradNorm(ga, 1);
        oa.step(ga);
        const { norm: n2, scale } = await clipScale(gb, 1);
        assertEquals(n2, norm);
        assert((k === 1) === (scale === 1), `step ${k}: scale ${scale}, norm ${norm}`);
        ob.step(gb, { gradScale: scale });
        tf.dispose([...Object.values(ga), ...Object.values(gb)]);
        norms.push(norm);
      }
      for (const n of Object.keys(shapes)) {
        assertEquals(
          Array.from(await pb[n].data()),
          Array.from(await pa[n].data()),
          `${n}, host ${hostMoments}`,
        );
      }
      // clipScale leaves the gradients alone; maxNorm 0 only measures
      const g = grads(0, 5);
      const before = await g["b.weight"].data();
      const { norm, scale } = await clipScale(g, 0);
      assert(close(norm, norms[0], 1e-6) && scale === 1);
      assertEquals(Array.from(await g["b.weight"].data()), Array.from(before));
      tf.dispose([...Object.values(g), ...Object.values(pa), ...Object.values(pb)]);
      oa.dispose();
      ob.dispose();
    }
    assertEquals(tf.memory().numTensors, start);
  },
);

allBackendsTest(
  "adamw host path: a parameter changed between steps is read again, clones keep values",
  async (
    backend,
  ) => {
    if (backend === "webgpu") return; // no host path there
    const start = tf.memory().numTensors;
    const variable = (f: () => tf.Tensor) => tf.tidy(() => tf.variable(f()));
    const p0 = [0.5, -1, 2, 0.25, 3];
    const g = tf.tensor1d([0.1, -0.2, 0.3, 0.4, -0.5]);
    const opts = { lr: 0.05, betas: [0.9, 0.95] as [number, number], weightDecay: 0.1 };
    const wh = variable(() => tf.tensor1d(p0)), wt = variable(() => tf.tensor1d(p0));
    const host = adamw({ params: { w: wh }, ...opts, hostMoments: true });
    const tens = adamw({ params: { w: wt }, ...opts, hostMoments: false });
    host.step({ w: g });
    tens.step({ w: g });
    // the host path updates its copy of the parameter in place: tensors handed out before must not change
    const snapshot = wh.clone();
    const snapValues = Array.from(await snapshot.data());
    host.step({ w: g });
    tens.step({ w: g });
    assertEquals(Array.from(await snapshot.data()), snapValues);
    // a value assigned from outside (a checkpoint load, a LoRA merge) is what the next step starts from
    const outside = [1, 2, 3, 4, 5];
    tf.tidy(() => {
      wh.assign(tf.tensor1d(outside));
      wt.assign(tf.tensor1d(outside));
    });
    host.step({ w: g });
    tens.step({ w: g });
    const a = await wh.data(), b = await wt.data();
    for (let i = 0; i < p0.length; i++) {
      assert(close(a[i], b[i], 1e-6), `w[${i}] ${a[i]} vs ${b[i]}`);
      assert(Math.abs(a[i] - outside[i]) < 0.1, `w[${i}] ${a[i]} continues from the assigned ${outside[i]}`);
    }
    host.dispose();
    tens.dispose();
    tf.dispose([wh, wt, g, snapshot]);
    assertEquals(tf.memory().numTensors, start);
  },
);

allBackendsTest("valueAndGrads: the same gradients as tf.variableGrads, frees everything else", async () => {
  const variable = (f: () => tf.Tensor) => tf.tidy(() => tf.variable(f()));
  const w = variable(() => tf.tensor2d([[0.5, -1, 2], [1.5, 0.25, -0.5]]));
  const b = variable(() => tf.tensor1d([0.1, -0.2, 0.3]));
  const frozen = variable(() => tf.tensor1d([1, 2]));
  frozen.trainable = false;
  const x = tf.tensor2d([[1, 2], [3, -1], [0.5, 0.5]]);
  // w used twice (a shared weight), reshapes and identities (gradients passed through), a custom gradient
  const f = () =>
    tf.tidy(() => {
      const h = tf.matMul(x, w).add(b).relu();
      const y = tf.matMul(h, w, false, true).reshape([6]).clone().mul(frozen.tile([3])).sigmoid();
      // deno-lint-ignore no-explicit-any
      const sq = tf.customGrad(
        ((a: tf.Tensor, save: tf.GradSaveFunc) => {
          save([a]);
          return { value: a.square(), gradFunc: (dy: tf.Tensor, [s]: tf.Tensor[]) => dy.mul(s).mul(2) };
        }) as any,
      );
      // a gradient function that hands back a tensor it saved (freed after the node): must stay valid
      // deno-lint-ignore no-explicit-any
      const passSaved = tf.customGrad(
        ((a: tf.Tensor, save: tf.GradSaveFunc) => {
          const c = a.mul(0.5);
          save([c]);
          return { value: a.mul(c), gradFunc: (_dy: tf.Tensor, [s]: tf.Tensor[]) => s };
        }) as any,
      );
      return (sq(y) as tf.Tensor).sum().add((passSaved(h) as tf.Tensor).sum()).add(w.sum()) as tf.Scalar;
    });
  const n0 = tf.memory().numTensors;
  const want = tf.variableGrads(f, [w, b, frozen]);
  const got = valueAndGrads(f, { w, b, frozen });
  assertEquals(Object.keys(got.grads).sort(), ["b", "w"]);
  assert(close((await got.value.data())[0], (await want.value.data())[0]));
  for (const [k, v] of [["w", w], ["b", b]] as const) {
    const [g1, g2] = [await got.grads[k].data(), await want.grads[v.name].data()];
    for (let i = 0; i < g1.length; i++) assert(close(g1[i], g2[i], 1e-6), `${k}[${i}] ${g1[i]} vs ${g2[i]}`);
  }
  // accumulate: the second pass's gradients added to the first's as they complete = 2x the gradients
  const other = valueAndGrads(() => w.square().sum() as tf.Scalar, { w, b });
  const twice = valueAndGrads(f, { w, b, frozen }, { accumulate: { ...got.grads, extra: other.grads.w } });
  assertEquals(Object.keys(twice.grads).sort(), ["b", "extra", "w"]);
  for (const [k, v] of [["w", w], ["b", b]] as const) {
    const [g1, g2] = [await twice.grads[k].data(), await want.grads[v.name].data()];
    for (let i = 0; i < g1.length; i++) assert(close(g1[i], 2 * g2[i], 1e-6), `sum ${k}[${i}]`);
  }
  assert(got.grads.w.isDisposed && got.grads.b.isDisposed, "the old sums are disposed");
  tf.dispose([want.value, got.value, other.value, twice.value, ...Object.values(twice.grads)]);
  tf.dispose(Object.values(want.grads).filter((g): g is tf.Tensor => g !== null));
  assertEquals(tf.memory().numTensors, n0);
  tf.dispose([w, b, frozen, x]);
});

allBackendsTest("accumulateGrads: sums and frees", async () => {
  const n0 = tf.memory().numTensors;
  let acc = accumulateGrads(null, { a: tf.tensor1d([1, 2]) });
  acc = accumulateGrads(acc, { a: tf.tensor1d([10, 20]) });
  assertEquals(Array.from(await acc.a.data()), [11, 22]);
  assertEquals(tf.memory().numTensors, n0 + 1);
  tf.dispose(Object.values(acc));
});

Deno.test("hfParamGroups: no decay on biases and norm weights", () => {
  const names = [
    "model.embed_tokens.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.post_attention_layernorm.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.q_proj.bias",
    "model.norm.weight",
    "lm_head.weight",
    "visual.blocks.0.norm1.weight",
    "visual.merger.ln_q.weight",
  ];
  const [decay, none] = hfParamGroups(names, 1e-4);
  // as transformers 5.x: the vision RMSNorms `norm1` and `ln_q` match no pattern and are decayed
  assertEquals(decay.names, [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "lm_head.weight",
    "visual.blocks.0.norm1.weight",
    "visual.merger.ln_q.weight",
  ]);
  assertEquals(none.weightDecay, 0);
  assertEquals(none.names.length, 4);
});

Deno.test("lrSchedule: Hugging Face warmup, linear, cosine, constant", () => {
  const cos = lrSchedule({ lr: 1, type: "cosine", totalSteps: 10, warmupSteps: 2 });
  assertEquals([cos(0), cos(1), cos(2)], [0, 0.5, 1]);
  assert(close(cos(6), 0.5));
  assert(close(cos(10), 0, 1) && cos(10) < 1e-12);
  const lin = lrSchedule({ lr: 2, type: "linear", totalSteps: 10, warmupSteps: 2 });
  assert(close(lin(6), 1));
  assertEquals(lin(12), 0);
  const con = lrSchedule({ lr: 3, type: "constant", totalSteps: 10, warmupSteps: 4 });
  assertEquals([con(2), con(4), con(9)], [1.5, 3, 3]);
  // HF: warmup steps = ceil(ratio * total)
  assertEquals(warmupStepsOf({ lr: 1, totalSteps: 30, warmupRatio: 0.05 }), 2);
});
