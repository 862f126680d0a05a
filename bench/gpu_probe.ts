/**
 * Where WebGPU time goes on a card, in small steps that each print at once (a slow step still shows how
 * far it got): raw WebGPU costs (buffer creation, a submit and its readback), tfjs costs (one tiny op
 * with its readback, many tiny ops, a matmul's throughput, an upload), then the benchmark model (its
 * load, a first and a second forward pass, decode steps). bench/gpu_device.sh runs it on the GPU machine.
 *
 *   deno run -A bench/gpu_probe.ts [--model DIR] [--seconds 150] [--mode matmul]
 *
 * `--mode matmul` (or `PROBE_MODE=matmul`, which passes through bench/gpu_device.sh) measures only the
 * small-M matrix product of lib/model/webgpu_matmul.ts against tfjs-webgpu's own `BatchMatMul`: for decode
 * shapes, the kernel time tf.profile reports (GPU timestamps, one submit and readback per kernel), and 200
 * back-to-back products with one readback (wall time, and GPU time as the sum of its compute passes'
 * timestamps); then decode b1/b8/b32 of the model with the program installed and not. `SMOKE=1`: small
 * shapes (for llvmpipe).
 *
 * `--mode dispatches` (`PROBE_MODE=dispatches`): dispatches per decoder layer and wall time of a decode
 * step, a prefill and a training step, with tfjs's kernels only, with the small-M product only (before
 * issue #22) and with the tiled product and the fused programs (after): bench/gpu_dispatches.ts, on the
 * `--model` (default: medthink-tiny); then many-row products through tfjs's kernel against the tiled
 * program (wall time of 20 back-to-back products with one readback). `SMOKE=1`: small shapes.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { uploadNow, useBackend } from "../lib/model/backend.ts";
import { loadModel } from "../lib/model/load.ts";
import { installSmallMatMul, uninstallSmallMatMul } from "../lib/model/webgpu_matmul.ts";
import { main as runWorkload, tokenIds } from "./medthink_bench.ts";
import { countDispatches } from "./gpu_dispatches.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    model: { type: "string" },
    seconds: { type: "string", default: "150" },
    mode: { type: "string", default: Deno.env.get("PROBE_MODE") ?? "all" },
  },
});
const start = performance.now();
const deadline = start + Number(values.seconds) * 1000;
const ms = (t0: number) => (performance.now() - t0).toFixed(1);
function say(what: string): void {
  console.log(`PROBE [${((performance.now() - start) / 1000).toFixed(1)} s] ${what}`);
}
function timeLeft(): boolean {
  return performance.now() < deadline;
}

// --- the small-M matrix product (--mode matmul) --------------------------------------------------------

/**
 * GPU time of what tfjs encodes while `on`: a timestamp pair around each of its compute passes (tfjs ends
 * a pass at every submit, by default every 15 dispatches), summed. Unlike tf.profile, which submits and
 * reads back after every kernel, it leaves the work as it runs normally: busy time, without the gaps.
 */
class PassTimer {
  on = false;
  private next = 0;
  private dropped = 0;
  private readonly pairs = 2048; // WebGPU allows 4096 queries per set
  // deno-lint-ignore no-explicit-any
  private querySet: any;

  // deno-lint-ignore no-explicit-any
  constructor(private device: any) {
    this.querySet = device.createQuerySet({ type: "timestamp", count: 2 * this.pairs });
    const create = device.createCommandEncoder.bind(device);
    // deno-lint-ignore no-explicit-any
    device.createCommandEncoder = (desc?: any) => {
      const enc = create(desc);
      const begin = enc.beginComputePass.bind(enc);
      // deno-lint-ignore no-explicit-any
      enc.beginComputePass = (d: any = {}) => {
        if (!this.on || d.timestampWrites) return begin(d); // tf.profile times its own passes
        if (this.next >= this.pairs) {
          this.dropped++;
          return begin(d);
        }
        const i = this.next++;
        return begin({
          ...d,
          timestampWrites: {
            querySet: this.querySet,
            beginningOfPassWriteIndex: 2 * i,
            endOfPassWriteIndex: 2 * i + 1,
          },
        });
      };
      return enc;
    };
  }

  start(): void {
    this.next = 0;
    this.dropped = 0;
    this.on = true;
  }

  /** Stop; the GPU ms of the passes since start (call it once their work has been read back). */
  async stop(): Promise<{ ms: number; passes: number; dropped: number }> {
    this.on = false;
    const n = this.next, dropped = this.dropped;
    if (n === 0) return { ms: 0, passes: 0, dropped };
    // deno-lint-ignore no-explicit-any
    const usage = (globalThis as any).GPUBufferUsage;
    const bytes = 16 * n;
    const resolved = this.device.createBuffer({ size: bytes, usage: usage.QUERY_RESOLVE | usage.COPY_SRC });
    const read = this.device.createBuffer({ size: bytes, usage: usage.MAP_READ | usage.COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.resolveQuerySet(this.querySet, 0, 2 * n, resolved, 0);
    enc.copyBufferToBuffer(resolved, 0, read, 0, bytes);
    this.device.queue.submit([enc.finish()]);
    await read.mapAsync(1); // GPUMapMode.READ
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    resolved.destroy();
    read.destroy();
    let ns = 0;
    for (let i = 0; i < n; i++) if (t[2 * i + 1] > t[2 * i]) ns += Number(t[2 * i + 1] - t[2 * i]);
    return { ms: ns / 1e6, passes: n, dropped };
  }
}

/** A random float32 [rows, cols] on the GPU: at most 1M values drawn in JS, written once, tiled there. */
function gpuRandom(rows: number, cols: number, seed: number): tf.Tensor {
  const r = Math.max(1, Math.min(rows, Math.floor((1 << 20) / cols)));
  const base = uploadNow(tf.randomUniform([r, cols], -1, 1, "float32", seed));
  if (r === rows) return base;
  const out = tf.tidy(() => tf.slice(tf.tile(base, [Math.ceil(rows / r), 1]), [0, 0], [rows, cols]));
  base.dispose();
  return out;
}

async function matmulProbe(): Promise<void> {
  const smoke = Deno.env.get("SMOKE") === "1";
  await useBackend("webgpu");
  // deno-lint-ignore no-explicit-any
  const backend = tf.backend() as any;
  const hasTimestamps = backend.device.features.has("timestamp-query");
  say(`matmul: adapter ${backend.device.adapterInfo?.description ?? "?"}; timestamp-query ${hasTimestamps}`);
  const timer = hasTimestamps ? new PassTimer(backend.device) : null;
  const impls = {
    tfjs: () => uninstallSmallMatMul(),
    small: () => installSmallMatMul({}), // its default threshold, or MEDTHINK_WEBGPU_MATMUL_MAX_M
  };

  /** One product both ways: kernel time (tf.profile), then 200 back-to-back, and the results' difference. */
  async function compare(label: string, a: tf.Tensor, b: tf.Tensor, transposeB: boolean): Promise<void> {
    const parts: string[] = [];
    const results: Float32Array[] = [];
    for (const [name, use] of Object.entries(impls)) {
      use();
      const run = () => tf.matMul(a, b, false, transposeB);
      const first = run();
      results.push(await first.data() as Float32Array);
      first.dispose();
      const kernel: number[] = [];
      for (let i = 0; i < 3; i++) {
        const prof = await tf.profile(async () => {
          const y = run();
          await y.data();
          y.dispose();
          return [];
        });
        kernel.push(prof.kernels.reduce((s, k) => s + (Number(k.kernelTimeMs) || 0), 0));
      }
      const n = smoke ? 20 : 200;
      timer?.start();
      const t0 = performance.now();
      let y = run();
      for (let i = 1; i < n; i++) {
        y.dispose();
        y = run();
      }
      await y.data();
      const wall = (performance.now() - t0) / n;
      y.dispose();
      const gpu = await timer?.stop();
      parts.push(
        `${name}: kernel ${Math.min(...kernel).toFixed(3)} ms; ${n}x wall ${wall.toFixed(3)} ms` +
          (gpu ? `, GPU ${(gpu.ms / n).toFixed(3)} ms (${gpu.passes} passes)` : "") + " each",
      );
    }
    let diff = 0, scale = 1e-30;
    for (let i = 0; i < results[0].length; i++) {
      diff = Math.max(diff, Math.abs(results[0][i] - results[1][i]));
      scale = Math.max(scale, Math.abs(results[0][i]));
    }
    say(`matmul ${label}: ${parts.join(" | ")} | max |diff| ${(diff / scale).toExponential(1)} of max |y|`);
  }

  // The floor: what any tiny op costs back to back (CPU work per dispatch), for scale.
  {
    const x = tf.ones([4]);
    await x.data();
    timer?.start();
    const t0 = performance.now();
    let y = x.add(1);
    for (let i = 1; i < 200; i++) {
      y.dispose();
      y = x.add(1);
    }
    await y.data();
    const wall = (performance.now() - t0) / 200;
    const gpu = await timer?.stop();
    say(
      `matmul: floor, a tiny add 200x: wall ${wall.toFixed(3)} ms` +
        (gpu ? `, GPU ${(gpu.ms / 200).toFixed(3)} ms` : "") + " each",
    );
    tf.dispose([x, y]);
  }

  const dims = smoke
    ? [[64, 96], [64, 320], [320, 64], [64, 5000]]
    : [[896, 1152], [896, 128], [896, 4864], [4864, 896], [896, 151936]];
  let seed = 1;
  for (const [k, n] of dims) {
    if (!timeLeft()) break;
    const w = gpuRandom(n, k, seed++);
    for (const m of [1, 8, 32]) {
      const x = gpuRandom(m, k, seed++);
      await compare(`[${m},${k}]x[${n},${k}]^T`, x, w, true);
      x.dispose();
    }
    w.dispose();
  }
  // Decode attention of the 0.5B model (2 kv heads of 7 query heads, head size 64) over 128 positions.
  for (const b of smoke ? [1, 8] : [1, 8, 32]) {
    if (!timeLeft()) break;
    const q = tf.reshape(gpuRandom(2 * b * 7, 64, seed++), [2 * b, 7, 64]);
    const keys = tf.reshape(gpuRandom(2 * b * 128, 64, seed++), [2 * b, 128, 64]);
    const p = tf.reshape(gpuRandom(2 * b * 7, 128, seed++), [2 * b, 7, 128]);
    await compare(`attention scores b${b} [${q.shape}]x[${keys.shape}]^T`, q, keys, true);
    await compare(`attention context b${b} [${p.shape}]x[${keys.shape}]`, p, keys, false);
    tf.dispose([q, keys, p]);
  }

  if (values.model && timeLeft()) {
    const t0 = performance.now();
    const model = await loadModel(values.model, { backend: "webgpu" });
    say(`matmul: model load ${ms(t0)} ms`);
    const gen = async (b: number, n: number) => {
      const t = performance.now();
      await model.generate(tokenIds(b, 64, 2), { maxNewTokens: n, temperature: 0, eosTokenIds: [] });
      return performance.now() - t;
    };
    const k = 16;
    for (const b of [1, 8, 32]) {
      for (const [name, use] of Object.entries(impls)) {
        if (!timeLeft()) break;
        use();
        await gen(b, 2); // compiles what this batch size needs
        timer?.start();
        const one = await gen(b, 1);
        const gpuOne = await timer?.stop();
        timer?.start();
        const many = await gen(b, 1 + k);
        const gpuMany = await timer?.stop();
        const gpu = gpuOne && gpuMany
          ? `; GPU busy ${((gpuMany.ms - gpuOne.ms) / k).toFixed(1)} ms per step` +
            (gpuMany.dropped ? ` (${gpuMany.dropped} passes untimed)` : "")
          : "";
        say(
          `matmul: decode ${name} b${b}: generate(1) ${one.toFixed(0)} ms, generate(${1 + k}) ${
            many.toFixed(0)
          } ms -> ${(b * k / ((many - one) / 1000)).toFixed(2)} tok/s, ${
            ((many - one) / k).toFixed(1)
          } ms per step${gpu}`,
        );
      }
    }
    if (timeLeft()) {
      impls.small();
      const prof = await tf.profile(async () => {
        await model.generate(tokenIds(1, 64, 2), { maxNewTokens: 3, temperature: 0, eosTokenIds: [] });
        return [];
      });
      const byName = new Map<string, { ms: number; n: number }>();
      for (const kk of prof.kernels) {
        const e = byName.get(kk.name) ?? { ms: 0, n: 0 };
        e.ms += Number(kk.kernelTimeMs) || 0;
        e.n++;
        byName.set(kk.name, e);
      }
      const top = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 8);
      say(
        `matmul: profile of generate(3 new) with the small-M program: ${prof.kernels.length} kernels: ${
          top.map(([kk, e]) => `${kk} ${e.ms.toFixed(1)}ms/${e.n}`).join(", ")
        }`,
      );
    }
    model.dispose();
  }
  installSmallMatMul(); // as useBackend leaves it
}

/** `--mode dispatches`: per-layer dispatch counts before and after, then tiled against tfjs products. */
async function dispatchProbe(): Promise<void> {
  const smoke = Deno.env.get("SMOKE") === "1";
  const model = await loadModel(values.model ?? "medthink-tiny", { backend: "webgpu" });
  // deno-lint-ignore no-explicit-any
  say(`dispatches: adapter ${(tf.backend() as any).device.adapterInfo?.description ?? "?"}`);
  for (const batch of smoke ? [1] : [1, 8]) {
    await countDispatches(model, { batch, past: 64, tokens: smoke ? 32 : 256, say });
  }
  model.dispose();
  const shapes: [number, number, number, boolean, boolean][] = smoke
    ? [[256, 128, 352, false, true], [256, 352, 128, false, false], [352, 256, 128, true, false]]
    : [[512, 896, 4864, false, true], [512, 4864, 896, false, false], [4864, 512, 896, true, false]];
  for (const [m, k, n, tA, tB] of shapes) {
    const a = gpuRandom(tA ? k : m, tA ? m : k, 1), b = gpuRandom(tB ? n : k, tB ? k : n, 2);
    const parts: string[] = [];
    for (const tiled of [false, true]) {
      installSmallMatMul({ tiled });
      const run = () => {
        let y = tf.matMul(a, b, tA, tB);
        for (let i = 1; i < 20; i++) {
          y.dispose();
          y = tf.matMul(a, b, tA, tB);
        }
        return y;
      };
      const warm = run();
      await warm.data();
      warm.dispose();
      const t0 = performance.now();
      const y = run();
      await y.data();
      const t = (performance.now() - t0) / 20;
      y.dispose();
      parts.push(
        `${tiled ? "tiled" : "tfjs"} ${t.toFixed(2)} ms (${((2 * m * k * n) / t / 1e6).toFixed(2)} GFLOP/s)`,
      );
    }
    say(`dispatches: product [${m}x${k}]${tA ? "ᵀ" : ""} x [${k}x${n}]${tB ? "ᵀ" : ""}: ${parts.join(", ")}`);
    tf.dispose([a, b]);
  }
  installSmallMatMul(); // as useBackend leaves it
}

if (values.mode === "dispatches") {
  await dispatchProbe();
  say("done");
  Deno.exit(0);
}

if (values.mode === "matmul") {
  await matmulProbe();
  say("done");
  Deno.exit(0);
}

// --- raw WebGPU ---------------------------------------------------------------------------------------
// deno-lint-ignore no-explicit-any
const gpu = (globalThis as any).navigator.gpu;
const adapter = await gpu.requestAdapter();
const device = await adapter.requestDevice();
{
  let t0 = performance.now();
  const bufs = [];
  for (let i = 0; i < 200; i++) {
    // deno-lint-ignore no-explicit-any
    bufs.push(device.createBuffer({ size: 1 << 20, usage: 0x80 | 0x4 | 0x8 } as any)); // STORAGE|COPY_SRC|COPY_DST
  }
  say(`raw: 200 createBuffer(1 MiB) in ${ms(t0)} ms`);
  t0 = performance.now();
  for (let i = 0; i < 20; i++) {
    device.queue.submit([device.createCommandEncoder().finish()]);
    await device.queue.onSubmittedWorkDone();
  }
  say(`raw: empty submit + onSubmittedWorkDone: ${(Number(ms(t0)) / 20).toFixed(2)} ms each`);
  const staging = device.createBuffer({ size: 4096, usage: 0x1 | 0x8 }); // MAP_READ|COPY_DST
  t0 = performance.now();
  for (let i = 0; i < 20; i++) {
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(bufs[i], 0, staging, 0, 4096);
    device.queue.submit([enc.finish()]);
    await staging.mapAsync(1);
    staging.unmap();
  }
  say(`raw: copy 4 KiB + mapAsync readback: ${(Number(ms(t0)) / 20).toFixed(2)} ms each`);
  t0 = performance.now();
  const big = new Float32Array(128 << 20 >> 2);
  const up = device.createBuffer({ size: big.byteLength, usage: 0x80 | 0x8 });
  device.queue.writeBuffer(up, 0, big);
  await device.queue.onSubmittedWorkDone();
  say(`raw: writeBuffer 128 MiB: ${ms(t0)} ms`);
  for (const b of [...bufs, staging, up]) b.destroy();
  device.destroy();
}

// --- tfjs ---------------------------------------------------------------------------------------------
await useBackend("webgpu");
async function tfjsProbes(tag: string): Promise<void> {
  const a = tf.ones([4]);
  await a.data();
  let t0 = performance.now();
  for (let i = 0; i < 20; i++) {
    const b = a.add(i);
    await b.data();
    b.dispose();
  }
  say(`${tag} tfjs: tiny op + await data(): ${(Number(ms(t0)) / 20).toFixed(2)} ms each`);
  t0 = performance.now();
  let x = tf.ones([1024]);
  for (let i = 0; i < 1000; i++) {
    const y = x.mul(1.0001);
    x.dispose();
    x = y;
  }
  await x.data();
  x.dispose();
  say(`${tag} tfjs: 1000 dependent tiny ops + one readback: ${(Number(ms(t0)) / 1000).toFixed(3)} ms per op`);
  const m = tf.randomNormal([512, 896]);
  const w = tf.randomNormal([4864, 896]);
  let r = tf.matMul(m, w, false, true);
  await r.data();
  r.dispose();
  // Batches of 10 products until 2 s have passed: a slow card does not eat the budget.
  t0 = performance.now();
  let n = 0;
  while (n < 200 && performance.now() - t0 < 2000) {
    for (let i = 0; i < 10; i++) {
      r = tf.matMul(m, w, false, true);
      if (i < 9) r.dispose();
    }
    await r.data();
    r.dispose();
    n += 10;
  }
  const secs = (performance.now() - t0) / 1000;
  say(
    `${tag} tfjs: matmul [512,896]x[896,4864]^T: ${
      (n * 2 * 512 * 896 * 4864 / secs / 1e9).toFixed(0)
    } GFLOP/s`,
  );
  tf.dispose([a, m, w]);
}
await tfjsProbes("submit15");

// Decode-sized products under tfjs-webgpu's program choice: below a workgroup-count threshold (8 on
// non-Intel cards) it switches from 32x32 tiles to split-K / small-output programs. Also the same
// product with the weight stored pre-transposed ([in, out], no transposeB).
const THRESHOLD = "WEBGPU_THRESHOLD_TO_INCREASE_WORKGROUPS_FOR_MATMUL";
async function productMs(m: number, k: number, n: number, transposed: boolean): Promise<number> {
  // Filled on the GPU (the values do not change the speed; random ones would be drawn in JS).
  const x = tf.fill([m, k], 0.01);
  const w = transposed ? tf.fill([k, n], 0.01) : tf.fill([n, k], 0.01);
  const run = () => tf.matMul(x, w, false, !transposed);
  let r = run();
  await r.data();
  r.dispose();
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) {
    r = run();
    if (i < 19) r.dispose();
  }
  await r.data();
  r.dispose();
  tf.dispose([x, w]);
  return (performance.now() - t0) / 20;
}
uninstallSmallMatMul(); // tfjs's own programs here (lib/model/webgpu_matmul.ts has its own --mode matmul)
for (const threshold of [-1, 64, 5000]) {
  tf.env().set(THRESHOLD, threshold);
  const parts: string[] = [];
  for (const [m, k, n] of [[1, 896, 896], [1, 896, 4864], [1, 4864, 896], [1, 896, 151936], [8, 896, 4864]]) {
    const a = await productMs(m, k, n, false);
    const b = await productMs(m, k, n, true);
    parts.push(`[${m},${k}]x[${k},${n}] ${a.toFixed(3)}/${b.toFixed(3)} ms`);
  }
  say(
    `tfjs: threshold ${threshold}: product times (W as [out,in] with transposeB / pre-transposed): ${
      parts.join(", ")
    }`,
  );
}
tf.env().set(THRESHOLD, -1);
installSmallMatMul();

// --- the model ----------------------------------------------------------------------------------------
if (values.model) {
  let t0 = performance.now();
  const model = await loadModel(values.model, { backend: "webgpu" });
  say(`model: load ${ms(t0)} ms`);
  for (const [n, label] of [[16, "first"], [16, "second"], [512, "first"], [512, "second"]] as const) {
    if (!timeLeft()) break;
    t0 = performance.now();
    const logits = model.logits(tokenIds(1, n, 1));
    const last = tf.tidy(() => logits.reshape([-1]).slice([logits.size - 4], [4]));
    await last.data();
    tf.dispose([logits, last]);
    say(`model: ${label} forward of ${n} tokens ${ms(t0)} ms; tensors ${tf.memory().numTensors}`);
  }
  // Decode: generate(1 + k) - generate(1) = k decode steps (the prompt's time cancels out), as the bench.
  const gen = async (b: number, n: number) => {
    const t = performance.now();
    await model.generate(tokenIds(b, 64, 2), { maxNewTokens: n, temperature: 0, eosTokenIds: [] });
    return performance.now() - t;
  };
  for (const [b, threshold] of [[1, -1], [8, -1], [1, 64], [8, 64], [1, 5000], [8, 5000], [32, -1]]) {
    tf.env().set(THRESHOLD, threshold);
    if (!timeLeft()) break;
    const first = await gen(b, 9);
    if (!timeLeft()) break;
    const one = await gen(b, 1);
    const k = 16;
    const many = await gen(b, 1 + k);
    say(
      `model: threshold ${threshold} b${b}: first generate(9) ${first.toFixed(0)} ms, generate(1) ${
        one.toFixed(0)
      } ms, generate(${1 + k}) ${many.toFixed(0)} ms -> decode ${
        (b * k / ((many - one) / 1000)).toFixed(2)
      } tok/s`,
    );
  }
  tf.env().set(THRESHOLD, -1);
  if (timeLeft()) {
    const prof = await tf.profile(async () => {
      await model.generate(tokenIds(1, 64, 2), { maxNewTokens: 3, temperature: 0, eosTokenIds: [] });
      return [];
    });
    const byName = new Map<string, { ms: number; n: number }>();
    for (const k of prof.kernels) {
      const e = byName.get(k.name) ?? { ms: 0, n: 0 };
      e.ms += Number(k.kernelTimeMs) || 0;
      e.n++;
      byName.set(k.name, e);
    }
    const top = [...byName.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 10);
    say(
      `model: profile of generate(3 new): ${prof.kernels.length} kernels, kernel time ${
        top.reduce((s, [, e]) => s + e.ms, 0).toFixed(1)
      } ms in the top 10: ${top.map(([k, e]) => `${k} ${e.ms.toFixed(1)}ms/${e.n}`).join(", ")}`,
    );
  }
  model.dispose();
  // One SFT step pair (4 x 256, AdamW), as the bench's sft row: its RESULT line has both steps' times.
  if (timeLeft()) {
    await runWorkload([
      ...["--model", values.model, "--backend", "webgpu", "--workload", "sft"],
      ...["--batch", "4", "--tokens", "256", "--runs", "2"],
    ]);
    say("model: sft done");
  }
}
say("done");
