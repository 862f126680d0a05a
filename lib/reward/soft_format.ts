/**
 * A soft format reward: partial credit on the way to the recipe's strict
 * `<think>...</think><answer>...</answer>` format, for shaping small models that rarely hit it.
 *
 * @module
 */
import type { Row } from "../data/types.ts";
import { formatScore } from "./medvlthinker.ts";
import { pyStrip } from "./_text.ts";

function count(s: string, sub: string): number {
  return s.split(sub).length - 1;
}

/**
 * 0.25 for each of: one `<think>` before one `</think>`; one `<answer>` before one `</answer>`;
 * `</think>` then only whitespace then `<answer>`; the response starting with `<think>` and ending with
 * `</answer>` (nothing before or after, not even a newline). The strict check's responses score 1,
 * and only they do: meeting all four is meeting the strict format.
 *
 * @example
 * ```ts
 * import { softFormatReward } from "./soft_format.ts";
 * softFormatReward("<think>x</think> B");                      // 0.25
 * softFormatReward("<think>x</think>\n<answer>B</answer>");    // 1
 * ```
 */
export function softFormatReward(completion: string, _row?: Row): number {
  if (formatScore(completion) === 1) return 1;
  const t0 = completion.indexOf("<think>"), t1 = completion.indexOf("</think>");
  const a0 = completion.indexOf("<answer>"), a1 = completion.indexOf("</answer>");
  const think = count(completion, "<think>") === 1 && count(completion, "</think>") === 1 && t0 < t1;
  const answer = count(completion, "<answer>") === 1 && count(completion, "</answer>") === 1 && a0 < a1;
  const order = t1 >= 0 && a0 >= 0 && t1 < a0 && pyStrip(completion.slice(t1 + "</think>".length, a0)) === "";
  const ends = completion.startsWith("<think>") && completion.endsWith("</answer>");
  return 0.25 * (Number(think) + Number(answer) + Number(order) + Number(ends));
}
