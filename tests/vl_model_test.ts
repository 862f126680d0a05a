// Qwen2.5-VL end to end on the qwen25vl-tiny fixture: golden logits (single image, padded two-image
// batch, text-only), greedy continuation, encodeImages / ropeIndex, save -> load, frozen vision tower.
import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  throws as assertThrows,
} from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel, saveModel } from "../lib/model/load.ts";
import { type Qwen25VLModel, repeatImages } from "../lib/model/qwen25vl.ts";
import { writeCheckpoint } from "../lib/model/safetensors.ts";
import { QWEN25VL_PREPROCESSOR } from "../lib/model/tiny_vl.ts";
import { allBackendsTest, backendTest } from "./_backends.ts";
import { assertGoldenGreedy, GOLDEN, maxAbsDiff, VL_DIR } from "./_vl_fixture.ts";

/** Max |a - b| over the slots where mask = 1 (padded slots' logits mean nothing). */
async function maskedDiff(t: tf.Tensor, expected: number[][][], mask: number[][]): Promise<number> {
  const got = (await t.array()) as number[][][];
  let m = 0;
  for (let b = 0; b < got.length; b++) {
    for (let s = 0; s < got[b].length; s++) {
      if (!mask[b][s]) continue;
      for (let v = 0; v < got[b][s].length; v++) {
        const d = Math.abs(got[b][s][v] - expected[b][s][v]);
        if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
      }
    }
  }
  return m;
}

async function vlLogits(model: Qwen25VLModel, key: string): Promise<number> {
  const c = GOLDEN[key];
  const pv = c.pixel_values ? tf.tensor2d(c.pixel_values) : undefined;
  const lg = model.logits(c.input_ids, {
    attentionMask: c.attention_mask,
    pixelValues: pv,
    imageGridThw: c.image_grid_thw,
  });
  const d = await maskedDiff(lg, c.expected.logits, c.attention_mask);
  tf.dispose([lg, pv!].filter(Boolean));
  return d;
}

allBackendsTest("qwen25vl-tiny: golden vision, positions, logits and greedy tokens", async (backend, t) => {
  const model = (await loadModel(VL_DIR, { backend })) as Qwen25VLModel;
  try {
    assertEquals(model.constructor.name, "Qwen25VLModel");
    await t.step("encodeImages = golden image_embeds (1e-4)", async () => {
      for (const key of ["single_image", "batch"]) {
        const c = GOLDEN[key];
        const pv = tf.tensor2d(c.pixel_values);
        const e = model.encodeImages(pv, c.image_grid_thw);
        const d = await maxAbsDiff(e, c.expected.image_embeds);
        tf.dispose([pv, e]);
        assert(d < 1e-4, `${key}: image_embeds differ by ${d}`);
      }
    });
    await t.step("ropeIndex = golden position ids and rope deltas", () => {
      for (const key of ["single_image", "batch", "text_only"]) {
        const c = GOLDEN[key];
        const got = model.ropeIndex(c.input_ids, {
          imageGridThw: c.image_grid_thw,
          attentionMask: c.attention_mask,
        });
        assertEquals(got.positionIds, c.expected.position_ids, key);
        assertEquals(got.ropeDeltas, c.expected.rope_deltas, key);
      }
    });
    await t.step("logits within 1e-3 where mask = 1 (single image, padded batch, text only)", async () => {
      for (const key of ["single_image", "batch", "text_only"]) {
        const d = await vlLogits(model, key);
        assert(d < 1e-3, `${key}: logits differ by ${d}`);
      }
    });
    await t.step(
      "a batch mixing an image row and a left-padded text-only row matches each alone",
      async () => {
        const img = GOLDEN.single_image, txt = GOLDEN.text_only;
        const T = img.input_ids[0].length, n = txt.input_ids[0].length;
        const ids = [img.input_ids[0], [...new Array(T - n).fill(0), ...txt.input_ids[0]]];
        const mask = [img.attention_mask[0], [...new Array(T - n).fill(0), ...txt.attention_mask[0]]];
        const pv = tf.tensor2d(img.pixel_values);
        const lg = model.logits(ids, {
          attentionMask: mask,
          pixelValues: pv,
          imageGridThw: img.image_grid_thw,
        });
        const got = (await lg.array()) as number[][][];
        tf.dispose([pv, lg]);
        const expected = [img.expected.logits[0], [
          ...new Array(T - n).fill(null),
          ...txt.expected.logits[0],
        ]];
        let m = 0;
        for (let b = 0; b < 2; b++) {
          for (let s = 0; s < T; s++) {
            if (!mask[b][s]) continue;
            for (let v = 0; v < got[b][s].length; v++) {
              m = Math.max(m, Math.abs(got[b][s][v] - expected[b][s][v]));
            }
          }
        }
        assert(m < 1e-3, `mixed batch logits differ by ${m}`);
      },
    );
    await t.step("greedy continuation with the KV cache, positions from rope_deltas", async () => {
      await assertGoldenGreedy(model);
      // Several samples of one prompt share its prefill (the cache and the rope delta are repeated).
      await assertGoldenGreedy(model, { numSamples: 2, label: "numSamples 2" });
    });
    await t.step("the padded batch's rows generate as each row alone", async () => {
      const c = GOLDEN.batch;
      const pv = tf.tensor2d(c.pixel_values);
      const both = await model.generate(c.input_ids, {
        attentionMask: c.attention_mask,
        pixelValues: pv,
        imageGridThw: c.image_grid_thw,
        temperature: 0,
        maxNewTokens: 3,
        eosTokenIds: [],
      });
      const pv1 = tf.slice(pv, [40, 0], [32, -1]) as tf.Tensor2D;
      const alone = await model.generate([c.input_ids[1].slice(5)], {
        pixelValues: pv1,
        imageGridThw: [c.image_grid_thw[1]],
        temperature: 0,
        maxNewTokens: 3,
        eosTokenIds: [],
      });
      tf.dispose([pv, pv1]);
      assertEquals(both.tokens[1], alone.tokens[0]);
    });
  } finally {
    model.dispose();
  }
});

allBackendsTest("qwen25vl: gradients reach the vision tower unless it is frozen", async (backend) => {
  const model = (await loadModel(VL_DIR, { backend })) as Qwen25VLModel;
  const c = GOLDEN.single_image;
  const pv = tf.tensor2d(c.pixel_values);
  const loss = () => {
    const lg = model.logits(c.input_ids, { pixelValues: pv, imageGridThw: c.image_grid_thw });
    return tf.mean(tf.square(lg)) as tf.Scalar;
  };
  const gradsOf = () => {
    const vars = Object.values(model.params).filter((v) => v.trainable);
    const { value, grads } = tf.variableGrads(loss, vars);
    value.dispose();
    // variableGrads keys by tfjs variable name: map back to the Hub names.
    const out: Record<string, tf.Tensor> = {};
    for (const [name, v] of Object.entries(model.params)) if (grads[v.name]) out[name] = grads[v.name];
    return out;
  };
  try {
    const g = gradsOf();
    const patch = g["visual.patch_embed.proj.weight"], q = g["model.layers.0.self_attn.q_proj.weight"];
    assert(patch && q, "vision and decoder parameters both get gradients");
    assert((await tf.norm(patch).data())[0] > 0, "the patch embedding's gradient is non-zero");
    // The gradient is the right one: a central difference along it (the window-attention block 0's qkv).
    const w = model.params["visual.blocks.0.attn.qkv.weight"];
    const dir = g["visual.blocks.0.attn.qkv.weight"];
    const dirNorm = (await tf.norm(dir).data())[0];
    assert(dirNorm > 0, "block 0's gradient is non-zero");
    const w0 = tf.clone(w), eps = 1e-2 / dirNorm;
    const at = async (s: number) => {
      w.assign(tf.tidy(() => tf.add(w0, tf.mul(dir, s * eps))));
      const l = loss();
      const v = (await l.data())[0];
      l.dispose();
      return v;
    };
    const fd = ((await at(1)) - (await at(-1))) / (2 * eps);
    w.assign(w0);
    w0.dispose();
    const rel = Math.abs(fd - dirNorm ** 2) / dirNorm ** 2;
    assert(rel < 0.05, `directional derivative ${fd} vs |g|^2 ${dirNorm ** 2}`);
    tf.dispose(Object.values(g));
    model.freezeVision();
    const g2 = gradsOf();
    assertEquals(Object.keys(g2).filter((n) => n.startsWith("visual.")), []);
    assert(g2["model.layers.0.self_attn.q_proj.weight"], "the decoder still trains");
    tf.dispose(Object.values(g2));
    model.freezeVision(false);
    assert(model.params["visual.merger.mlp.2.weight"].trainable);
  } finally {
    pv.dispose();
    model.dispose();
  }
});

backendTest(
  "qwen25vl: a saved checkpoint loads back with identical logits, VL config and processor config",
  "wasm",
  async () => {
    const model = (await loadModel(VL_DIR, { backend: "wasm" })) as Qwen25VLModel;
    const dir = await Deno.makeTempDir({ prefix: "vl_save_" });
    try {
      await saveModel(model, dir);
      const cfg = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      assertEquals(cfg.model_type, "qwen2_5_vl");
      assertEquals(cfg.vision_config.fullatt_block_indexes, [1, 3]);
      assertEquals(
        JSON.parse(await Deno.readTextFile(`${dir}/preprocessor_config.json`)),
        JSON.parse(await Deno.readTextFile(`${VL_DIR}/preprocessor_config.json`)),
      );
      const back = (await loadModel(dir, { backend: "wasm" })) as Qwen25VLModel;
      const c = GOLDEN.single_image;
      const pv = tf.tensor2d(c.pixel_values);
      const a = model.logits(c.input_ids, { pixelValues: pv, imageGridThw: c.image_grid_thw });
      const b = back.logits(c.input_ids, { pixelValues: pv, imageGridThw: c.image_grid_thw });
      const [da, db] = [await a.data(), await b.data()];
      tf.dispose([a, b, pv]);
      back.dispose();
      assert(da.every((x, i) => x === db[i]), "identical logits after save -> load");
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

backendTest(
  "qwen25vl: a transformers-5 layout checkpoint (text_config, model.visual.*) loads the same",
  "wasm",
  async () => {
    const model = (await loadModel(VL_DIR, { backend: "wasm" })) as Qwen25VLModel;
    const dir = await Deno.makeTempDir({ prefix: "vl_tf5_" });
    try {
      const raw = JSON.parse(await Deno.readTextFile(`${VL_DIR}/config.json`));
      const textKeys = [
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "rms_norm_eps",
        "vocab_size",
        "max_position_embeddings",
        "hidden_act",
        "bos_token_id",
        "eos_token_id",
      ];
      const text: Record<string, unknown> = { model_type: "qwen2_5_vl_text", dtype: "float32" };
      for (const k of textKeys) text[k] = raw[k];
      text.rope_parameters = { rope_type: "default", rope_theta: raw.rope_theta, mrope_section: [2, 3, 3] };
      const vc = { ...raw.vision_config, model_type: "qwen2_5_vl" };
      delete vc.in_chans;
      const tf5 = {
        architectures: raw.architectures,
        model_type: "qwen2_5_vl",
        dtype: "float32",
        text_config: text,
        vision_config: vc,
        image_token_id: 303,
        vision_start_token_id: 300,
        vision_end_token_id: 301,
        tie_word_embeddings: false,
      };
      const tensors = Object.entries(model.params).map(([name, v]) => ({
        name: name.startsWith("visual.")
          ? `model.${name}`
          : name.replace(/^model\./, "model.language_model."),
        shape: v.shape.slice(),
        data: async () => (await v.data()) as Float32Array,
      }));
      await writeCheckpoint(dir, tf5, tensors, { dtype: "F32" });
      const back = (await loadModel(dir, { backend: "wasm" })) as Qwen25VLModel;
      assertEquals(back.config.mropeSection, [2, 3, 3]);
      const d = await vlLogits(back, "batch");
      assert(d < 1e-3, `logits differ by ${d}`);
      // Its folder has no preprocessor_config.json: saving writes Qwen2.5-VL's published one.
      const out = `${dir}/saved`;
      await saveModel(back, out);
      back.dispose();
      assertEquals(
        JSON.parse(await Deno.readTextFile(`${out}/preprocessor_config.json`)),
        QWEN25VL_PREPROCESSOR,
      );
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("qwen25vl: bad inputs name what is wrong", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vl_bad_" });
  try {
    const raw = JSON.parse(await Deno.readTextFile(`${VL_DIR}/config.json`));
    delete raw.vision_config;
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(raw));
    await assertRejects(loadModel(dir, { backend: "cpu" }), /no vision_config/);
    const model = (await loadModel(VL_DIR, { backend: "cpu" })) as Qwen25VLModel;
    try {
      const c = GOLDEN.single_image;
      const pv = tf.tensor2d(c.pixel_values);
      assertThrows(
        () => model.logits(c.input_ids, { pixelValues: pv, imageGridThw: [[1, 10, 12]] }),
        /needs 30 consecutive/,
      );
      assertThrows(() => model.encodeImages(pv, [[1, 10, 8]]), /pixelValues has 100 rows/);
      assertThrows(() => model.encodeImages(pv, [[1, 10, 5, 1]]), /imageGridThw\[0\] must be three/);
      assertThrows(() => model.logits(c.input_ids, { imageGridThw: c.image_grid_thw }), /no pixelValues/);
      pv.dispose();
      // A checkpoint missing one vision tensor, and one with a wrongly shaped one.
      const raw2 = JSON.parse(await Deno.readTextFile(`${VL_DIR}/config.json`));
      const tensors = (drop: string, reshape = "") =>
        Object.entries(model.params).filter(([n]) => n !== drop).map(([name, v]) => ({
          name,
          shape: name === reshape ? [v.size] : v.shape.slice(),
          data: async () => (await v.data()) as Float32Array,
        }));
      await writeCheckpoint(`${dir}/missing`, raw2, tensors("visual.merger.mlp.2.bias"));
      await assertRejects(
        loadModel(`${dir}/missing`, { backend: "cpu" }),
        /missing tensor visual\.merger\.mlp\.2\.bias/,
      );
      await writeCheckpoint(`${dir}/shape`, raw2, tensors("", "visual.blocks.2.attn.qkv.weight"));
      await assertRejects(
        loadModel(`${dir}/shape`, { backend: "cpu" }),
        /visual\.blocks\.2\.attn\.qkv\.weight .*shape \[3072\] but .* implies \[96,32\]/,
      );
    } finally {
      model.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("repeatImages repeats each row's images for its copies (GRPO groups)", async () => {
  const pv = tf.tensor2d([[0], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10], [11]]);
  // Row 0: one 1x2x2 image (rows 0-3); row 1: none; row 2: a 1x2x2 and a 1x2x2 image (rows 4-11).
  const grids = [[1, 2, 2], [1, 2, 2], [1, 2, 2]];
  const rep = repeatImages({ pixelValues: pv, imageGridThw: grids }, [1, 0, 2], 2);
  assertEquals(rep.imageGridThw.length, 6);
  assertEquals(
    Array.from(await rep.pixelValues.data()),
    [0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11],
  );
  assertThrows(() => repeatImages({ pixelValues: pv, imageGridThw: grids }, [1, 1], 2), /counts 2 images/);
  tf.dispose([pv, rep.pixelValues]);
});
