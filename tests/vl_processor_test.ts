// The Qwen2-VL image processor against the fixture's `processor` cases, PIL's resampling, and
// transformers.js's own processor where the two must agree.
import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert/strict";
import { transformers } from "../lib/util/deps.ts";
import { decodeImage } from "../lib/data/images.ts";
import {
  DEFAULT_IMAGE_PROCESSOR,
  imageTokenCount,
  parseImageProcessorConfig,
  patchify,
  processImage,
  processImages,
  readImageProcessorConfig,
  resizeRgb,
  smartResize,
} from "../lib/data/processor.ts";
import { GOLDEN, VL_DIR } from "./_vl_fixture.ts";

const VQA_IMAGES = new URL("../data/vqa_rad_closed/images", import.meta.url).pathname;

function b64(s: string): Uint8Array {
  return Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
}

/** The generator of tests/data/make_pil_resize_cases.py. */
function pseudoImage(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = BigInt(seed);
  for (let i = 0; i < n; i++) {
    x = (1103515245n * x + 12345n) % 2147483648n;
    out[i] = Number((x >> 16n) & 255n);
  }
  return out;
}

Deno.test("patchify reproduces the fixture's pixel layout", () => {
  const c = GOLDEN.processor.patchify;
  const [C, H, W] = c.image_shape;
  const img = new Float32Array((c.image as number[][][]).flat(2));
  const got = patchify(img, { channels: C, height: H, width: W });
  assertEquals(got.gridThw, c.grid_thw);
  assertEquals(Array.from(got.pixelValues), (c.pixel_values as number[][]).flat());
});

Deno.test("smartResize reproduces the fixture's resize targets (Python rounding)", () => {
  for (const c of GOLDEN.processor.smart_resize) {
    const got = smartResize(c.height, c.width, { minPixels: c.min_pixels, maxPixels: c.max_pixels });
    assertEquals(got, c.resized, `${c.height} x ${c.width}`);
    assertEquals([1, got[0] / 14, got[1] / 14], c.grid_thw);
  }
  assertThrows(() => smartResize(10, 3000), /aspect ratio above 200/);
});

Deno.test("resizeRgb is PIL's Image.resize, byte for byte", async () => {
  const data = JSON.parse(await Deno.readTextFile(new URL("./data/pil_resize_cases.json", import.meta.url)));
  for (const c of data.cases) {
    const src = pseudoImage(c.height * c.width * c.channels, c.seed);
    const got = resizeRgb(src, { width: c.width, height: c.height, channels: c.channels }, {
      width: c.out_width,
      height: c.out_height,
    }, c.resample);
    const want = b64(c.expected_b64);
    let bad = 0;
    for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) bad++;
    assertEquals(got.length, want.length);
    assertEquals(
      bad,
      0,
      `${c.height}x${c.width}x${c.channels} -> ${c.out_height}x${c.out_width}: ${bad} bytes differ`,
    );
  }
});

Deno.test("processImages keeps several images apart (one [1, h, w] grid each, never video frames)", () => {
  const a = { data: pseudoImage(60 * 90 * 3, 7), width: 90, height: 60, channels: 3 };
  const b = { data: pseudoImage(60 * 90, 8), width: 90, height: 60, channels: 1 };
  const both = processImages([a, b], DEFAULT_IMAGE_PROCESSOR);
  const pa = processImage(a), pb = processImage(b);
  assertEquals(both.imageGridThw, [pa.gridThw, pb.gridThw]);
  assertEquals(pa.gridThw, [1, 4, 6]);
  assertEquals(both.patchDim, 1176);
  assertEquals(both.numPatches, 48);
  assertEquals(both.pixelValues.subarray(0, pa.pixelValues.length), pa.pixelValues);
  assertEquals(both.pixelValues.subarray(pa.pixelValues.length), pb.pixelValues);
  // A still image repeats its frame: the two temporal halves of each channel block are equal.
  const row = pa.pixelValues.subarray(0, 1176);
  assertEquals(row.subarray(0, 196), row.subarray(196, 392));
});

Deno.test("without resizing, transformers.js's Qwen2VLImageProcessor lays out the same values", async () => {
  const raw = JSON.parse(await Deno.readTextFile(`${VL_DIR}/preprocessor_config.json`));
  const cfg = parseImageProcessorConfig(raw);
  // 56 x 84 is already a multiple of 28 inside [min, max] pixels: both sides keep their size.
  const data = pseudoImage(56 * 84 * 3, 9);
  const img = new transformers.RawImage(new Uint8ClampedArray(data), 84, 56, 3);
  // deno-lint-ignore no-explicit-any
  // The Hub config names neither do_resize nor do_normalize; transformers.js then does neither (Python
  // does both), so they are spelled out here to compare the layout alone.
  const proc = new (transformers as any).Qwen2VLImageProcessor({
    ...raw,
    do_resize: false,
    do_normalize: true,
  });
  const ref = await proc(img);
  const mine = processImage({ data, width: 84, height: 56, channels: 3 }, cfg);
  assertEquals(ref.image_grid_thw.tolist().map((r: bigint[]) => r.map(Number)), [mine.gridThw]);
  const refData = ref.pixel_values.data as Float32Array;
  let max = 0;
  for (let i = 0; i < refData.length; i++) max = Math.max(max, Math.abs(refData[i] - mine.pixelValues[i]));
  assert(max < 1e-5, `max difference ${max}`);
});

Deno.test("VQA-RAD JPEGs: pixel_values bit-identical to Hugging Face's Python processor (PIL backend)", async () => {
  const data = JSON.parse(
    await Deno.readTextFile(new URL("./data/hf_processor_cases.json", import.meta.url)),
  );
  const raw = JSON.parse(await Deno.readTextFile(`${VL_DIR}/preprocessor_config.json`));
  const root = new URL("../", import.meta.url).pathname; // the repository root
  for (const c of data.cases) {
    const img = await decodeImage(root + c.image);
    const got = processImage(img, parseImageProcessorConfig({ ...raw, max_pixels: c.max_pixels }));
    assertEquals(got.gridThw, c.grid_thw, c.image);
    const hash = new Uint8Array(
      await crypto.subtle.digest("SHA-256", got.pixelValues as Float32Array<ArrayBuffer>),
    );
    const hex = Array.from(hash, (b) => b.toString(16).padStart(2, "0")).join("");
    let sum = 0;
    for (const v of got.pixelValues) sum += v;
    assertEquals(hex, c.sha256_f32, `${c.image} at max_pixels ${c.max_pixels}: sum ${sum} vs ${c.sum}`);
  }
});

Deno.test("a VQA-RAD JPEG goes through decode, resize and patches", async () => {
  const img = await decodeImage(`${VQA_IMAGES}/5e684d0681c86c3a.jpg`);
  const cfg = await readImageProcessorConfig(VL_DIR);
  const { pixelValues, gridThw } = processImage(img, cfg);
  const [h, w] = smartResize(img.height, img.width, { minPixels: cfg.minPixels, maxPixels: cfg.maxPixels });
  assertEquals(gridThw, [1, h / 14, w / 14]);
  assertEquals(pixelValues.length, (h / 14) * (w / 14) * 1176);
  assert(pixelValues.every(Number.isFinite));
});

Deno.test("imageTokenCount: one <|image_pad|> per 2 x 2 patches", () => {
  assertEquals(imageTokenCount([1, 4, 6]), 6);
  assertEquals(imageTokenCount(GOLDEN.single_image.image_grid_thw[0]), 25);
});

Deno.test("processor config: both size layouts, and bad values named", () => {
  assertEquals(
    parseImageProcessorConfig({ size: { shortest_edge: 100, longest_edge: 1000 } }).maxPixels,
    1000,
  );
  assertThrows(() => parseImageProcessorConfig({ image_mean: [0.5] }, "p.json"), /p\.json: 'image_mean'/);
  assertThrows(() => parseImageProcessorConfig({ min_pixels: 10, max_pixels: 5 }), /min_pixels 10 is larger/);
});
