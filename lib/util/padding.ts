/**
 * Padding token rows to one width, with the attention mask that marks the real tokens: the one helper
 * the tokenizer, the engines and the trainers share.
 *
 * @module
 */

/** Padded rows and their mask (1 = real token, 0 = padding). */
export interface PaddedRows {
  /** The rows, each `width` long. */
  ids: number[][];
  /** 1 where `ids` holds a real token, 0 where padding. */
  mask: number[][];
}

/**
 * Pad token rows to one width (the longest row, at least `minWidth`) with `pad`, on the left (decoder
 * prompts: the last real token sits at the end of every row) or on the right.
 *
 * @example
 * ```ts
 * import { padRows } from "./padding.ts";
 * const { ids, mask } = padRows([[5, 6], [7]], 0);
 * console.assert(JSON.stringify(ids) === "[[5,6],[0,7]]" && JSON.stringify(mask) === "[[1,1],[0,1]]");
 * ```
 */
export function padRows(
  rows: number[][],
  pad: number,
  options: { side?: "left" | "right"; minWidth?: number } = {},
): PaddedRows {
  const left = (options.side ?? "left") === "left";
  const width = Math.max(options.minWidth ?? 0, ...rows.map((r) => r.length));
  const ids: number[][] = [];
  const mask: number[][] = [];
  for (const r of rows) {
    const fill = new Array(width - r.length).fill(pad);
    const zeros = new Array(width - r.length).fill(0);
    const ones = new Array(r.length).fill(1);
    ids.push(left ? [...fill, ...r] : [...r, ...fill]);
    mask.push(left ? [...zeros, ...ones] : [...ones, ...zeros]);
  }
  return { ids, mask };
}
