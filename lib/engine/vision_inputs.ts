/**
 * Image inputs for probe and evaluate with a Qwen2.5-VL model: decode each row's images, run the
 * Qwen2-VL image processor, expand every `<|image_pad|>` placeholder of the rendered prompt to one
 * token per merged patch, and hand the model `pixelValues` / `imageGridThw` for the batch.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { CausalLM } from "../model/types.ts";
import { decodeRowImages } from "../data/images.ts";
import {
  type ImageProcessorConfig,
  imageTokenCount,
  processImages,
  readImageProcessorConfig,
} from "../data/processor.ts";
import { expandImageTokens } from "../data/tokenizer.ts";
import type { Row } from "../data/types.ts";

/** Output of an {@linkcode ImageInputBuilder}. */
export interface ImageInputs {
  /** The prompt texts with one `<|image_pad|>` per merged patch of each image. */
  texts: string[];
  /** The processor's `pixel_values` for all images of the batch, in order (a `[patches, dim]` tensor). */
  pixelValues?: unknown;
  /** `(t, h, w)` patch grid per image. */
  imageGridThw?: number[][];
}

/** Builds multimodal model inputs for a batch of rows from their rendered prompt texts. */
export type ImageInputBuilder = (rows: Row[], texts: string[]) => Promise<ImageInputs>;

/** Options of {@linkcode visionInputBuilder}. */
export interface VisionInputOptions {
  /** The image processor's settings (default: the model folder's `preprocessor_config.json`). */
  processor?: ImageProcessorConfig;
}

/**
 * An {@linkcode ImageInputBuilder} for `model`: the batch's images in row order, one block of
 * image tokens per image (rows without images pass through unchanged).
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * const model = await loadModel("medthink-tiny-vl");
 * const images = visionInputBuilder(model);
 * ```
 */
export function visionInputBuilder(model: CausalLM, options: VisionInputOptions = {}): ImageInputBuilder {
  let config: Promise<ImageProcessorConfig> | undefined = options.processor
    ? Promise.resolve(options.processor)
    : undefined;
  return async function buildImageInputs(rows: Row[], texts: string[]): Promise<ImageInputs> {
    config ??= model.dir ? readImageProcessorConfig(model.dir) : readImageProcessorConfig("");
    const cfg = await config;
    const perRow = await Promise.all(rows.map((r) => decodeRowImages(r)));
    const all = perRow.flat();
    if (all.length === 0) return { texts };
    const processed = processImages(all, cfg);
    const counts = processed.imageGridThw.map((g) => imageTokenCount(g, cfg.mergeSize));
    let k = 0;
    const expanded = texts.map((text, i) => {
      const n = perRow[i].length;
      const mine = counts.slice(k, k + n);
      k += n;
      try {
        return n === 0 && !text.includes("<|image_pad|>") ? text : expandImageTokens(text, mine);
      } catch (e) {
        throw new Error(`Row ${rows[i].id}: ${(e as Error).message}`);
      }
    });
    return {
      texts: expanded,
      pixelValues: tf.tensor2d(processed.pixelValues, [processed.numPatches, processed.patchDim]),
      imageGridThw: processed.imageGridThw,
    };
  };
}
