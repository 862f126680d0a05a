/**
 * Lazy images: datasets hold {@linkcode ImageRef}s (a path or the encoded bytes); they are decoded
 * into transformers.js `RawImage`s only when a model needs the pixels.
 *
 * @module
 */
import { transformers } from "../util/deps.ts";
import type { ImageRef, Row } from "./types.ts";

export type { ImageRef };

/** A decoded image (transformers.js `RawImage`: `data`, `width`, `height`, `channels`). */
export type RawImage = transformers.RawImage;

/** Options of {@linkcode decodeImage}. */
export interface DecodeImageOptions {
  /** Most pixels (width x height) an image may declare. Default: `MEDTHINK_MAX_IMAGE_PIXELS`, else 50 million. */
  maxPixels?: number;
}

/** Where an image came from, for error messages. */
export interface ImageContext {
  /** The dataset file. */
  file?: string;
  /** The 1-based row in that file. */
  row?: number;
}

/** The image formats recognised by their first bytes (what sharp, under RawImage, decodes). */
export type ImageFormat = "jpeg" | "png" | "gif" | "bmp" | "webp" | "tiff";

/** The format of encoded image bytes from their magic number, or null when they are no known image. */
export function sniffImageFormat(bytes: Uint8Array): ImageFormat | null {
  const b = bytes;
  const at = (i: number, ...xs: number[]) => xs.every((x, k) => b[i + k] === x);
  if (b.length >= 3 && at(0, 0xff, 0xd8, 0xff)) return "jpeg";
  if (b.length >= 8 && at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "png";
  if (
    b.length >= 6 && (at(0, 0x47, 0x49, 0x46, 0x38, 0x37, 0x61) || at(0, 0x47, 0x49, 0x46, 0x38, 0x39, 0x61))
  ) {
    return "gif";
  }
  if (b.length >= 12 && at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return "webp";
  if (b.length >= 4 && (at(0, 0x49, 0x49, 0x2a, 0x00) || at(0, 0x4d, 0x4d, 0x00, 0x2a))) return "tiff";
  if (b.length >= 26 && at(0, 0x42, 0x4d)) return "bmp";
  return null;
}

/** Default of the decoded-pixel limit: 50 megapixels (200 MB as 8-bit RGBA, well under 1 GB with the copies a resize makes). */
export const DEFAULT_MAX_IMAGE_PIXELS = 50_000_000;

/** The decoded-pixel limit in force: `maxPixels` if given, else `MEDTHINK_MAX_IMAGE_PIXELS`, else the default. */
export function maxImagePixels(maxPixels?: number): number {
  let v: number | undefined = maxPixels;
  let source = "the maxPixels option";
  if (v === undefined) {
    let env: string | undefined;
    try {
      env = Deno.env.get("MEDTHINK_MAX_IMAGE_PIXELS");
    } catch { /* no env permission: the default */ }
    if (env === undefined || env === "") return DEFAULT_MAX_IMAGE_PIXELS;
    v = Number(env);
    source = "MEDTHINK_MAX_IMAGE_PIXELS";
  }
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new Error(`${source} must be a positive integer number of pixels, got ${v}.`);
  }
  return v;
}

/**
 * Width and height of encoded image bytes read from the format's header (JPEG SOF marker, PNG IHDR, GIF
 * screen, WebP VP8/VP8L/VP8X, BMP DIB header, TIFF first IFD), without decoding any pixel; null when the
 * header holds no readable size.
 *
 * @example
 * ```ts
 * import { imageDimensions } from "./images.ts";
 * const gif = new Uint8Array([0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x10, 0x27, 0x10, 0x27, 0, 0, 0]);
 * console.assert(imageDimensions(gif)?.width === 10000);
 * ```
 */
export function imageDimensions(bytes: Uint8Array): { width: number; height: number } | null {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.length;
  const fmt = sniffImageFormat(bytes);
  try {
    switch (fmt) {
      case "png":
        return n >= 24 ? { width: v.getUint32(16), height: v.getUint32(20) } : null;
      case "gif":
        return n >= 10 ? { width: v.getUint16(6, true), height: v.getUint16(8, true) } : null;
      case "bmp": {
        const header = v.getUint32(14, true);
        if (header === 12) return { width: v.getUint16(18, true), height: v.getUint16(20, true) };
        return { width: Math.abs(v.getInt32(18, true)), height: Math.abs(v.getInt32(22, true)) };
      }
      case "webp": {
        const chunk = String.fromCharCode(...bytes.subarray(12, 16));
        if (chunk === "VP8X") {
          const w = 1 + (bytes[24] | (bytes[25] << 8) | (bytes[26] << 16));
          const h = 1 + (bytes[27] | (bytes[28] << 8) | (bytes[29] << 16));
          return { width: w, height: h };
        }
        if (chunk === "VP8L") {
          const b = v.getUint32(21, true);
          return { width: (b & 0x3fff) + 1, height: ((b >>> 14) & 0x3fff) + 1 };
        }
        if (chunk === "VP8 ") {
          return { width: v.getUint16(26, true) & 0x3fff, height: v.getUint16(28, true) & 0x3fff };
        }
        return null;
      }
      case "jpeg": {
        let i = 2;
        while (i + 9 < n) {
          if (bytes[i] !== 0xff) return null;
          const marker = bytes[i + 1];
          if (marker === 0xff) {
            i++; // fill byte
            continue;
          }
          if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
            i += 2; // markers without a length
            continue;
          }
          const len = v.getUint16(i + 2);
          // SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not
          if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
            return { width: v.getUint16(i + 7), height: v.getUint16(i + 5) };
          }
          if (marker === 0xda) return null; // scan data before any frame header
          i += 2 + len;
        }
        return null;
      }
      case "tiff": {
        const le = bytes[0] === 0x49;
        const ifd = v.getUint32(4, le);
        const count = v.getUint16(ifd, le);
        let width: number | undefined, height: number | undefined;
        for (let k = 0; k < count; k++) {
          const e = ifd + 2 + 12 * k;
          const tag = v.getUint16(e, le), type = v.getUint16(e + 2, le);
          const value = type === 3 ? v.getUint16(e + 8, le) : v.getUint32(e + 8, le);
          if (tag === 256) width = value;
          if (tag === 257) height = value;
        }
        return width !== undefined && height !== undefined ? { width, height } : null;
      }
      default:
        return null;
    }
  } catch {
    return null; // the header is cut short
  }
}

function toRef(ref: ImageRef | string | Uint8Array): ImageRef {
  if (typeof ref === "string") return { path: ref };
  if (ref instanceof Uint8Array) return { bytes: ref };
  return ref;
}

/** "file F row R, image NAME" for messages. */
export function describeImage(ref: ImageRef, context: ImageContext = {}): string {
  const file = context.file ?? ref.file;
  const row = context.row ?? ref.row;
  const where = file
    ? `${file}${row !== undefined ? ` row ${row}` : ""}: `
    : row !== undefined
    ? `row ${row}: `
    : "";
  const name = ref.path ?? ref.name ?? "(embedded bytes)";
  return `${where}the image ${name}`;
}

/** The encoded bytes of an image reference (reading the file when it is a path). */
export async function imageBytes(
  ref: ImageRef | string | Uint8Array,
  context: ImageContext = {},
): Promise<Uint8Array> {
  const r = toRef(ref);
  if (r.bytes) return r.bytes;
  if (!r.path) throw new Error(`${describeImage(r, context)} has neither a path nor bytes.`);
  try {
    return await Deno.readFile(r.path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`${describeImage(r, context)} does not exist.`);
    throw new Error(`${describeImage(r, context)} cannot be read (${(e as Error).message}).`);
  }
}

/**
 * Decodes an image reference (path, bytes or {@linkcode ImageRef}) into a transformers.js `RawImage`.
 * Bytes that are no decodable image are an error naming the dataset file, row and image, and so is an
 * image whose header declares more pixels than the limit ({@linkcode maxImagePixels}): refused before
 * it is decoded.
 *
 * @example
 * ```ts ignore
 * import { decodeImage } from "./images.ts";
 * const img = await decodeImage("data/vqa_rad_closed/images/5e684d0681c86c3a.jpg");
 * console.log(img.width, img.height, img.channels);
 * ```
 */
export async function decodeImage(
  ref: ImageRef | string | Uint8Array,
  context: ImageContext = {},
  options: DecodeImageOptions = {},
): Promise<RawImage> {
  const r = toRef(ref);
  const limit = maxImagePixels(options.maxPixels);
  const bytes = await imageBytes(r, context);
  if (!sniffImageFormat(bytes)) {
    throw new Error(`${describeImage(r, context)} is not a JPEG, PNG, GIF, WebP, TIFF or BMP image.`);
  }
  // the size comes from the header, before any pixel is decoded: a few kilobytes can declare gigabytes
  const size = imageDimensions(bytes);
  if (!size) {
    throw new Error(`${describeImage(r, context)} cannot be decoded (its header states no image size).`);
  }
  if (size.width * size.height > limit) {
    throw new Error(
      `${
        describeImage(r, context)
      } is ${size.width} x ${size.height} pixels, more than the limit of ${limit} ` +
        `(set maxPixels or MEDTHINK_MAX_IMAGE_PIXELS to allow larger images).`,
    );
  }
  try {
    return await transformers.RawImage.fromBlob(new Blob([bytes as Uint8Array<ArrayBuffer>]));
  } catch (e) {
    throw new Error(`${describeImage(r, context)} cannot be decoded (${(e as Error).message}).`);
  }
}

/** Decodes all images of a row, in order. */
export function decodeRowImages(row: Pick<Row, "images">): Promise<RawImage[]> {
  return Promise.all((row.images ?? []).map((ref) => decodeImage(ref)));
}
