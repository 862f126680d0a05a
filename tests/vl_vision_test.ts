import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { visionForward, visionLayout } from "../lib/model/vision.ts";
import { parseVisionConfig } from "../lib/model/config.ts";
import { allBackendsTest } from "./_backends.ts";
import { fixtureParams, GOLDEN, maxAbsDiff, VL_DIR } from "./_vl_fixture.ts";

const CONFIG = parseVisionConfig(
  JSON.parse(await Deno.readTextFile(`${VL_DIR}/config.json`)).vision_config,
  "config.json",
);

Deno.test("vision layout matches Hugging Face's rot_pos_ids, window_index and cu_seqlens", () => {
  for (const key of ["single_image", "batch"]) {
    const c = GOLDEN[key];
    const layout = visionLayout(c.image_grid_thw, CONFIG);
    assertEquals(layout.rotPosIds, c.vision_debug.rot_pos_ids, key);
    assertEquals(layout.windowIndex, c.vision_debug.window_index, key);
    assertEquals(layout.cuSeqlens, c.vision_debug.cu_seqlens, key);
    // HF pads sides that are exact multiples of the window with empty windows; they are dropped there too.
    assertEquals([...new Set(layout.cuWindowSeqlens)], c.vision_debug.cu_window_seqlens, key);
  }
});

allBackendsTest("vision tower reproduces the golden image embeddings", async () => {
  const params = await fixtureParams();
  try {
    for (const key of ["single_image", "batch"]) {
      const c = GOLDEN[key];
      const pv = tf.tensor2d(c.pixel_values);
      const last = visionForward(params, CONFIG, pv, c.image_grid_thw, { returnLastHidden: true });
      const embeds = visionForward(params, CONFIG, pv, c.image_grid_thw);
      // The same with attention computed in query chunks (as for large images).
      const chunked = visionForward(params, CONFIG, pv, c.image_grid_thw, {
        maxAttentionScores: 2 * 2 * 100 * 7,
      });
      const dChunk = await maxAbsDiff(chunked, c.expected.image_embeds);
      tf.dispose(chunked);
      assert(dChunk < 1e-4, `${key}: chunked attention differs by ${dChunk}`);
      const dLast = await maxAbsDiff(last, c.vision_debug.last_hidden);
      const dEmb = await maxAbsDiff(embeds, c.expected.image_embeds);
      tf.dispose([pv, last, embeds]);
      assert(dLast < 1e-3, `${key}: last_hidden differs by ${dLast}`);
      assert(dEmb < 1e-4, `${key}: image_embeds differ by ${dEmb}`);
    }
  } finally {
    tf.dispose(Object.values(params));
  }
});
