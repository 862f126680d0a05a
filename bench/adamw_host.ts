/**
 * AdamW's two update paths in `lib/train/optimizer.ts` on one large parameter: host moments with ONE fused
 * loop per tensor (`hostMoments: true`, the default on cpu / wasm / tensorflow) against the tensor-op update
 * (`hostMoments: false`, the webgpu path), which allocates several parameter-sized temporaries per tensor.
 *
 *   deno run -A bench/adamw_host.ts [--backend tensorflow] [--rows 151936] [--cols 896] [--reps 3]
 *
 * Both updates are checked to agree; each reports seconds per step for one `[rows, cols]` parameter.
 * Measured 2026-11-26 (tensorflow, one [151936, 896] tensor, load 1-7 on 2 shared cores): tensor path
 * 3.8-4.2 s/step, host loop 1.7 s/step, max |difference| 1.5e-8. Again after the host path's slice reads
 * and parameter copy (commit ef9f630), on a 2-core Intel Xeon (avx512), quiet (load average 0.8): tensor
 * path 1.48 s/step, host loop 1.60 s/step (TensorFlow's ops use both cores, the loop one). The whole SFT
 * step's clip + AdamW (`medthink_bench.ts --workload sft`, same machine, old and new tree back to back):
 * 17.3 / 7.6 s at the first / second step before, 11.6 / 4.1 s after; the tensor path was not timed there.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import { adamw } from "../lib/train/optimizer.ts";
import { peakRssMb } from "./medthink_bench.ts";

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
  const tensorOpt = adamw({ params: a, ...opts, hostMoments: false });
  const hostOpt = adamw({ params: b, ...opts, hostMoments: true });
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
    hostOpt.step(g);
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
