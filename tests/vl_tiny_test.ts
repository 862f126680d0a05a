// medthink-tiny-vl: created in the cache in the Hub layout, loaded through loadModel, and run on a
// real VQA-RAD image with the real tokenizer, chat template and image processor.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import type { Qwen25VLModel } from "../lib/model/qwen25vl.ts";
import { TINY_VL_CONFIG, TINY_VL_MODEL_NAME, tinyVLModelTensors } from "../lib/model/tiny_vl.ts";
import { decodeImage } from "../lib/data/images.ts";
import { imageTokenCount, processImages, readImageProcessorConfig } from "../lib/data/processor.ts";
import { expandImageTokens, loadTokenizer } from "../lib/data/tokenizer.ts";

const IMAGE = new URL("../data/vqa_rad_closed/images/5e684d0681c86c3a.jpg", import.meta.url).pathname;

Deno.test("medthink-tiny-vl weights are a fixed function of the seed", async () => {
  const a = tinyVLModelTensors(), b = tinyVLModelTensors();
  const names = a.map((t) => t.name);
  assert(names.includes("visual.patch_embed.proj.weight") && names.includes("model.embed_tokens.weight"));
  assert(!names.includes("lm_head.weight"), "tied embeddings: no lm_head");
  const qa = await a.find((t) => t.name === "visual.blocks.0.attn.qkv.weight")!.data();
  const qb = await b.find((t) => t.name === "visual.blocks.0.attn.qkv.weight")!.data();
  assertEquals(qa, qb);
});

Deno.test({
  name: "medthink-tiny-vl answers about a VQA-RAD image (tokenizer, template, processor, generate) [wasm]",
  // Writing the tokenizer cache on first use leaves a Node fs read pending inside transformers.js.
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const model = (await loadModel(TINY_VL_MODEL_NAME, { backend: "wasm" })) as Qwen25VLModel;
  try {
    assertEquals(model.constructor.name, "Qwen25VLModel");
    assertEquals(model.config.vocabSize, 151936);
    assertEquals(model.config.mropeSection, [4, 6, 6]);
    const raw = JSON.parse(await Deno.readTextFile(`${model.dir}/config.json`));
    assertEquals(raw._note, TINY_VL_CONFIG._note);
    const proc = await readImageProcessorConfig(model.dir!);
    assertEquals(proc.maxPixels, 200704);

    const tok = await loadTokenizer(model.dir);
    assertEquals(tok.imageTokenId, model.config.imageTokenId);
    const images = processImages([await decodeImage(IMAGE)], proc);
    const prompt = tok.applyChatTemplate([{
      role: "user",
      content: [{ type: "image", image: IMAGE }, {
        type: "text",
        text: "is there evidence of an aortic aneurysm?",
      }],
    }], { addGenerationPrompt: true });
    const text = expandImageTokens(prompt, images.imageGridThw.map((g) => imageTokenCount(g)));
    const ids = tok.encode(text);
    const nImage = ids.filter((t) => t === tok.imageTokenId).length;
    assertEquals(nImage, imageTokenCount(images.imageGridThw[0]));
    const pv = tf.tensor2d(images.pixelValues, [images.numPatches, images.patchDim]);
    const { ropeDeltas } = model.ropeIndex([ids], { imageGridThw: images.imageGridThw });
    assert(ropeDeltas[0][0] < 0, "an image compresses positions");
    const out = await model.generate([ids], {
      pixelValues: pv,
      imageGridThw: images.imageGridThw,
      temperature: 0,
      maxNewTokens: 3,
      eosTokenIds: [],
    });
    // The first greedy token is the argmax of the full forward's last logits.
    const lg = model.logits([ids], { pixelValues: pv, imageGridThw: images.imageGridThw });
    const last = tf.tidy(() => tf.argMax(tf.slice(lg, [0, ids.length - 1, 0], [1, 1, -1]), -1));
    const first = (await last.data())[0];
    tf.dispose([pv, lg, last]);
    assertEquals(out.tokens[0].length, 3);
    assertEquals(out.tokens[0][0], first);
  } finally {
    model.dispose();
  }
});
