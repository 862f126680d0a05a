/**
 * A measured proposal for `lib/train/optimizer.ts` (not used by the toolkit): AdamW as ONE fused loop per
 * tensor over host Float32Arrays (moments kept on the host), against the current tensor-op update, which
 * allocates about ten parameter-sized temporaries per tensor.
 *
 *   deno run -A bench/adamw_host.ts [--backend tensorflow] [--rows 151936] [--cols 896] [--reps 3]
 *
 * Both updates are checked to agree; each reports seconds per step for one `[rows, cols]` parameter.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/deps.ts";
import { useBackend } from "../lib/backend.ts";
import { adamw } from "../lib/train/optimizer.ts";
import { peakRssMb } from "./medthink_bench.ts";

/** AdamW (PyTorch semantics) with the moments on the host: one pass over the parameter. */
export function hostAdamW(
  params: Record<string, tf.Variable>,
  options: { lr: number; betas: [number, number]; eps?: number; weightDecay: number },
): { step(grads: Record<string, tf.Tensor>): Promise<void> } {
  const [b1, b2] = options.betas;
  const eps = options.eps ?? 1e-8;
  const m: Record<string, Float32Array> = {};
  const v: Record<string, Float32Array> = {};
  for (const [k, p] of Object.entries(params)) {
    m[k] = new Float32Array(p.size);
    v[k] = new Float32Array(p.size);
  }
  let t = 0;
  return {
    async step(grads) {
      t++;
      const bc1 = 1 - b1 ** t, bc2Sqrt = Math.sqrt(1 - b2 ** t);
      const stepSize = options.lr / bc1, decay = 1 - options.lr * options.weightDecay;
      for (const [k, p] of Object.entries(params)) {
        const gT = grads[k];
        if (!gT) continue;
        const g = await gT.data() as Float32Array;
        const w = await p.data() as Float32Array;
        const mk = m[k], vk = v[k];
        for (let i = 0; i < w.length; i++) {
          const gi = g[i];
          const mi = mk[i] = b1 * mk[i] + (1 - b1) * gi;
          const vi = vk[i] = b2 * vk[i] + (1 - b2) * gi * gi;
          w[i] = w[i] * decay - stepSize * mi / (Math.sqrt(vi) / bc2Sqrt + eps);
        }
        const next = tf.tensor(w, p.shape, "float32");
        p.assign(next);
        next.dispose();
      }
    },
  };
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      backend: { type: "string", default: "auto" },
      rows: { type: "string", default: "151936" },
      cols: { type: "string", default: "896" },
      reps: { type: "string", default: "3" },
    },
  });
  const backend = await useBackend(values.backend);
  const shape = [Number(values.rows), Number(values.cols)];
  const init = tf.randomNormal(shape, 0, 0.02, "float32", 1);
  const a = { w: tf.variable(init.clone()) }, b = { w: tf.variable(init.clone()) };
  init.dispose();
  const opts = { lr: 1e-3, betas: [0.9, 0.95] as [number, number], weightDecay: 1e-4 };
  const tensorOpt = adamw({ params: a, ...opts });
  const hostOpt = hostAdamW(b, opts);
  const reps = Number(values.reps);
  const tTensor: number[] = [], tHost: number[] = [];
  for (let r = 0; r < reps; r++) {
    const g = { w: tf.randomNormal(shape, 0, 1, "float32", 100 + r) };
    await a.w.data(); // settle
    let t0 = performance.now();
    tensorOpt.step(g);
    await a.w.data();
    tTensor.push((performance.now() - t0) / 1000);
    t0 = performance.now();
    await hostOpt.step(g);
    await b.w.data();
    tHost.push((performance.now() - t0) / 1000);
    g.w.dispose();
  }
  const diff = tf.tidy(() => a.w.sub(b.w).abs().max().dataSync()[0]);
  const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
  console.log(
    `backend ${backend}, one [${shape}] parameter (${(shape[0] * shape[1] / 1e6).toFixed(1)}M): ` +
      `tensor-op AdamW ${med(tTensor).toFixed(3)} s/step [${tTensor.map((x) => x.toFixed(3))}], ` +
      `host fused loop ${med(tHost).toFixed(3)} s/step [${tHost.map((x) => x.toFixed(3))}]; ` +
      `max |difference| ${diff.toExponential(2)}; peak RSS ${(peakRssMb() / 1024).toFixed(2)} GiB`,
  );
}
