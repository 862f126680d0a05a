import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { ropeIndex } from "../lib/model/mrope.ts";
import { ropeCosSin } from "../lib/model/qwen2.ts";
import { parseConfig } from "../lib/model/config.ts";
import { GOLDEN, VL_DIR } from "./_vl_fixture.ts";

const CFG = { imageTokenId: 303, visionStartTokenId: 300, spatialMergeSize: 2 };

Deno.test("ropeIndex reproduces the golden 3-D position ids and rope deltas", () => {
  for (const key of ["single_image", "batch", "text_only"]) {
    const c = GOLDEN[key];
    const got = ropeIndex(c.input_ids, CFG, {
      imageGridThw: c.image_grid_thw,
      attentionMask: c.attention_mask,
    });
    assertEquals(got.positionIds, c.expected.position_ids, key);
    assertEquals(got.ropeDeltas, c.expected.rope_deltas, key);
  }
  assertEquals(GOLDEN.greedy.rope_delta, GOLDEN.single_image.expected.rope_deltas[0][0]);
});

Deno.test("ropeIndex rejects image blocks that do not match imageGridThw", () => {
  const c = GOLDEN.single_image;
  assertThrows(() => ropeIndex(c.input_ids, CFG, { imageGridThw: [[1, 10, 12]] }), /needs 30 consecutive/);
  assertThrows(() => ropeIndex(c.input_ids, CFG, {}), /more <\|image_pad\|> blocks/);
  assertThrows(() => ropeIndex([[1, 2]], CFG, { imageGridThw: [[1, 2, 2]] }), /imageGridThw has 1 images/);
});

Deno.test("ropeCosSin with [3, B, T] positions equals ordinary RoPE when the three ids agree, and takes sections from their axes", async () => {
  const config = parseConfig(JSON.parse(await Deno.readTextFile(`${VL_DIR}/config.json`)));
  const pos = tf.tensor3d([[[0, 7, 3]], [[0, 9, 3]], [[0, 4, 5]]]);
  const { cos, sin } = ropeCosSin(config, pos);
  const c = (await cos.array()) as number[][][];
  const s = (await sin.array()) as number[][][];
  tf.dispose([pos, cos, sin]);
  const inv = (i: number) => Math.pow(1e6, -2 * i / 16);
  const axisPos = [[0, 7, 3], [0, 9, 3], [0, 4, 5]];
  for (let t = 0; t < 3; t++) {
    for (let i = 0; i < 16; i++) {
      const f = i % 8;
      const axis = f < 2 ? 0 : f < 5 ? 1 : 2;
      const a = axisPos[axis][t] * inv(f);
      assert(
        Math.abs(c[0][t][i] - Math.cos(a)) < 1e-5 && Math.abs(s[0][t][i] - Math.sin(a)) < 1e-5,
        `t=${t} i=${i}`,
      );
    }
  }
});
