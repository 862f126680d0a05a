/**
 * Where medthink's time goes on the benchmark model: tfjs kernel times (`tf.profile`) aggregated by
 * kernel name for a prefill, a decode-dominated generation, an SFT forward+backward and an AdamW step.
 *
 *   deno run -A bench/profile.ts [--backend auto] [--parts prefill,decode,sft,adamw] [--tokens 128]
 *
 * Not part of `deno task bench` (profiling slows kernels down); its findings are in bench/RESULTS.md's
 * notes and the reports that go with it.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { sftLoss } from "../lib/train/losses.ts";
import { adamw, valueAndGrads } from "../lib/train/optimizer.ts";
import { ensureBenchModel } from "./random_checkpoint.ts";
import { peakRssMb, tokenIds } from "./medthink_bench.ts";

interface KernelRow {
  name: string;
  ms: number;
  calls: number;
  /** The largest output of this kernel, to tell which call sites dominate. */
  biggest: string;
}

/** Matmuls split by call site (from their shapes): the vocabulary head, the MLP, attention, the rest. */
function kernelLabel(name: string, shapes: number[][]): string {
  if (!/MatMul/.test(name)) return name;
  const dims = shapes.flat();
  if (dims.includes(151936)) return `${name} (vocab head)`;
  if (dims.includes(4864)) return `${name} (mlp)`;
  if (dims.includes(896)) return `${name} (q/k/v/o proj)`;
  return `${name} (attention)`;
}

async function profile(label: string, fn: () => Promise<unknown> | unknown): Promise<void> {
  const t0 = performance.now();
  const info = await tf.profile(async () => {
    const r = await fn();
    if (r instanceof tf.Tensor) r.dispose();
  });
  const wall = (performance.now() - t0) / 1000;
  const rows = new Map<string, KernelRow>();
  let sum = 0;
  let biggestSize = new Map<string, number>();
  for (const k of info.kernels) {
    const ms = Number(await k.kernelTimeMs) || 0;
    sum += ms;
    const label = kernelLabel(k.name, (k.inputShapes ?? []) as number[][]);
    // --by-shape: one row per kernel and output shape (which call sites dominate an elementwise kernel).
    const name = byShape ? `${label} -> [${((k.outputShapes?.[0] ?? []) as number[]).join("x")}]` : label;
    const r = rows.get(name) ?? { name, ms: 0, calls: 0, biggest: "" };
    r.ms += ms;
    r.calls++;
    const shape = (k.outputShapes?.[0] ?? []) as number[];
    const size = shape.reduce((a, b) => a * b, 1);
    if (size > (biggestSize.get(name) ?? -1)) {
      biggestSize.set(name, size);
      r.biggest = `[${
        (k.inputShapes ?? []).map((s: number[] | undefined) => (s ?? []).join("x")).join(", ")
      }] -> [${shape.join("x")}]`;
    }
    rows.set(name, r);
  }
  biggestSize = new Map();
  const top = [...rows.values()].sort((a, b) => b.ms - a.ms).slice(0, byShape ? 40 : 14);
  console.log(
    `\n## ${label}: wall ${wall.toFixed(2)} s, kernels ${
      (sum / 1000).toFixed(2)
    } s in ${info.kernels.length} calls, ` +
      `peak ${(info.peakBytes / 2 ** 30).toFixed(2)} GiB of tensors (RSS high-water ${
        (peakRssMb() / 1024).toFixed(2)
      } GiB)`,
  );
  console.log("| kernel | ms | share | calls | largest call |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const r of top) {
    console.log(
      `| ${r.name} | ${r.ms.toFixed(0)} | ${
        (100 * r.ms / Math.max(sum, 1e-9)).toFixed(1)
      }% | ${r.calls} | ${r.biggest} |`,
    );
  }
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    backend: { type: "string", default: Deno.env.get("MEDTHINK_BACKEND") ?? "auto" },
    parts: { type: "string", default: "prefill,decode,sft,adamw" },
    tokens: { type: "string", default: "128" },
    batch: { type: "string", default: "8" },
    "sft-batch": { type: "string", default: "1" },
    "by-shape": { type: "boolean", default: false },
    model: { type: "string" },
  },
});
const parts = values.parts!.split(",");
const byShape = values["by-shape"]!;
const T = Number(values.tokens);
const model = await loadModel(values.model ?? await ensureBenchModel(), { backend: values.backend });
console.log(`# profile on backend ${model.backend}`);
if (parts.includes("prefill")) {
  const ids = tokenIds(1, T, 1);
  model.logits(ids.map((r) => r.slice(0, 8))).dispose();
  await profile(`prefill ${T} (full logits)`, () => model.logits(ids));
}
if (parts.includes("decode")) {
  const b = Number(values.batch);
  const ids = tokenIds(b, 8, 2);
  await profile(
    `generate b${b}, 8-token prompt, 16 new tokens (mostly decode steps)`,
    () => model.generate(ids, { maxNewTokens: 16, temperature: 0, eosTokenIds: [] }),
  );
}
if (parts.includes("sft") || parts.includes("adamw")) {
  const rows = Number(values["sft-batch"]);
  const ids = tokenIds(rows, T, 3);
  let grads: Record<string, tf.Tensor> = {};
  await profile(`sft forward+backward ${rows}x${T}`, () => {
    const r = valueAndGrads(() => sftLoss(model, { inputIds: ids, labels: ids }), model.params);
    grads = r.grads;
    return r.value;
  });
  if (parts.includes("adamw")) {
    const opt = adamw({ params: model.params, lr: 1e-5, betas: [0.9, 0.95], weightDecay: 1e-4 });
    await profile("adamw step (494M parameters)", () => opt.step(grads));
    opt.dispose();
  }
  tf.dispose(Object.values(grads));
}
