/** sft() on image rows with a Qwen2.5-VL model (wasm). */
import { ok as assert } from "node:assert/strict";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { loadDataset, tableRows } from "../lib/data/dataset.ts";
import { visionInputBuilder } from "../lib/engine/vision_inputs.ts";
import { sft, type SftResult } from "../lib/train/sft.ts";

const losses = (r: SftResult) => r.history.map((m) => m.loss);

const SHARED = new URL("../", import.meta.url).pathname; // the repository root
const tokenizer = await loadTokenizer();

Deno.test("sft with images (VQA-RAD, medthink-tiny-vl): image tokens expanded, pixels fed, loss goes down", async () => {
  const table = await loadDataset(`${SHARED}data/vqa_rad_closed/test.jsonl`, { limit: 2 });
  const rows = tableRows(table).map((r) => ({ ...r, reasoning: `The image shows it: ${r.answer}.` }));
  const model = await loadModel("medthink-tiny-vl", { backend: "wasm" });
  const base = visionInputBuilder(model);
  let patches = 0;
  const counts: number[] = [];
  try {
    const res = await sft(model, rows, {
      batchSize: 2,
      microBatchSize: 1,
      maxSteps: 3,
      learningRate: 5e-3,
      warmupSteps: 0,
      lrSchedulerType: "constant",
      progress: false,
      tokenizer,
      images: async (rs, texts) => {
        const built = await base(rs, texts);
        patches += (built.pixelValues as { shape: number[] }).shape[0];
        for (const t of built.texts) assert(t.split("<|image_pad|>").length > 2, "one pad per merged patch");
        return built;
      },
      onStep: (r) => counts.push(r.num_tensors),
    });
    assert(patches > 0, "pixel values went to the model");
    console.log(`${patches} patches over 3 updates, losses ${losses(res).map((x) => x.toFixed(3))}`);
    assert(counts.every((c) => c === counts[0]), `live tensors per step: ${counts}`);
    assert(losses(res)[2] < losses(res)[0], `loss ${losses(res)}`);
  } finally {
    model.dispose();
  }
});
