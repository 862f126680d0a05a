/**
 * Chat messages on the wire: the toolkit's image parts (`{type: "image", image: ImageRef}`) become
 * OpenAI `image_url` parts holding base64 data URLs, and back.
 *
 * @module
 */
import { decodeBase64, encodeBase64 } from "./_base64.ts";
import { imageBytes, sniffImageFormat } from "../data/images.ts";
import type { ImageRef } from "../data/types.ts";
import type { ChatMessage } from "../data/tokenizer.ts";

/** An OpenAI chat message as sent to a server (text parts and `image_url` parts). */
export interface WireMessage {
  /** `system`, `user` or `assistant`. */
  role: string;
  /** A string, or text and image parts. */
  content: string | ({ type: "text"; text: string } | { type: "image_url"; image_url: { url: string } })[];
}

/** The bytes of a `data:<mime>;base64,<data>` URL. */
export function dataUrlBytes(url: string): Uint8Array {
  const m = /^data:([^;,]*)(;base64)?,(.*)$/s.exec(url);
  if (!m) {
    throw new Error(
      `The image url '${url.slice(0, 40)}' is not a data URL; only base64 data URLs are accepted.`,
    );
  }
  if (!m[2]) throw new Error(`The image data URL '${url.slice(0, 40)}' is not base64-encoded.`);
  try {
    return decodeBase64(m[3]);
  } catch {
    throw new Error(`The image data URL '${url.slice(0, 40)}' holds invalid base64.`);
  }
}

/** A base64 data URL of encoded image bytes (MIME type from the magic number). */
export function imageDataUrl(bytes: Uint8Array): string {
  const format = sniffImageFormat(bytes) ?? "png";
  return `data:image/${format};base64,${encodeBase64(bytes)}`;
}

/** Convert chat messages for an OpenAI-compatible server: images become base64 data URLs. */
export async function toWireMessages(messages: ChatMessage[]): Promise<WireMessage[]> {
  const out: WireMessage[] = [];
  for (const m of messages) {
    if (typeof m.content === "string") {
      out.push({ role: m.role, content: m.content });
      continue;
    }
    const parts: Exclude<WireMessage["content"], string> = [];
    for (const p of m.content) {
      const part = p as { type: string; text?: string; image?: unknown; image_url?: { url: string } };
      if (part.type === "image_url" && part.image_url) {
        parts.push({ type: "image_url", image_url: part.image_url });
      } else if (part.type === "image") {
        const bytes = await imageBytes(part.image as ImageRef | string | Uint8Array);
        parts.push({ type: "image_url", image_url: { url: imageDataUrl(bytes) } });
      } else if (part.type === "text") parts.push({ type: "text", text: part.text ?? "" });
      else {throw new Error(
          `A ${m.role} message has a content part of type '${part.type}', which cannot be sent.`,
        );}
    }
    out.push({ role: m.role, content: parts });
  }
  return out;
}
