/**
 * medthink's side of the real-size rows (`deno task bench --rows real`): one workload per process on a
 * Qwen2.5-VL checkpoint written by bench/real_checkpoint.ts, with the frozen weights kept at 2 bytes
 * (`weightsDtype`, default bfloat16). The last line of stdout is `RESULT {json}` with the time and the
 * process's peak RSS (VmHWM).
 *
 *   deno run -A bench/real_bench.ts --model DIR --workload load
 *   deno run -A bench/real_bench.ts --model DIR --workload generate --pixels 200704 --new-tokens 32
 *   deno run -A bench/real_bench.ts --model DIR --workload grpo --prompts 2 --generations 4 --max-new 64
 *
 * The image is the first VQA-RAD row's (data/vqa_rad_closed), resized by the processor to about
 * `--pixels` pixels (`min_pixels = max_pixels = pixels`), or with `--pixels default` by the processor's
 * own settings (`min_pixels` 3136, `max_pixels` 12845056: the image keeps about its own size).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import type { Qwen25VLModel } from "../lib/model/qwen25vl.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { loadDataset, tableRows } from "../lib/data/dataset.ts";
import { readImageProcessorConfig } from "../lib/data/processor.ts";
import { visionInputBuilder } from "../lib/engine/vision_inputs.ts";
import { grpo } from "../lib/train/grpo.ts";
import { peakRssMb } from "./medthink_bench.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

const { values: a } = parseArgs({
  options: {
    model: { type: "string" },
    workload: { type: "string", default: "load" },
    backend: { type: "string", default: "auto" },
    "weights-dtype": { type: "string", default: "bfloat16" },
    pixels: { type: "string", default: String(448 * 448) },
    "new-tokens": { type: "string", default: "32" },
    prompts: { type: "string", default: "2" },
    generations: { type: "string", default: "4" },
    "max-new": { type: "string", default: "64" },
    "lora-r": { type: "string", default: "16" },
    "no-checkpointing": { type: "boolean", default: false },
  },
});
if (!a.model) {
  throw new Error("real_bench.ts needs --model DIR (a folder written by bench/real_checkpoint.ts).");
}
const weightsDtype = a["weights-dtype"] as "float32" | "bfloat16" | "float16";

function now(): number {
  return performance.now() / 1000;
}

/** Rows of the sample VQA-RAD set (each with one image). */
async function imageRows(n: number) {
  return tableRows(await loadDataset(`${ROOT}data/vqa_rad_closed/test.jsonl`, { limit: n }));
}

async function processorFor(dir: string) {
  const cfg = await readImageProcessorConfig(dir);
  if (a.pixels === "default") return cfg;
  const px = Number(a.pixels);
  return { ...cfg, minPixels: px, maxPixels: px };
}

async function benchLoad(): Promise<Record<string, unknown>> {
  const t0 = now();
  const model = await loadModel(a.model!, { backend: a.backend, weightsDtype });
  const seconds = now() - t0;
  const params = Object.values(model.params).reduce((s, v) => s + v.size, 0) +
    Object.values(model.half ?? {}).reduce((s, h) => s + h.packed.size * 2, 0);
  model.dispose();
  return { seconds, params };
}

async function benchGenerate(): Promise<Record<string, unknown>> {
  const t0 = now();
  const model = await loadModel(a.model!, { backend: a.backend, weightsDtype }) as Qwen25VLModel;
  const loadS = now() - t0;
  const tokenizer = await loadTokenizer();
  const rows = await imageRows(1);
  const text = `<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n` +
    `<|vision_start|><|image_pad|><|vision_end|>${rows[0].question} Answer yes or no.<|im_end|>\n` +
    `<|im_start|>assistant\n`;
  const inputs = await visionInputBuilder(model, { processor: await processorFor(a.model!) })(rows, [text]);
  const ids = [tokenizer.encode(inputs.texts[0])];
  const n = Number(a["new-tokens"]);
  const t1 = now();
  const out = await model.generate(ids, {
    pixelValues: inputs.pixelValues as tf.Tensor2D,
    imageGridThw: inputs.imageGridThw,
    maxNewTokens: n,
    temperature: 0,
    eosTokenIds: [],
  });
  const seconds = now() - t1;
  tf.dispose(inputs.pixelValues as tf.Tensor);
  model.dispose();
  return {
    seconds,
    load_s: loadS,
    tok_s: out.tokens[0].length / seconds,
    new_tokens: out.tokens[0].length,
    prompt_tokens: ids[0].length,
    image_grid_thw: inputs.imageGridThw,
  };
}

async function benchGrpo(): Promise<Record<string, unknown>> {
  const model = await loadModel(a.model!, { backend: a.backend, weightsDtype }) as Qwen25VLModel;
  const tokenizer = await loadTokenizer();
  const prompts = Number(a.prompts);
  const rows = await imageRows(prompts);
  const images = visionInputBuilder(model, { processor: await processorFor(a.model!) });
  const phases: string[] = [];
  const t0 = now();
  let completionMean = NaN;
  await grpo(model, rows, {
    tokenizer,
    images,
    freezeVision: true,
    lora: { r: Number(a["lora-r"]), alpha: 2 * Number(a["lora-r"]), targetModules: LINEAR },
    // Any non-constant reward (speed and memory do not depend on the values).
    rewards: [["hash", (c: string) => (c.length * 2654435761 % 997) / 997]],
    maxSteps: 1,
    gradientCheckpointing: !a["no-checkpointing"],
    numGenerations: Number(a.generations),
    promptsPerStep: prompts,
    miniBatchPrompts: prompts,
    microBatchSize: Number(a.generations),
    maxNewTokens: Number(a["max-new"]),
    temperature: 1,
    beta: 0.04,
    learningRate: 1e-5,
    shuffle: false,
    progress: false,
    onStep: (m) => {
      completionMean = m.completion_length;
      phases.push(`step done, peak RSS ${(peakRssMb() / 1024).toFixed(2)} GiB`);
    },
  });
  const seconds = now() - t0;
  model.dispose();
  return {
    seconds,
    completions: prompts * Number(a.generations),
    completion_length_mean: completionMean,
    checkpointing: !a["no-checkpointing"],
    phases,
  };
}

const t0 = now();
const run = { load: benchLoad, generate: benchGenerate, grpo: benchGrpo }[a.workload!];
if (!run) throw new Error(`--workload ${a.workload} is not one of load, generate, grpo.`);
const result = await run();
console.log(
  "RESULT " + JSON.stringify({
    workload: a.workload,
    backend: tf.getBackend(),
    weights_dtype: weightsDtype,
    ...result,
    wall_s: now() - t0,
    peak_rss_mb: peakRssMb(),
  }),
);
