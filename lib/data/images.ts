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
 * Bytes that are no decodable image are an error naming the dataset file, row and image.
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
): Promise<RawImage> {
  const r = toRef(ref);
  const bytes = await imageBytes(r, context);
  if (!sniffImageFormat(bytes)) {
    throw new Error(`${describeImage(r, context)} is not a JPEG, PNG, GIF, WebP, TIFF or BMP image.`);
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
