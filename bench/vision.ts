/**
 * Vision-tower throughput (patches/s): medthink's Qwen2.5-VL vision tower (lib/model/vision.ts) against
 * Hugging Face's in PyTorch (bench/vision_torch.py, CPU, float32), with the Qwen2.5-VL-3B vision shapes
 * (32 blocks, hidden 1280, 16 heads, MLP 3420, full attention in blocks 7/15/23/31, 112-px windows) on
 * one 448 x 448 image (1024 patches), random weights, in one command; the two sides run one after the
 * other so they never share the cores.
 *
 *   deno run -A bench/vision.ts                          # backend auto, 3 timed runs each (after a warm-up)
 *   deno run -A bench/vision.ts --backend wasm --runs 2 --size 448 --depth 32
 *   deno run -A bench/vision.ts --quick                  # 4 blocks, 1 run: a smoke test
 *   deno run -A bench/vision.ts --no-pytorch
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/deps.ts";
import { useBackend } from "../lib/backend.ts";
import { visionExpectedParams, visionForward } from "../lib/model/vision.ts";
import type { VisionConfig } from "../lib/model/types.ts";

const { values: a } = parseArgs({
  options: {
    backend: { type: "string", default: "auto" },
    runs: { type: "string", default: "3" },
    size: { type: "string", default: "448" },
    depth: { type: "string", default: "32" },
    quick: { type: "boolean", default: false },
    "no-pytorch": { type: "boolean", default: false },
  },
});
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
console.log(
  `\nQwen2.5-VL vision tower, ${depth} blocks x hidden 1280, one ${size} x ${size} image (${
    g * g
  } patches)\n`,
);
console.log("| implementation | median s | patches/s |");
console.log("| --- | ---: | ---: |");
console.log(`| medthink (${backend}) | ${median(ours.seconds).toFixed(2)} | ${rate(ours).toFixed(0)} |`);
if (torch) {
  console.log(
    `| PyTorch ${torch.torch} eager (${torch.threads} threads) | ${median(torch.seconds).toFixed(2)} | ${
      rate(torch).toFixed(0)
    } |`,
  );
} else if (!a["no-pytorch"]) console.log(`| PyTorch | - | - (${torchNote}) |`);
