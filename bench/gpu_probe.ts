/**
 * Where WebGPU time goes on a card, in small steps that each print at once (a slow step still shows how
 * far it got): raw WebGPU costs (buffer creation, a submit and its readback), tfjs costs (one tiny op
 * with its readback, many tiny ops, a matmul's throughput, an upload), then the benchmark model (its
 * load, a first and a second forward pass, decode steps). bench/gpu_device.sh runs it on the GPU machine.
 *
 *   deno run -A bench/gpu_probe.ts [--model DIR] [--seconds 150]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/deps.ts";
import { useBackend } from "../lib/backend.ts";
import { loadModel } from "../lib/model/load.ts";
import { main as runWorkload, tokenIds } from "./medthink_bench.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { model: { type: "string" }, seconds: { type: "string", default: "150" } },
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
