/**
 * Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`): the vision tower of `vision.ts` feeding the
 * Qwen2 decoder of `qwen2.ts`.
 *
 * ```
 * image_embeds = visual(pixel_values, image_grid_thw)          // [image tokens, hidden]
 * h0 = embed_tokens(ids); h0[ids == <|image_pad|>] = image_embeds  (row-major over the batch)
 * positions = ropeIndex(ids, grids, mask)                      // [3, B, T] multimodal RoPE
 * logits = lm_head(decoder(h0, positions))
 * ```
 *
 * Generation continues the text positions: the token at slot `T + k` gets position
 * `T + k + rope_deltas[row]` on all three axes.
 *
 * Importing this module registers the `qwen2_5_vl` loader with `loadModel`.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { ForwardOptions, GenerateOptions, GenerateResult, ModelConfig } from "./types.ts";
import {
  checkWeightsDtype,
  decoderForward,
  embedTokens,
  expectedParams,
  halfCandidate,
  type KVCache,
  type PrefillResult,
  Qwen2Model,
  type Qwen2ModelOptions,
  ropeCosSin,
  toIdTensor,
  toMaskTensor,
  weightOf,
} from "./qwen2.ts";
import { generate } from "./generate.ts";
import { type RopeIndex, ropeIndex } from "./mrope.ts";
import { injectiveGather, visionExpectedParams, visionForward } from "./vision.ts";
import { type LoadModelOptions, registerArchitecture } from "./registry.ts";
import { loadWeights } from "./weights.ts";

/** What {@linkcode Qwen25VLModel.ropeIndex} returns. */
export interface VLRopeIndex {
  /** `[3, B, T]` temporal, height and width position ids (padded slots hold 1). */
  positionIds: number[][][];
  /** `[B, 1]`: the offset that generated tokens' positions continue from. */
  ropeDeltas: number[][];
}

/** Options of {@linkcode Qwen25VLModel.ropeIndex}. */
export interface VLRopeIndexOptions {
  /** `[images, 3]` patch grids, in the order the images occur in the batch. */
  imageGridThw?: number[][];
  /** `[B, T]` 1 = real token. */
  attentionMask?: number[][] | tf.Tensor2D;
}

/** Host-side preparation of a multimodal forward pass, carried from `generate` to `prefill`. */
interface VLPrepared {
  index: RopeIndex;
  positionIds: tf.Tensor3D;
}

const PREPARED = Symbol("qwen25vl.prepared");
type WithPrepared = ForwardOptions & { [PREPARED]?: VLPrepared };

function rowsOf(x: number[][] | tf.Tensor2D, what: string): number[][] {
  if (!(x instanceof tf.Tensor)) return x;
  if (tf.getBackend() === "webgpu") {
    throw new Error(
      `${what} is a tensor, which cannot be read synchronously on webgpu: pass it as a number[][] when giving pixelValues.`,
    );
  }
  return x.arraySync() as number[][];
}

/** A Qwen2.5-VL model: the {@linkcode CausalLM} contract plus images. Build one with `loadModel`. */
export class Qwen25VLModel extends Qwen2Model {
  /** Wrap loaded parameters (`visual.*`, `model.*`, `lm_head.weight`) as a model. */
  constructor(config: ModelConfig, params: Record<string, tf.Variable>, options: Qwen2ModelOptions = {}) {
    if (!config.vision) throw new Error("A Qwen2.5-VL model needs a config with vision_config.");
    if (config.imageTokenId === undefined) throw new Error("A Qwen2.5-VL config needs image_token_id.");
    super(config, params, options);
  }

  /**
   * The vision tower: `pixelValues` `[patches, 1176]` (the processor's layout) of the images
   * `imageGridThw` -> merged image embeddings `[tokens, hidden]`, image after image.
   *
   * @example
   * ```ts ignore
   * const embeds = model.encodeImages(pixelValues, [[1, 10, 10]]); // [25, hidden]
   * ```
   */
  encodeImages(pixelValues: tf.Tensor2D, imageGridThw: number[][]): tf.Tensor2D {
    return visionForward((name) => weightOf(this, name), this.config.vision!, pixelValues, imageGridThw, {
      eps: 1e-6,
      gradientCheckpointing: this.gradientCheckpointing,
      trainables: (prefix) =>
        Object.entries(this.params).filter(([n, v]) => v.trainable && n.startsWith(prefix)).map(([, v]) => v),
    });
  }

  /**
   * 3-D position ids `[3, B, T]` and rope deltas `[B, 1]` of a left-padded batch (Hugging Face's
   * `get_rope_index`).
   *
   * @example
   * ```ts ignore
   * const { positionIds, ropeDeltas } = model.ropeIndex(ids, { imageGridThw: [[1, 10, 10]] });
   * ```
   */
  ropeIndex(inputIds: number[][] | tf.Tensor2D, options: VLRopeIndexOptions = {}): VLRopeIndex {
    const { positionIds, ropeDeltas } = this.index(rowsOf(inputIds, "inputIds"), options);
    return { positionIds, ropeDeltas };
  }

  /** Mark the vision tower's parameters (not) trainable: frozen, they get no gradient in training. */
  freezeVision(frozen = true): void {
    for (const [name, v] of Object.entries(this.params)) {
      if (name.startsWith("visual.")) v.trainable = !frozen;
    }
  }

  /** 3-D (temporal, height, width) rotary positions of token rows with images. */
  private index(rows: number[][], options: VLRopeIndexOptions): RopeIndex {
    const mask = options.attentionMask === undefined
      ? undefined
      : rowsOf(options.attentionMask, "attentionMask");
    return ropeIndex(rows, {
      imageTokenId: this.config.imageTokenId!,
      visionStartTokenId: this.config.visionStartTokenId,
      spatialMergeSize: this.config.vision!.spatialMergeSize,
    }, { imageGridThw: options.imageGridThw, attentionMask: mask });
  }

  /** The host-side part of a multimodal forward: where the images go and the 3-D positions. */
  private prepare(rows: number[][], options: ForwardOptions): VLPrepared {
    const index = this.index(rows, options);
    return { index, positionIds: tf.tensor3d(index.positionIds, undefined, "float32") };
  }

  /** Token embeddings with the image embeddings written over the `<|image_pad|>` slots. */
  private spliceImages(ids: tf.Tensor2D, index: RopeIndex, options: ForwardOptions): tf.Tensor3D {
    const text = embedTokens(this, ids);
    if (!index.imageSpans.length) return text;
    if (!options.pixelValues || !options.imageGridThw) {
      throw new Error("inputIds hold <|image_pad|> tokens but no pixelValues / imageGridThw were given.");
    }
    const [B, T, H] = text.shape;
    const images = this.encodeImages(options.pixelValues, options.imageGridThw);
    const M = images.shape[0];
    const fwd = new Array(B * T).fill(M);
    const bwd = new Array(M);
    const keep = new Float32Array(B * T).fill(1);
    let r = 0;
    for (const span of index.imageSpans) {
      for (let k = 0; k < span.length; k++, r++) {
        const slot = span.row * T + span.start + k;
        fwd[slot] = r;
        bwd[r] = slot;
        keep[slot] = 0;
      }
    }
    if (r !== M) {
      throw new Error(`The images give ${M} embeddings but inputIds hold ${r} <|image_pad|> tokens.`);
    }
    const placed = tf.reshape(injectiveGather(images, fwd, bwd), [B, T, H]);
    return tf.add(tf.mul(text, tf.tensor3d(keep, [B, T, 1])), placed) as tf.Tensor3D;
  }

  /** Final-norm hidden states `[B, T, H]` of a multimodal forward pass (differentiable). */
  override hidden(inputIds: number[][] | tf.Tensor2D, options: ForwardOptions = {}): tf.Tensor3D {
    // Text-only without explicit positions: 3-D positions equal 1-D ones, which stay on the device.
    if (!options.pixelValues && !options.imageGridThw?.length) return super.hidden(inputIds, options);
    return tf.tidy(() => {
      const rows = rowsOf(inputIds, "inputIds");
      const ids = toIdTensor(rows);
      const mask = toMaskTensor(options.attentionMask, ids.shape as [number, number]);
      const prep = this.prepare(rows, options);
      const { cos, sin } = ropeCosSin(this.config, options.positionIds ?? prep.positionIds);
      const inputsEmbeds = this.spliceImages(ids, prep.index, options);
      return decoderForward(this, { inputsEmbeds, attentionMask: mask, cos, sin });
    });
  }

  /** Prefill for generation: image embeddings spliced in, 3-D positions, next positions `T + delta`. */
  override prefill(
    ids: tf.Tensor2D,
    mask: tf.Tensor2D,
    cache: KVCache,
    options: ForwardOptions = {},
  ): PrefillResult {
    const prep = (options as WithPrepared)[PREPARED];
    if (!prep) return super.prefill(ids, mask, cache, options);
    return tf.tidy(() => {
      const { cos, sin } = ropeCosSin(this.config, options.positionIds ?? prep.positionIds);
      const inputsEmbeds = this.spliceImages(ids, prep.index, options);
      const h = decoderForward(this, { inputsEmbeds, attentionMask: mask, cos, sin, cache });
      const [B, T, H] = h.shape;
      const last = tf.slice(h, [0, T - 1, 0], [B, 1, H]);
      return {
        logits: tf.reshape(this.project(last), [B, -1]) as tf.Tensor2D,
        nextPositions: tf.tensor1d(prep.index.ropeDeltas.map(([d]) => T + d), "float32"),
      };
    });
  }

  /**
   * Batched, KV-cached generation from left-padded prompts with their images (`pixelValues`,
   * `imageGridThw` in the options).
   *
   * @example
   * ```ts ignore
   * const out = await model.generate(ids, { pixelValues, imageGridThw: [[1, 10, 10]], temperature: 0 });
   * ```
   */
  override async generate(
    inputIds: number[][] | tf.Tensor2D,
    options: GenerateOptions = {},
  ): Promise<GenerateResult> {
    if (!options.pixelValues && !options.imageGridThw?.length) return await super.generate(inputIds, options);
    const rows = inputIds instanceof tf.Tensor ? (await inputIds.array()) as number[][] : inputIds;
    const mask = options.attentionMask instanceof tf.Tensor
      ? (await options.attentionMask.array()) as number[][]
      : options.attentionMask;
    const prep = this.prepare(rows, { ...options, attentionMask: mask });
    try {
      const opts: GenerateOptions & WithPrepared = { ...options, attentionMask: mask, [PREPARED]: prep };
      return await generate(this, rows, opts);
    } finally {
      prep.positionIds.dispose();
    }
  }
}

/** Image inputs of a batch: the processor's patches and one grid per image. */
export interface ImageBatch {
  /** `[patches, 1176]` in the processor's layout, all images concatenated. */
  pixelValues: tf.Tensor2D;
  /** `[t, h, w]` patch grid per image, in order. */
  imageGridThw: number[][];
}

/**
 * The image inputs of a batch whose rows are each repeated `times` times in a row (row `i * times + j`
 * = copy j of row i), as for the completions of GRPO groups: each row's images follow its copies.
 * `imagesPerRow[i]` is how many images row i holds (0 for text-only rows).
 *
 * @example
 * ```ts ignore
 * const rep = repeatImages({ pixelValues, imageGridThw }, [1, 0, 2], 4); // 12 rows' images
 * ```
 */
export function repeatImages(images: ImageBatch, imagesPerRow: number[], times: number): ImageBatch {
  const { pixelValues, imageGridThw } = images;
  const total = imagesPerRow.reduce((a, b) => a + b, 0);
  if (total !== imageGridThw.length) {
    throw new Error(`imagesPerRow counts ${total} images but imageGridThw has ${imageGridThw.length}.`);
  }
  const starts: number[] = [];
  let at = 0;
  for (const [t, h, w] of imageGridThw) {
    starts.push(at);
    at += t * h * w;
  }
  if (at !== pixelValues.shape[0]) {
    throw new Error(`pixelValues has ${pixelValues.shape[0]} rows but imageGridThw describes ${at} patches.`);
  }
  const idx: number[] = [];
  const grids: number[][] = [];
  let image = 0;
  for (const n of imagesPerRow) {
    for (let j = 0; j < times; j++) {
      for (let k = image; k < image + n; k++) {
        const [t, h, w] = imageGridThw[k];
        for (let r = 0; r < t * h * w; r++) idx.push(starts[k] + r);
        grids.push(imageGridThw[k].slice());
      }
    }
    image += n;
  }
  const pv = tf.tidy(() => tf.gather(pixelValues, tf.tensor1d(idx, "int32")) as tf.Tensor2D);
  return { pixelValues: pv, imageGridThw: grids };
}

/** Names and shapes of every parameter of a Qwen2.5-VL checkpoint with this config (Hub names). */
export function vlExpectedParams(config: ModelConfig): Record<string, number[]> {
  if (!config.vision) throw new Error(`A ${config.modelType} config needs vision_config.`);
  return { ...visionExpectedParams(config.vision), ...expectedParams(config) };
}

/**
 * The `qwen2_5_vl` loader of `loadModel`: `visual.*` and the decoder, in the Hub layout (or the
 * transformers 5 `model.visual.*` / `model.language_model.*` names).
 */
export async function loadQwen25VL(
  dir: string,
  config: ModelConfig,
  options: LoadModelOptions = {},
): Promise<Qwen25VLModel> {
  if (!config.vision) {
    throw new Error(`Config ${dir}/config.json has model_type ${config.modelType} but no vision_config.`);
  }
  if (config.imageTokenId === undefined) throw new Error(`Config ${dir}/config.json has no image_token_id.`);
  const { params, half } = await loadWeights(dir, vlExpectedParams(config), {
    weightsDtype: checkWeightsDtype(options.weightsDtype),
    half: halfCandidate(config),
  });
  return new Qwen25VLModel(config, params, { dir, backend: tf.getBackend(), half });
}

registerArchitecture("qwen2_5_vl", loadQwen25VL);
