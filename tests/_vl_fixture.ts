/**
 * Shared helpers of the Qwen2.5-VL golden tests: the fixture's paths, its golden values and its
 * weights read straight from the shards (independent of the loader under test).
 *
 * @module
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { readSafetensors } from "../lib/model/safetensors.ts";
import type { CausalLM } from "../lib/model/types.ts";
import { QWEN25VL_TINY } from "./_model_fixtures.ts";

/** The tiny Qwen2.5-VL fixture folder (the one of `_model_fixtures.ts`, under the name these tests use). */
export const VL_DIR: string = QWEN25VL_TINY;

// deno-lint-ignore no-explicit-any
export const GOLDEN: any = JSON.parse(await Deno.readTextFile(`${VL_DIR}/golden.json`));

/**
 * Greedy-decode the golden single-image case (its pixel values and grid, temperature 0, 4 new tokens, no
 * EOS) and assert that each of the `numSamples` rows is the golden continuation `greedy.new_tokens`.
 */
export async function assertGoldenGreedy(
  model: Pick<CausalLM, "generate">,
  { numSamples = 1, label = "" }: { numSamples?: number; label?: string } = {},
): Promise<void> {
  const c = GOLDEN.single_image;
  const pv = tf.tensor2d(c.pixel_values);
  try {
    const out = await model.generate(c.input_ids, {
      pixelValues: pv,
      imageGridThw: c.image_grid_thw,
      temperature: 0,
      maxNewTokens: 4,
      eosTokenIds: [],
      numSamples,
    });
    const want = new Array(numSamples).fill(GOLDEN.greedy.new_tokens);
    const msg = `${label ? `${label}: ` : ""}greedy tokens ${JSON.stringify(out.tokens)}, golden ${
      JSON.stringify(want)
    }`;
    assertEquals(out.tokens, want, msg);
  } finally {
    pv.dispose();
  }
}

/** Every tensor of the fixture as float32 tfjs tensors under its Hub name (caller disposes). */
export async function fixtureParams(): Promise<Record<string, tf.Tensor>> {
  const out: Record<string, tf.Tensor> = {};
  for (const shard of ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]) {
    const ts = await readSafetensors(`${VL_DIR}/${shard}`);
    for (const [name, t] of Object.entries(ts)) out[name] = tf.tensor(t.data as Float32Array, t.shape);
  }
  return out;
}

/** Largest absolute difference between a tensor's values and a nested array. */
export async function maxAbsDiff(t: tf.Tensor, expected: unknown): Promise<number> {
  const got = await t.data();
  const want = (expected as number[]).flat(Infinity) as number[];
  if (got.length !== want.length) throw new Error(`size ${got.length} != expected ${want.length}`);
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}
