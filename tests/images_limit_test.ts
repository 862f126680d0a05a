// Decoding bounds (#16 item 6): an image's size is read from its header, and one that declares more
// pixels than the limit is refused before a single pixel is decoded.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { transformers } from "../lib/util/deps.ts";
import { decodeImage, DEFAULT_MAX_IMAGE_PIXELS, imageDimensions } from "../lib/data/images.ts";

const JPEG = new URL("../data/vqa_rad_closed/images/f0cc6a985224c802.jpg", import.meta.url).pathname;

async function message(f: () => Promise<unknown>): Promise<string> {
  try {
    await f();
  } catch (e) {
    return (e as Error).message;
  }
  return "";
}

/** The JPEG's bytes with its frame header (SOFn) rewritten to declare `width` x `height`. */
function withJpegSize(bytes: Uint8Array, width: number, height: number): Uint8Array {
  const out = bytes.slice();
  const v = new DataView(out.buffer);
  for (let i = 2; i < out.length;) {
    const marker = out[i + 1];
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      v.setUint16(i + 5, height);
      v.setUint16(i + 7, width);
      return out;
    }
    i += 2 + v.getUint16(i + 2);
  }
  throw new Error("no frame header");
}

Deno.test("images: the header size of every format equals the decoded size", async () => {
  for (const channels of [3, 4] as const) {
    const img = new transformers.RawImage(
      new Uint8ClampedArray(37 * 23 * channels).fill(90),
      37,
      23,
      channels,
    );
    const sharp = (img as unknown as { toSharp(): any }).toSharp();
    for (
      const make of [
        (s: any) => s.png(),
        (s: any) => s.gif(),
        (s: any) => s.webp(),
        (s: any) => s.webp({ lossless: true }),
        (s: any) => s.tiff(),
        (s: any) => s.jpeg(),
      ]
    ) {
      const bytes = new Uint8Array(await make(sharp.clone()).toBuffer());
      assertEquals(imageDimensions(bytes), { width: 37, height: 23 });
      const decoded = await decodeImage(bytes);
      assertEquals([decoded.width, decoded.height], [37, 23]);
    }
  }
  // a BMP written by hand (BITMAPINFOHEADER, bottom-up and top-down)
  for (const h of [5, -5]) {
    const b = new Uint8Array(54);
    const v = new DataView(b.buffer);
    b.set([0x42, 0x4d]);
    v.setUint32(14, 40, true);
    v.setInt32(18, 7, true);
    v.setInt32(22, h, true);
    assertEquals(imageDimensions(b), { width: 7, height: 5 });
  }
  const real = await Deno.readFile(JPEG);
  const decoded = await decodeImage(JPEG);
  assertEquals(imageDimensions(real), { width: decoded.width, height: decoded.height });
});

Deno.test("images: a small file declaring 10000 x 10000 pixels is refused before decoding", async () => {
  const bomb = withJpegSize(await Deno.readFile(JPEG), 10000, 10000);
  assert(bomb.length < 100_000, `${bomb.length} bytes`);
  assertEquals(imageDimensions(bomb), { width: 10000, height: 10000 });
  assert(10000 * 10000 > DEFAULT_MAX_IMAGE_PIXELS);
  const before = Deno.memoryUsage().rss;
  const t0 = performance.now();
  const m = await message(() => decodeImage({ bytes: bomb, name: "bomb.jpg" }, { file: "d.jsonl", row: 3 }));
  assert(m.includes("d.jsonl row 3") && m.includes("bomb.jpg") && m.includes("10000 x 10000"), m);
  assert(m.includes("MEDTHINK_MAX_IMAGE_PIXELS"), m);
  // refused from the header: no 400 MB decode happened
  assert(performance.now() - t0 < 2000);
  assert(Deno.memoryUsage().rss - before < 100 * 2 ** 20);
  // the option and the environment variable set the limit
  const small = await Deno.readFile(JPEG);
  assert(
    (await message(() => decodeImage(small, {}, { maxPixels: 100 }))).includes("more than the limit of 100"),
  );
  Deno.env.set("MEDTHINK_MAX_IMAGE_PIXELS", "100");
  try {
    assert((await message(() => decodeImage(small))).includes("more than the limit of 100"));
    assertEquals((await decodeImage(small, {}, { maxPixels: 10 ** 8 })).channels > 0, true);
    Deno.env.set("MEDTHINK_MAX_IMAGE_PIXELS", "lots");
    assert((await message(() => decodeImage(small))).includes("MEDTHINK_MAX_IMAGE_PIXELS"));
  } finally {
    Deno.env.delete("MEDTHINK_MAX_IMAGE_PIXELS");
  }
  // a header without a size is no image to decode
  const cut = (await Deno.readFile(JPEG)).slice(0, 4);
  assert((await message(() => decodeImage(cut))).length > 0);
});
