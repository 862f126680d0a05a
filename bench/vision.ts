/**
 * Vision-tower throughput (patches/s): medthink's Qwen2.5-VL vision tower (lib/model/vision.ts) against
 * Hugging Face's in PyTorch (bench/vision_torch.py, CPU, float32), with the Qwen2.5-VL-3B vision shapes
 * (32 blocks, hidden 1280, 16 heads, MLP 3420, full attention in blocks 7/15/23/31, 112-px windows) on
 * one 448 x 448 image (1024 patches), random weights, in one command; the two sides run one after the
 * other so they never share the cores. The PyTorch side runs from bench/.venv (bench/setup.sh).
 *
 *   deno run -A bench/vision.ts                          # backend auto, 3 timed runs each (after a warm-up)
 *   deno run -A bench/vision.ts --backend wasm --runs 2 --size 448 --depth 32
 *   deno run -A bench/vision.ts --quick                  # 4 blocks, 1 run: a smoke test (writes nothing)
 *   deno run -A bench/vision.ts --no-pytorch
 *
 * A full run writes its table to the `vision-tower` section of bench/RESULTS.md (`--out` to change the
 * file; bench/sections.ts): only that section is replaced, and `deno task bench` keeps it when it
 * rewrites the rest of the report. `--quick` prints only, unless `--out` is given.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import { visionExpectedParams, visionForward } from "../lib/model/vision.ts";
import type { VisionConfig } from "../lib/model/types.ts";
import { writeSection } from "./sections.ts";

const { values: a } = parseArgs({
  options: {
    backend: { type: "string", default: "auto" },
    runs: { type: "string", default: "3" },
    size: { type: "string", default: "448" },
    depth: { type: "string", default: "32" },
    quick: { type: "boolean", default: false },
    "no-pytorch": { type: "boolean", default: false },
    out: { type: "string" },
  },
});
const started = new Date();
const depth = a.quick ? 4 : Number(a.depth);
const runs = a.quick ? 1 : Number(a.runs);
const size = Number(a.size);
if (size % 28 !== 0) {
  throw new Error(`--size ${size} must be a multiple of 28 (a whole number of merged patches).`);
}
const g = size / 14;

const config: VisionConfig = {
  depth,
  hiddenSize: 1280,
  intermediateSize: 3420,
  numHeads: 16,
  outHiddenSize: 2048,
  patchSize: 14,
  spatialMergeSize: 2,
  temporalPatchSize: 2,
  inChannels: 3,
  windowSize: 112,
  fullattBlockIndexes: [7, 15, 23, 31].filter((i) => i < depth).length
    ? [7, 15, 23, 31].filter((i) => i < depth)
    : [depth - 1],
  hiddenAct: "silu",
};

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const backend = await useBackend(a.backend);
const params: Record<string, tf.Tensor> = {};
for (const [name, shape] of Object.entries(visionExpectedParams(config))) {
  params[name] = /norm|ln_q/.test(name) ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.02, "float32", 1);
}
const pv = tf.randomNormal([g * g, 1176], 0, 1, "float32", 2) as tf.Tensor2D;
const grid = [[1, g, g]];
const secs: number[] = [];
for (let r = 0; r <= runs; r++) {
  const t = performance.now();
  const out = visionForward(params, config, pv, grid);
  await out.data();
  out.dispose();
  if (r > 0) secs.push((performance.now() - t) / 1000); // run 0 is the warm-up
}
tf.dispose([pv, ...Object.values(params)]);
const ours = { patches: g * g, seconds: secs };

let torch: { patches: number; seconds: number[]; threads: number; torch: string } | null = null;
let torchNote = "";
if (!a["no-pytorch"]) {
  const py = new URL("./.venv/bin/python", import.meta.url).pathname;
  const script = new URL("./vision_torch.py", import.meta.url).pathname;
  try {
    const out = await new Deno.Command(py, {
      args: [script, "--size", String(size), "--depth", String(depth), "--runs", String(runs)],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1) ?? "";
    if (out.success && text.startsWith("{")) torch = JSON.parse(text);
    else torchNote = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "failed";
  } catch (e) {
    torchNote = `bench/.venv is missing (run bench/setup.sh): ${(e as Error).message}`;
  }
}

const rate = (r: { patches: number; seconds: number[] }) => r.patches / median(r.seconds);
const runsText = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(", ");
const title = `Qwen2.5-VL vision tower, ${depth} blocks x hidden 1280, one ${size} x ${size} image (${
  g * g
} patches)`;
const table = [
  "| implementation | median s | patches/s | runs (s) |",
  "| --- | ---: | ---: | --- |",
  `| medthink (${backend}, tfjs ${tf.version_core}) | ${median(ours.seconds).toFixed(2)} | ${
    rate(ours).toFixed(0)
  } | ${runsText(ours.seconds)} |`,
];
if (torch) {
  table.push(
    `| PyTorch ${torch.torch} eager, sdpa (${torch.threads} threads) | ${
      median(torch.seconds).toFixed(2)
    } | ${rate(torch).toFixed(0)} | ${runsText(torch.seconds)} |`,
  );
} else if (!a["no-pytorch"]) table.push(`| PyTorch | - | - | ${torchNote} |`);
console.log(`\n${title}\n\n${table.join("\n")}`);

const out = a.out ?? (a.quick ? undefined : new URL("./RESULTS.md", import.meta.url).pathname);
if (out) {
  let cpu = "unknown CPU";
  try {
    cpu = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/)?.[1].trim() ?? cpu;
  } catch { /* not Linux */ }
  const ratio = torch ? `; medthink / PyTorch patches/s = ${(rate(ours) / rate(torch)).toFixed(2)}x` : "";
  const cmd = `deno run -A bench/vision.ts ${Deno.args.join(" ")}`.trim();
  const when = started.toISOString().slice(0, 16).replace("T", " ");
  const load = Deno.loadavg()[0].toFixed(1);
  const full = config.fullattBlockIndexes.join("/");
  const timed = `${runs} timed run${runs === 1 ? "" : "s"}`;
  const about = `Written by \`${cmd}\` on ${when} UTC: ${cpu}, ${navigator.hardwareConcurrency} cores, ` +
    `1-minute load average ${load} at the end. Random weights (float32), the processor's patch layout ` +
    `([patches, 1176]), window attention (112 px) with full attention in blocks ${full}, the patch merger ` +
    `to 2048; medians of ${timed} after a warm-up, each side in turn${ratio}.`;
  await writeSection(out, "vision-tower", [`## ${title}`, "", about, "", ...table].join("\n"));
  console.log(`\nwrote the vision-tower section of ${out}`);
}
