/**
 * The recipe's lenient re-grading for evaluation: find the answer the model meant, map it to an
 * option, and compare with the correct one.
 *
 * @module
 */
import type { Row } from "../data/types.ts";
import { type GradedRow, rowAnswerLabel, rowOptions } from "./medvlthinker.ts";
import { pyStrip } from "./_text.ts";

/** What the lenient grader found. */
export interface LenientGrade {
  /** The answer string extracted from the response. */
  extracted: string;
  /** The letter of the first option (in order) the extracted string names, else null. */
  predictedLabel: string | null;
  /** 1 when the predicted option is the correct one, else 0. */
  correct: number;
}

const ANSWER_BLOCKS = /<answer>([\s\S]*?)<\/answer>/g;
// In this order; each takes the rest of its line. Case-insensitive.
const FALLBACKS = [/answer:(.*)/gi, /answer is:(.*)/gi, /answer is(.*)/gi, /is:(.*)/gi];
const TAGS = /<\/?(?:think|answer)>/g;

/**
 * The answer string of a response: the last `<answer>` block's first non-empty line; else the rest of
 * the line after the last `answer:` (then `answer is:`, `answer is`, `is:`, case-insensitive); else the
 * whole text; then `<think>`, `</think>`, `<answer>`, `</answer>` removed and whitespace stripped.
 */
export function extractAnswer(response: string): string {
  let found: string | undefined;
  const blocks = [...response.matchAll(ANSWER_BLOCKS)];
  if (blocks.length > 0) {
    const lines = blocks[blocks.length - 1][1].split("\n");
    found = lines.find((l) => pyStrip(l) !== "") ?? "";
  } else {
    for (const pattern of FALLBACKS) {
      const matches = [...response.matchAll(pattern)];
      if (matches.length > 0) {
        found = matches[matches.length - 1][1];
        break;
      }
    }
  }
  return pyStrip((found ?? response).replace(TAGS, ""));
}

/** The first option (in order) whose letter, text or "L. text" equals `extracted`, ignoring case. */
export function matchOption(extracted: string, options: Record<string, string>): string | null {
  const e = extracted.toLowerCase();
  for (const [letter, text] of Object.entries(options)) {
    if (
      e === letter.toLowerCase() || e === String(text).toLowerCase() ||
      e === `${letter}. ${text}`.toLowerCase()
    ) {
      return letter;
    }
  }
  return null;
}

/**
 * Lenient grading as the recipe's evaluation does it.
 *
 * @example
 * ```ts
 * import { lenientGrade } from "./lenient.ts";
 * const row = { options: { A: "Liver", B: "Pancreas" }, answerLabel: "B", answer: "Pancreas" };
 * lenientGrade("The answer is: pancreas", row);
 * // { extracted: "pancreas", predictedLabel: "B", correct: 1 }
 * ```
 */
export function lenientGrade(completion: string, row: GradedRow): LenientGrade {
  const options = rowOptions(row);
  if (!options) {
    throw new Error("lenientGrade needs the row's options to map the extracted answer to a letter.");
  }
  const extracted = extractAnswer(completion);
  const predictedLabel = matchOption(extracted, options);
  return {
    extracted,
    predictedLabel,
    correct: predictedLabel !== null && predictedLabel === rowAnswerLabel(row) ? 1 : 0,
  };
}

/** {@linkcode lenientGrade}'s `correct` as a reward function. */
export function lenientRewardFn(completion: string, row: Row): number {
  return lenientGrade(completion, row).correct;
}
