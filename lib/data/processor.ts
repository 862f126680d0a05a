/**
 * The Qwen2-VL / Qwen2.5-VL image processor: images -> `pixel_values` `[patches, 1176]` and
 * `image_grid_thw`, as Hugging Face's Python `Qwen2VLImageProcessor` (on whose output the checkpoints
 * were trained) lays them out. Images decode through transformers.js (`RawImage`, sharp).
 *
 * transformers.js 4.3.1's `Qwen2VLImageProcessor` differs from the Python one in four ways, corrected here:
 * - with the Hub's `preprocessor_config.json` of Qwen2.5-VL (no `size`, `do_resize` or `do_normalize`
 *   keys) it neither resizes nor normalises; Python defaults both to true;
 * - its `smart_resize` rounds halves up (`Math.round`); Python's `round` rounds them to even
 *   (a 70 px side becomes 56, not 84) and has no up-scaling step for sides under 28 px;
 * - it resizes with sharp's affine transform (bilinear unless the config names `resample`), which does
 *   not low-pass when shrinking; Python uses PIL's BICUBIC resampling with its support scaled by the
 *   shrink factor: {@linkcode resizeRgb} is that algorithm (Pillow's `Resample.c`, 8-bit fixed point);
 * - several images in one call become the frames of one video (`grid_t` = images / 2); here each
 *   image is its own `[1, h, w]` grid, its single frame repeated over `temporal_patch_size`.
 *
 * @module
 */
import type { RawImage } from "./images.ts";

/** The fields of `preprocessor_config.json` the processor uses (camelCase), with Qwen2.5-VL's defaults. */
export interface ImageProcessorConfig {
  /** Fewest pixels an image is resized to (`min_pixels`). */
  minPixels: number;
  /** Most pixels an image is resized to (`max_pixels`). */
  maxPixels: number;
  /** Side of a square patch in pixels (14). */
  patchSize: number;
  /** Frames per temporal patch (2). */
  temporalPatchSize: number;
  /** Patches merged per side into one token (2). */
  mergeSize: number;
  /** Per-channel mean subtracted after rescaling. */
  imageMean: number[];
  /** Per-channel standard deviation divided by after rescaling. */
  imageStd: number[];
  /** Factor pixel values are multiplied by (1/255). */
  rescaleFactor: number;
  /** Resize to a multiple of patch x merge size within the pixel bounds. */
  doResize: boolean;
  /** Multiply by `rescaleFactor`. */
  doRescale: boolean;
  /** Subtract `imageMean` and divide by `imageStd`. */
  doNormalize: boolean;
  /** PIL filter id: 2 = bilinear, 3 = bicubic (Python's default for Qwen2-VL). */
  resample: number;
}

/** Qwen2.5-VL's published processor settings (the Hub's preprocessor_config.json plus Python's defaults). */
export const DEFAULT_IMAGE_PROCESSOR: Readonly<ImageProcessorConfig> = Object.freeze({
  minPixels: 56 * 56,
  maxPixels: 12845056,
  patchSize: 14,
  temporalPatchSize: 2,
  mergeSize: 2,
  imageMean: [0.48145466, 0.4578275, 0.40821073],
  imageStd: [0.26862954, 0.26130258, 0.27577711],
  rescaleFactor: 1 / 255,
  doResize: true,
  doRescale: true,
  doNormalize: true,
  resample: 3,
});

/**
 * Normalise a parsed `preprocessor_config.json` (both the `min_pixels`/`max_pixels` keys and
 * transformers 5's `size: {shortest_edge, longest_edge}`); `file` is for error messages.
 */
export function parseImageProcessorConfig(
  raw: Record<string, unknown>,
  file = "preprocessor_config.json",
): ImageProcessorConfig {
  const d = DEFAULT_IMAGE_PROCESSOR;
  const size = (raw.size && typeof raw.size === "object" ? raw.size : {}) as Record<string, unknown>;
  const num = (key: string, v: unknown, def: number): number => {
    if (v === undefined || v === null) return def;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new Error(`${file}: '${key}' must be a positive number, got ${JSON.stringify(v)}.`);
    }
    return v;
  };
  const triple = (key: string, v: unknown, def: number[]): number[] => {
    if (v === undefined) return def.slice();
    if (typeof v === "number") return [v, v, v];
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== "number")) {
      throw new Error(`${file}: '${key}' must be 3 numbers (one per RGB channel), got ${JSON.stringify(v)}.`);
    }
    return v.slice();
  };
  const cfg: ImageProcessorConfig = {
    minPixels: num("min_pixels", raw.min_pixels ?? size.shortest_edge, d.minPixels),
    maxPixels: num("max_pixels", raw.max_pixels ?? size.longest_edge, d.maxPixels),
    patchSize: num("patch_size", raw.patch_size, d.patchSize),
    temporalPatchSize: num("temporal_patch_size", raw.temporal_patch_size, d.temporalPatchSize),
    mergeSize: num("merge_size", raw.merge_size, d.mergeSize),
    imageMean: triple("image_mean", raw.image_mean, d.imageMean),
    imageStd: triple("image_std", raw.image_std, d.imageStd),
    rescaleFactor: num("rescale_factor", raw.rescale_factor, d.rescaleFactor),
    doResize: raw.do_resize !== false,
    doRescale: raw.do_rescale !== false,
    doNormalize: raw.do_normalize !== false,
    resample: typeof raw.resample === "number" ? raw.resample : d.resample,
  };
  if (cfg.minPixels > cfg.maxPixels) {
    throw new Error(`${file}: min_pixels ${cfg.minPixels} is larger than max_pixels ${cfg.maxPixels}.`);
  }
  if (![2, 3].includes(cfg.resample)) {
    throw new Error(`${file}: resample ${cfg.resample} is not supported (2 = bilinear, 3 = bicubic).`);
  }
  return cfg;
}

/** Read `<dir>/preprocessor_config.json`; Qwen2.5-VL's defaults when the folder has none. */
export async function readImageProcessorConfig(dir: string): Promise<ImageProcessorConfig> {
  const file = `${dir}/preprocessor_config.json`;
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { ...DEFAULT_IMAGE_PROCESSOR };
    throw new Error(`${file} cannot be read (${(e as Error).message}).`);
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file} is not valid JSON (${(e as Error).message}).`);
  }
  return parseImageProcessorConfig(raw, file);
}

/** Python's `round`: halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/** Options of {@linkcode smartResize}. */
export interface SmartResizeOptions {
  /** Sides become multiples of this (patch size x merge size, default 28). */
  factor?: number;
  /** Smallest area in pixels (default 3136). */
  minPixels?: number;
  /** Largest area in pixels (default 12845056, as the Hub config). */
  maxPixels?: number;
}

/**
 * The resize target `[height, width]` of Hugging Face's `smart_resize`: each side rounded (half to
 * even) to a multiple of `factor`, then scaled down to fit `maxPixels` or up to reach `minPixels`,
 * keeping the aspect ratio.
 *
 * @example
 * ```ts
 * import { smartResize } from "./processor.ts";
 * smartResize(480, 640); // [476, 644]
 * ```
 */
export function smartResize(
  height: number,
  width: number,
  options: SmartResizeOptions = {},
): [number, number] {
  const factor = options.factor ?? 28;
  const minPixels = options.minPixels ?? DEFAULT_IMAGE_PROCESSOR.minPixels;
  const maxPixels = options.maxPixels ?? DEFAULT_IMAGE_PROCESSOR.maxPixels;
  if (!(height > 0 && width > 0)) {
    throw new Error(`An image of ${width} x ${height} pixels cannot be resized.`);
  }
  if (Math.max(height, width) / Math.min(height, width) > 200) {
    throw new Error(
      `An image of ${width} x ${height} pixels has an aspect ratio above 200, which Qwen2-VL's processor rejects.`,
    );
  }
  let h = roundHalfEven(height / factor) * factor;
  let w = roundHalfEven(width / factor) * factor;
  if (h * w > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels);
    h = Math.max(factor, Math.floor(height / beta / factor) * factor);
    w = Math.max(factor, Math.floor(width / beta / factor) * factor);
  } else if (h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width));
    h = Math.ceil((height * beta) / factor) * factor;
    w = Math.ceil((width * beta) / factor) * factor;
  }
  return [h, w];
}

// ---------------------------------------------------------------------------------------------
// Pillow's resampling (libImaging/Resample.c), 8 bits per channel

const PRECISION_BITS = 32 - 8 - 2;

function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

function bilinearFilter(x: number): number {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

/** Per output pixel: the first input pixel, how many, and their fixed-point weights. */
function precomputeCoeffs(
  inSize: number,
  outSize: number,
  filter: (x: number) => number,
  support0: number,
): { ksize: number; bounds: Int32Array; kk: Int32Array } {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    k.fill(0);
    for (let x = 0; x < xmax; x++) {
      const w = filter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < ksize; x++) {
      const v = x < xmax && ww !== 0 ? k[x] / ww : x < xmax ? k[x] : 0;
      kk[xx * ksize + x] = v < 0
        ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS))
        : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * Resize an interleaved 8-bit image (`channels` values per pixel) as PIL's `Image.resize` does with
 * BICUBIC (`resample` 3) or BILINEAR (2): separable, horizontal pass first, the filter widened by the
 * shrink factor (antialiasing), 22-bit fixed-point weights, rounding and clipping to 0..255 after
 * each pass.
 */
export function resizeRgb(
  data: Uint8Array | Uint8ClampedArray,
  size: { width: number; height: number; channels: number },
  target: { width: number; height: number },
  resample = 3,
): Uint8Array {
  const { width: W, height: H, channels: C } = size;
  const { width: OW, height: OH } = target;
  const filter = resample === 2 ? bilinearFilter : bicubicFilter;
  const support = resample === 2 ? 1 : 2;
  let src: Uint8Array | Uint8ClampedArray = data;
  let srcW = W;
  const half = 1 << (PRECISION_BITS - 1);
  const vert = precomputeCoeffs(H, OH, filter, support);
  const yFirst = vert.bounds[0];
  const yLast = vert.bounds[OH * 2 - 2] + vert.bounds[OH * 2 - 1];
  let rowOffset = 0;
  if (OW !== W) {
    const { ksize, bounds, kk } = precomputeCoeffs(W, OW, filter, support);
    const rows = OH !== H ? yLast - yFirst : H;
    const first = OH !== H ? yFirst : 0;
    const tmp = new Uint8Array(rows * OW * C);
    for (let y = 0; y < rows; y++) {
      const inRow = (y + first) * W * C;
      for (let xx = 0; xx < OW; xx++) {
        const xmin = bounds[xx * 2], n = bounds[xx * 2 + 1], kb = xx * ksize;
        for (let c = 0; c < C; c++) {
          let ss = half;
          for (let x = 0; x < n; x++) ss += src[inRow + (x + xmin) * C + c] * kk[kb + x];
          tmp[(y * OW + xx) * C + c] = clip8(ss);
        }
      }
    }
    src = tmp;
    srcW = OW;
    rowOffset = first;
  }
  if (OH === H) return src instanceof Uint8Array && src !== data ? src : Uint8Array.from(src);
  const { ksize, bounds, kk } = vert;
  const out = new Uint8Array(OH * srcW * C);
  for (let yy = 0; yy < OH; yy++) {
    const ymin = bounds[yy * 2] - rowOffset, n = bounds[yy * 2 + 1], kb = yy * ksize;
    for (let xx = 0; xx < srcW; xx++) {
      for (let c = 0; c < C; c++) {
        let ss = half;
        for (let y = 0; y < n; y++) ss += src[((y + ymin) * srcW + xx) * C + c] * kk[kb + y];
        out[(yy * srcW + xx) * C + c] = clip8(ss);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Patches

/** One image's patches: `[t*h*w, C*tp*p*p]` rows and its grid. */
export interface ImagePatches {
  /** Row-major `[patches, C * temporalPatchSize * patchSize^2]`. */
  pixelValues: Float32Array;
  /** `[t, h, w]` in patches. */
  gridThw: [number, number, number];
}

/**
 * Cut a resized, normalised channel-first image `[C, H, W]` into the processor's flattened patches:
 * rows ordered by (frame group, 2 x 2 block row, block column, row in block, column in block), each
 * row `((c * tp + f) * p + y) * p + x`. A still image is repeated over the `temporalPatchSize` frames.
 *
 * @example
 * ```ts
 * import { patchify } from "./processor.ts";
 * const { gridThw } = patchify(new Float32Array(3 * 56 * 28), { channels: 3, height: 56, width: 28 });
 * // gridThw = [1, 4, 2]
 * ```
 */
export function patchify(
  image: Float32Array,
  size: { channels: number; height: number; width: number },
  options: Partial<Pick<ImageProcessorConfig, "patchSize" | "temporalPatchSize" | "mergeSize">> = {},
): ImagePatches {
  const p = options.patchSize ?? 14, tp = options.temporalPatchSize ?? 2, m = options.mergeSize ?? 2;
  const { channels: C, height: H, width: W } = size;
  if (H % (p * m) !== 0 || W % (p * m) !== 0) {
    throw new Error(
      `An image of ${W} x ${H} pixels cannot be cut into patches: both sides must be multiples of ${p * m}.`,
    );
  }
  if (image.length !== C * H * W) {
    throw new Error(`The image holds ${image.length} values, not ${C} x ${H} x ${W}.`);
  }
  const gh = H / p, gw = W / p;
  const rowLen = C * tp * p * p;
  const out = new Float32Array(gh * gw * rowLen);
  let r = 0;
  for (let bh = 0; bh < gh / m; bh++) {
    for (let bw = 0; bw < gw / m; bw++) {
      for (let mh = 0; mh < m; mh++) {
        for (let mw = 0; mw < m; mw++, r++) {
          const y0 = (bh * m + mh) * p, x0 = (bw * m + mw) * p;
          let o = r * rowLen;
          for (let c = 0; c < C; c++) {
            for (let f = 0; f < tp; f++) {
              for (let y = 0; y < p; y++) {
                const src = (c * H + y0 + y) * W + x0;
                for (let x = 0; x < p; x++) out[o++] = image[src + x];
              }
            }
          }
        }
      }
    }
  }
  return { pixelValues: out, gridThw: [1, gh, gw] };
}

/** Anything {@linkcode processImage} can read: a decoded RawImage or plain interleaved 8-bit pixels. */
export interface PixelImage {
  /** RGB or RGBA pixels, row-major. */
  data: Uint8Array | Uint8ClampedArray;
  /** Width in pixels. */
  width: number;
  /** Height in pixels. */
  height: number;
  /** 1 (grey), 3 (RGB) or 4 (RGBA). */
  channels: number;
}

function toRgb(img: PixelImage): Uint8Array | Uint8ClampedArray {
  if (img.channels === 3) return img.data;
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  if (img.channels === 1) {
    for (let i = 0; i < n; i++) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = img.data[i];
  } else if (img.channels === 4 || img.channels === 2) {
    // PIL's convert("RGB") drops the alpha channel (no compositing).
    const c = img.channels;
    for (let i = 0; i < n; i++) {
      for (let k = 0; k < 3; k++) out[3 * i + k] = img.data[i * c + (c === 2 ? 0 : k)];
    }
  } else {
    throw new Error(`An image with ${img.channels} channels cannot be converted to RGB.`);
  }
  return out;
}

/**
 * One image -> its patches, as Hugging Face's Python processor: convert to RGB, resize to the
 * `smart_resize` target with PIL's filter, rescale by 1/255, normalise with the mean/std, patchify.
 *
 * @example
 * ```ts ignore
 * import { decodeImage } from "./images.ts";
 * const { pixelValues, gridThw } = processImage(await decodeImage("scan.jpg"), config);
 * ```
 */
export function processImage(
  image: PixelImage | RawImage,
  config: ImageProcessorConfig = DEFAULT_IMAGE_PROCESSOR,
): ImagePatches {
  const img = image as PixelImage;
  const factor = config.patchSize * config.mergeSize;
  let rgb = toRgb(img);
  let [H, W] = [img.height, img.width];
  if (config.doResize) {
    const [h, w] = smartResize(H, W, { factor, minPixels: config.minPixels, maxPixels: config.maxPixels });
    if (h !== H || w !== W) {
      rgb = resizeRgb(rgb, { width: W, height: H, channels: 3 }, { width: w, height: h }, config.resample);
    }
    [H, W] = [h, w];
  }
  const chw = new Float32Array(3 * H * W);
  const scale = config.doRescale ? config.rescaleFactor : 1;
  for (let c = 0; c < 3; c++) {
    const mean = Math.fround(config.imageMean[c]), std = Math.fround(config.imageStd[c]);
    for (let i = 0; i < H * W; i++) {
      // float32 steps as transformers: rescale (to float32), then (x - mean) / std in float32.
      let v = Math.fround(rgb[i * 3 + c] * scale);
      if (config.doNormalize) v = Math.fround(Math.fround(v - mean) / std);
      chw[c * H * W + i] = v;
    }
  }
  return patchify(chw, { channels: 3, height: H, width: W }, config);
}

/** What {@linkcode processImages} returns: the model's `pixelValues` / `imageGridThw` inputs. */
export interface ProcessedImages {
  /** Row-major `[numPatches, C * tp * p * p]`, all images concatenated in order. */
  pixelValues: Float32Array;
  /** Rows of `pixelValues` (patches of all images). */
  numPatches: number;
  /** Values per row (1176 for Qwen2.5-VL). */
  patchDim: number;
  /** One `[1, h, w]` per image. */
  imageGridThw: number[][];
}

/**
 * Several images (of any sizes) -> concatenated patches and one grid per image, in order. Each image
 * is processed on its own (never as the frames of a video).
 *
 * @example
 * ```ts ignore
 * const { pixelValues, numPatches, patchDim, imageGridThw } = processImages([img1, img2], config);
 * const pv = tf.tensor2d(pixelValues, [numPatches, patchDim]);
 * ```
 */
export function processImages(
  images: (PixelImage | RawImage)[],
  config: ImageProcessorConfig = DEFAULT_IMAGE_PROCESSOR,
): ProcessedImages {
  const parts = images.map((im) => processImage(im, config));
  const patchDim = 3 * config.temporalPatchSize * config.patchSize ** 2;
  const numPatches = parts.reduce((n, p) => n + p.pixelValues.length / patchDim, 0);
  const pixelValues = new Float32Array(numPatches * patchDim);
  let o = 0;
  for (const p of parts) {
    pixelValues.set(p.pixelValues, o);
    o += p.pixelValues.length;
  }
  return { pixelValues, numPatches, patchDim, imageGridThw: parts.map((p) => p.gridThw.slice()) };
}

/**
 * Number of `<|image_pad|>` tokens an image with grid `[t, h, w]` takes: `t*h*w / merge^2` (what
 * `expandImageTokens` of lib/data/tokenizer.ts needs per image).
 */
export function imageTokenCount(gridThw: number[], mergeSize = 2): number {
  return (gridThw[0] * gridThw[1] * gridThw[2]) / (mergeSize * mergeSize);
}
