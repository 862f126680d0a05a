/**
 * grpo() with a Qwen2.5-VL model (medthink-tiny-vl, wasm) on batches mixing VQA-RAD image rows and
 * text-only rows: the forward passes inside grpo see each row's own images (their log-probs equal those
 * of a direct single-row multimodal forward), gradients reach the vision tower unless `freezeVision`,
 * and `lora` adapts the language model only.
 */
import { deepStrictEqual as assertEquals, ok as assert, rejects as assertRejects } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import type { CausalLM, ForwardOptions } from "../lib/model/types.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { loadDataset, tableRows } from "../lib/data/dataset.ts";
import type { Row } from "../lib/data/types.ts";
import { readImageProcessorConfig } from "../lib/data/processor.ts";
import { type ImageInputBuilder, visionInputBuilder } from "../lib/engine/vision_inputs.ts";
import { grpo, type GrpoOptions } from "../lib/train/grpo.ts";
import { evaluate } from "../lib/eval/evaluate.ts";

const SHARED = new URL("../", import.meta.url).pathname; // the repository root
const tokenizer = await loadTokenizer();
const imageRows = tableRows(await loadDataset(`${SHARED}data/vqa_rad_closed/test.jsonl`, { limit: 2 }));
const textRows: Row[] = imageRows.map((r, i) => ({
  ...r,
  id: `text-${i}`,
  question: i === 0 ? "Is a serum potassium of 6.8 mmol/L high?" : "Is aspirin an antiplatelet drug?",
  images: [],
}));
// Image rows first, then text rows: with shuffle off, one generation batch holds both kinds.
const ROWS: Row[] = [...imageRows, ...textRows];

/** The model's processor with small images (at most 112 x 112 px: 64 patches, 16 tokens) to keep CPU time low. */
async function smallImages(model: CausalLM): Promise<ImageInputBuilder> {
  const cfg = await readImageProcessorConfig(model.dir!);
  return visionInputBuilder(model, { processor: { ...cfg, maxPixels: 112 * 112 } });
}

function base(images?: ImageInputBuilder): GrpoOptions {
  return {
    tokenizer,
    images,
    // Completion lengths vary between samples, so every group has a reward spread (non-zero advantages).
    rewards: [["length", (c: string) => (c.length % 5) / 4, 1]],
    maxSteps: 1,
    numGenerations: 2,
    promptsPerStep: 4,
    microBatchSize: 8,
    maxNewTokens: 4,
    learningRate: 1e-3,
    weightDecay: 0, // no decay: a tensor without gradient must not move
    beta: 0.01,
    shuffle: false,
    seed: 5,
    progress: false,
  };
}

function snapshot(model: CausalLM, names: string[]): Record<string, tf.Tensor> {
  return Object.fromEntries(names.map((n) => [n, model.params[n].clone()]));
}

async function maxChange(model: CausalLM, before: Record<string, tf.Tensor>): Promise<number> {
  let m = 0;
  for (const [n, t] of Object.entries(before)) {
    const d = tf.tidy(() => tf.max(tf.abs(tf.sub(model.params[n], t))));
    m = Math.max(m, (await d.data())[0]);
    d.dispose();
  }
  return m;
}

const VISION = [
  "visual.patch_embed.proj.weight",
  "visual.blocks.0.attn.qkv.weight",
  "visual.merger.mlp.2.weight",
];
const DECODER = ["model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight"];

/** One recorded multimodal forward pass of grpo. */
interface Recorded {
  ids: number[][];
  mask: number[][];
  pixelValues: number[][];
  imageGridThw: number[][];
  hidden: number[][][];
}

/** Log-softmax of the head at `positions` of one row's hidden states, picked at `tokens`. */
function logpsAt(model: CausalLM, hidden: number[][], positions: number[], tokens: number[]): number[] {
  return tf.tidy(() => {
    const h = tf.tensor2d(positions.map((p) => hidden[p]));
    const logits = tf.matMul(h, model.lmHeadWeight(), false, true);
    const lp = tf.logSoftmax(logits);
    return tokens.map((t, i) => lp.slice([i, t], [1, 1]).dataSync()[0]);
  });
}

Deno.test("grpo on a mixed image + text batch (tiny VL): image log-probs as a direct multimodal forward, vision tower trained", async () => {
  const model = await loadModel("medthink-tiny-vl", { backend: "wasm" });
  const images = await smallImages(model);
  const start = snapshot(model, Object.keys(model.params));
  // Record the first multimodal pass (the no-gradient recompute of the old log-probs).
  let recorded: Recorded | undefined;
  let multimodalPasses = 0;
  const hidden = model.hidden.bind(model);
  model.hidden = (ids: number[][] | tf.Tensor2D, opts: ForwardOptions = {}) => {
    const out = hidden(ids, opts);
    if (opts.pixelValues) {
      multimodalPasses++;
      recorded ??= {
        ids: ids as number[][],
        mask: opts.attentionMask as number[][],
        pixelValues: opts.pixelValues.arraySync(),
        imageGridThw: opts.imageGridThw!,
        hidden: out.arraySync(),
      };
    }
    return out;
  };
  const tensorsBefore = tf.memory().numTensors;
  try {
    const res = await grpo(model, ROWS, base(images));
    const m = res.history[0];
    assertEquals(res.steps, 1);
    assert(m.reward_std > 0 && m.updates === 1, `reward std ${m.reward_std}, updates ${m.updates}`);
    assert(Number.isFinite(m.loss) && Number.isFinite(m.entropy), `loss ${m.loss}, entropy ${m.entropy}`);
    // old log-probs, reference (snapshot) and policy passes all carry the images
    assertEquals(multimodalPasses, 3);
    assert(recorded, "a forward pass got pixel values");
    const rec = recorded!;
    const imageToken = model.config.imageTokenId!;
    const rowsWithImages = rec.ids.filter((r) => r.includes(imageToken)).length;
    // 2 image prompts x 2 completions, each with its own image; the 4 text completions in the same pass
    assertEquals(rec.ids.length, 8);
    assertEquals(rowsWithImages, 4);
    assertEquals(rec.imageGridThw.length, 4);

    // gradients reached the vision tower and the decoder
    const dv = await maxChange(model, Object.fromEntries(VISION.map((n) => [n, start[n]])));
    const dd = await maxChange(model, Object.fromEntries(DECODER.map((n) => [n, start[n]])));
    assert(dv > 0 && dd > 0, `vision moved ${dv}, decoder moved ${dd}`);
    assertEquals(tf.memory().numTensors, tensorsBefore, "no leaked tensors");

    // Back to the weights of the recorded pass: each of its rows against a direct forward of that row
    // alone (no padding), with its images processed afresh for image rows.
    for (const [n, t] of Object.entries(start)) model.params[n].assign(t);
    let checked = 0;
    let maxDiff = 0;
    let patchAt = 0;
    for (let i = 0; i < rec.ids.length; i++) {
      const real = rec.ids[i].map((_, t) => t).filter((t) => rec.mask[i][t] === 1);
      const ids = real.map((t) => rec.ids[i][t]);
      const row = ROWS[Math.floor(i / 2)]; // completion i belongs to prompt floor(i / n)
      let direct: number[][];
      if (rec.ids[i].includes(imageToken)) {
        const built = await images([row], ["<|vision_start|><|image_pad|><|vision_end|>"]);
        const pv = built.pixelValues as tf.Tensor2D;
        // the pixels grpo passed for this completion are the processor's for its prompt's image
        const [t, h, w] = built.imageGridThw![0];
        const mine = rec.pixelValues.slice(patchAt, patchAt + t * h * w);
        patchAt += t * h * w;
        const fresh = await pv.array();
        assertEquals(fresh.length, mine.length);
        assert(
          fresh.every((r, k) => r.every((x, j) => Math.abs(x - mine[k][j]) < 1e-6)),
          `pixels of row ${i}`,
        );
        const out = hidden([ids], { pixelValues: pv, imageGridThw: built.imageGridThw });
        direct = (await out.array())[0];
        out.dispose();
        pv.dispose();
      } else {
        assert(row.images.length === 0, `completion ${i} of image row ${row.id} has no image tokens`);
        const out = hidden([ids]);
        direct = (await out.array())[0];
        out.dispose();
      }
      // The last 8 next-token predictions (the completion and the end of the prompt): in the batch
      // token k is predicted at real[k - 1], alone at k - 1.
      const ks = Array.from({ length: 8 }, (_, j) => ids.length - 8 + j).filter((k) => k > 0);
      const tokens = ks.map((k) => ids[k]);
      const inBatch = logpsAt(model, rec.hidden[i], ks.map((k) => real[k - 1]), tokens);
      const alone = logpsAt(model, direct, ks.map((k) => k - 1), tokens);
      inBatch.forEach((x, k) => maxDiff = Math.max(maxDiff, Math.abs(x - alone[k])));
      checked += ks.length;
    }
    assertEquals(patchAt, rec.pixelValues.length);
    assertEquals(checked, 64);
    console.log(`max log-prob difference, batched vs alone: ${maxDiff.toExponential(2)}`);
    assert(maxDiff < 1e-3, `batched vs direct log-probs differ by ${maxDiff}`);
  } finally {
    tf.dispose(Object.values(start));
    model.dispose();
  }
});

Deno.test("grpo accumulates a text-only micro-batch and an image one (the vision gradient only in the second)", async () => {
  const model = await loadModel("medthink-tiny-vl", { backend: "wasm" });
  const vision = snapshot(model, VISION);
  try {
    const res = await grpo(model, [...textRows, ...imageRows], {
      ...base(await smallImages(model)),
      microBatchSize: 4,
    });
    assert(res.history[0].updates === 1 && Number.isFinite(res.history[0].grad_norm), "one update");
    assert((await maxChange(model, vision)) > 0, "the vision tower trains from the second micro-batch");
  } finally {
    tf.dispose(Object.values(vision));
    model.dispose();
  }
});

Deno.test("grpo freezeVision: the vision tower stays, the decoder trains, the flags come back", async () => {
  const model = await loadModel("medthink-tiny-vl", { backend: "wasm" });
  const vision = snapshot(model, VISION);
  const decoder = snapshot(model, DECODER);
  try {
    await grpo(model, ROWS, { ...base(await smallImages(model)), freezeVision: true });
    assertEquals(await maxChange(model, vision), 0);
    assert((await maxChange(model, decoder)) > 0, "the decoder trains");
    assert(VISION.every((n) => model.params[n].trainable), "the tower is trainable again after the run");
  } finally {
    tf.dispose([...Object.values(vision), ...Object.values(decoder)]);
    model.dispose();
  }
});

Deno.test("grpo lora: adapters on the language model only, vision and base weights untouched", async () => {
  const model = await loadModel("medthink-tiny-vl", { backend: "wasm" });
  const names = Object.keys(model.params);
  const before = snapshot(model, names);
  try {
    const res = await grpo(model, ROWS, {
      ...base(await smallImages(model)),
      learningRate: 1e-2,
      // gate/up/down_proj also name the vision tower's MLP linears: they must not get adapters
      lora: { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"] },
    });
    assertEquals(res.steps, 1);
    const modules = Object.keys(model.lora);
    assert(modules.length === 4 * 5, `adapters on ${modules.length} modules`);
    assertEquals(modules.filter((m) => m.startsWith("visual.")), []);
    assertEquals(await maxChange(model, before), 0);
    // the adapters trained (B starts at zero)
    const b = model.lora["model.layers.0.self_attn.q_proj"].B;
    const norm = tf.tidy(() => tf.max(tf.abs(b)));
    assert((await norm.data())[0] > 0, "lora B moved");
    norm.dispose();
  } finally {
    tf.dispose(Object.values(before));
    model.dispose();
  }
});

Deno.test("grpo with a text-only model: image rows and freezeVision are refused with the row / reason named", async () => {
  const model = await loadModel("medthink-tiny", { backend: "wasm" });
  const opts = base();
  try {
    await assertRejects(
      () => grpo(model, ROWS, opts),
      /row .* holds an image but the model \(qwen2\) is text-only/,
    );
    await assertRejects(() => grpo(model, textRows, { ...opts, freezeVision: true }), /no vision tower/);
  } finally {
    model.dispose();
  }
});

Deno.test("the paper's best recipe on the tiny VL model: text-only GRPO, then evaluation on VQA-RAD images", async () => {
  const model = await loadModel("medthink-tiny-vl", { backend: "wasm" });
  const vision = snapshot(model, VISION);
  const decoder = snapshot(model, DECODER);
  const small = await smallImages(model);
  let patches = 0;
  const counting: ImageInputBuilder = async (rows, texts) => {
    const built = await small(rows, texts);
    patches += (built.pixelValues as tf.Tensor2D | undefined)?.shape[0] ?? 0;
    return built;
  };
  try {
    // A reward that differs whenever two completions differ: the length-based one of base() leaves a group
    // without spread when both samples' lengths agree mod 5, and with only two groups of two that happened
    // on one CPU (wasm's sampling follows the CPU's float rounding), so nothing moved.
    const textHash = (c: string) =>
      [...c].reduce((h, ch) => (Math.imul(h, 31) + ch.charCodeAt(0)) >>> 0, 7) % 1000 / 999;
    const res = await grpo(model, textRows, {
      ...base(counting),
      rewards: [["text hash", textHash, 1]],
      promptsPerStep: 2,
    });
    assertEquals(res.steps, 1);
    assert(res.history[0].reward_std > 0, "a reward spread to learn from");
    assertEquals(patches, 0);
    // text-only RL leaves the vision tower as it was (no gradient reaches it), the decoder learns
    assertEquals(await maxChange(model, vision), 0);
    assert((await maxChange(model, decoder)) > 0, "the decoder trains");
    const table = await loadDataset(`${SHARED}data/vqa_rad_closed/test-00000-of-00001.parquet`, { limit: 4 });
    const report = await evaluate(model, [{ name: "VQA-RAD", table }], {
      tokenizer,
      images: counting,
      maxNewTokens: 4,
      batchSize: 2,
      progress: false,
    });
    const b = report.benchmarks[0];
    assertEquals(b.n, 4);
    assert(b.accuracy >= 0 && b.accuracy <= 1, `accuracy ${b.accuracy}`);
    assert(patches > 0, "the evaluation fed the images to the model");
  } finally {
    tf.dispose([...Object.values(vision), ...Object.values(decoder)]);
    model.dispose();
  }
});
