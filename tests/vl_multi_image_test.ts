// Several images per row: the qwen25vl-tiny fixture run by Hugging Face transformers (float64) on a
// left-padded batch whose first row holds two images (tests/data/make_vl_multi_image_cases.py).
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import type { Qwen25VLModel } from "../lib/model/qwen25vl.ts";
import { allBackendsTest } from "./_backends.ts";
import { VL_DIR } from "./_vl_fixture.ts";

const CASE = JSON.parse(
  await Deno.readTextFile(new URL("./data/vl_multi_image_cases.json", import.meta.url)),
);

function f32(b64: string): Float32Array {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Float32Array(bytes.buffer);
}

/** The pixel generator of the Python script. */
function pixels(rows: number, seed: number): Float32Array {
  const out = new Float32Array(rows * 1176);
  let x = BigInt(seed);
  for (let i = 0; i < out.length; i++) {
    x = (1103515245n * x + 12345n) % 2147483648n;
    out[i] = Number((x >> 16n) & 255n) / 64 - 2;
  }
  return out;
}

function pixelValues(): tf.Tensor2D {
  const parts = (CASE.image_grid_thw as number[][]).map(([t, h, w], k) =>
    pixels(t * h * w, CASE.pixel_seeds[k])
  );
  const all = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  return tf.tensor2d(all, [all.length / 1176, 1176]);
}

allBackendsTest(
  "several images per row match Hugging Face (positions, embeddings, logits, greedy)",
  async (backend) => {
    const model = (await loadModel(VL_DIR, { backend })) as Qwen25VLModel;
    const pv = pixelValues();
    try {
      const ids: number[][] = CASE.input_ids,
        mask: number[][] = CASE.attention_mask,
        grids = CASE.image_grid_thw;
      const T = ids[0].length;
      const { positionIds, ropeDeltas } = model.ropeIndex(ids, { imageGridThw: grids, attentionMask: mask });
      for (let a = 0; a < 3; a++) {
        for (let b = 0; b < 2; b++) {
          for (let s = 0; s < T; s++) {
            if (mask[b][s]) {
              assertEquals(positionIds[a][b][s], CASE.position_ids[a][b][s]);
            }
          }
        }
      }
      // transformers 5 measures the delta from the row's real length, not the padded one: same positions.
      for (let b = 0; b < 2; b++) {
        const real = mask[b].reduce((x, y) => x + y, 0);
        assertEquals(ropeDeltas[b][0] + T, CASE.rope_deltas[b][0] + real);
      }

      const emb = model.encodeImages(pv, grids);
      const want = f32(CASE.image_embeds_f32_b64), got = await emb.data();
      emb.dispose();
      assertEquals(Array.from(emb.shape), CASE.image_embeds_shape);
      let d = 0;
      for (let i = 0; i < want.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
      assert(d < 1e-4, `image embeddings differ by ${d}`);

      const lg = model.logits(ids, { attentionMask: mask, pixelValues: pv, imageGridThw: grids });
      const gl = await lg.data(), wl = f32(CASE.logits_f32_b64);
      lg.dispose();
      const V = CASE.logits_shape[2];
      let dl = 0;
      for (let b = 0; b < 2; b++) {
        for (let s = 0; s < T; s++) {
          if (!mask[b][s]) continue;
          for (let v = 0; v < V; v++) {
            dl = Math.max(
              dl,
              Math.abs(gl[(b * T + s) * V + v] - wl[(b * T + s) * V + v]),
            );
          }
        }
      }
      assert(dl < 1e-3, `logits differ by ${dl}`);

      const out = await model.generate(ids, {
        attentionMask: mask,
        pixelValues: pv,
        imageGridThw: grids,
        temperature: 0,
        maxNewTokens: 3,
        eosTokenIds: [],
      });
      assertEquals(out.tokens, CASE.greedy_new_tokens);
    } finally {
      pv.dispose();
      model.dispose();
    }
  },
);
