/**
 * Multimodal rotary position embedding (M-RoPE) of Qwen2-VL / Qwen2.5-VL.
 *
 * Every token has three position ids (temporal, height, width). Text tokens get `(p, p, p)`; the merged
 * tokens of an image with grid `[t, h, w]` starting at `p` get `(p, p + i, p + j)`, and text resumes
 * at `p + max(h, w) / 2`. The rotary frequencies are split into `mrope_section` groups that take their
 * angle from the temporal, height and width ids respectively (Hugging Face's `get_rope_index` and
 * `apply_multimodal_rotary_pos_emb`; the cos/sin of the sections are `ropeCosSin` in `qwen2.ts`).
 *
 * @module
 */
/** Token ids and merge size `ropeIndex` needs (the `qwen2_5_vl` config's fields). */
export interface RopeIndexConfig {
  /** `<|image_pad|>`, the token each merged image patch stands in for. */
  imageTokenId: number;
  /** `<|vision_start|>` (informational: image blocks are found by their `<|image_pad|>` runs). */
  visionStartTokenId?: number;
  /** Patches per merged token along each side (default 2). */
  spatialMergeSize?: number;
}

/** Options of {@linkcode ropeIndex}. */
export interface RopeIndexOptions {
  /** `[images, 3]` grids in the order the images occur in the batch (row 0's first). */
  imageGridThw?: number[][];
  /** `[B, T]`, 1 on real tokens (default all ones). Prompts are left-padded. */
  attentionMask?: number[][];
}

/** What {@linkcode ropeIndex} returns. */
export interface RopeIndex {
  /** `[3, B, T]` (temporal, height, width); padded slots hold 1. */
  positionIds: number[][][];
  /** `[B, 1]`: largest position id of the row + 1 - T. Token at slot `T + k` gets position `T + k + delta`. */
  ropeDeltas: number[][];
  /** Per image (batch order): the batch row and slot of its first `<|image_pad|>`. */
  imageSpans: { row: number; start: number; length: number }[];
}

/**
 * 3-D position ids and rope deltas of a (left-padded) batch, with Hugging Face's `get_rope_index`
 * semantics for images. Each run of `<|image_pad|>` tokens takes the next grid of `imageGridThw` and
 * must hold exactly `t * h * w / merge^2` tokens.
 *
 * @example
 * ```ts
 * import { ropeIndex } from "./mrope.ts";
 * const { positionIds, ropeDeltas } = ropeIndex([[5, 300, 303, 301, 6]], { imageTokenId: 303 }, {
 *   imageGridThw: [[1, 2, 2]],
 * });
 * // positionIds[0][0] = [0, 1, 2, 3, 4]; ropeDeltas = [[0]]
 * ```
 */
export function ropeIndex(
  inputIds: number[][],
  config: RopeIndexConfig,
  options: RopeIndexOptions = {},
): RopeIndex {
  const grids = options.imageGridThw ?? [];
  const merge = config.spatialMergeSize ?? 2;
  const B = inputIds.length, T = B ? inputIds[0].length : 0;
  const mask = options.attentionMask;
  if (mask && (mask.length !== B || mask.some((r) => r.length !== T))) {
    throw new Error(`attentionMask must have the shape of inputIds [${B}, ${T}].`);
  }
  const positionIds = [0, 1, 2].map(() => inputIds.map((r) => r.map(() => 1)));
  const ropeDeltas: number[][] = [];
  const imageSpans: RopeIndex["imageSpans"] = [];
  let image = 0;
  for (let b = 0; b < B; b++) {
    const row = inputIds[b];
    if (row.length !== T) throw new Error(`inputIds row ${b} has ${row.length} tokens, row 0 has ${T}.`);
    let p = 0, largest = -1;
    let s = 0;
    while (s < T) {
      if (mask && !mask[b][s]) {
        s++;
        continue;
      }
      if (row[s] !== config.imageTokenId) {
        for (const axis of positionIds) axis[b][s] = p;
        largest = p;
        p++;
        s++;
        continue;
      }
      if (image >= grids.length) {
        throw new Error(
          `inputIds row ${b} has more <|image_pad|> blocks than imageGridThw has images (${grids.length}).`,
        );
      }
      const [t, h, w] = grids[image];
      const gh = h / merge, gw = w / merge, n = t * gh * gw;
      let k = 0;
      for (let f = 0; f < t; f++) {
        for (let i = 0; i < gh; i++) {
          for (let j = 0; j < gw; j++, k++) {
            const slot = s + k;
            if (slot >= T || row[slot] !== config.imageTokenId || (mask && !mask[b][slot])) {
              throw new Error(
                `inputIds row ${b}: image ${image} (grid ${JSON.stringify(grids[image])}) needs ${n} ` +
                  `consecutive <|image_pad|> tokens, found ${k}.`,
              );
            }
            // Still images: the temporal id stays at p (Hugging Face scales it by time for video only).
            positionIds[0][b][slot] = p;
            positionIds[1][b][slot] = p + i;
            positionIds[2][b][slot] = p + j;
          }
        }
      }
      imageSpans.push({ row: b, start: s, length: n });
      largest = Math.max(largest, p + Math.max(gh, gw) - 1);
      p += Math.max(gh, gw);
      s += n;
      image++;
    }
    ropeDeltas.push([largest + 1 - T]);
  }
  if (image !== grids.length) {
    throw new Error(
      `imageGridThw has ${grids.length} images but inputIds hold ${image} <|image_pad|> blocks.`,
    );
  }
  return { positionIds, ropeDeltas, imageSpans };
}
