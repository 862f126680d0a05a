/**
 * The MedVLThinker recipe's binary reward, exactly as its Python grader computes it
 * (the same grader scores the difficulty probe and GRPO).
 *
 * @module
 */
import type { Row } from "../data/types.ts";
import { PY_WS, pyStrip } from "./_text.ts";

/**
 * The row fields a grader reads: the canonical `answerLabel` (or the released datasets'
 * snake_case `answer_label`), the answer text and, optionally, the options.
 */
export interface GradedRow {
  /** The correct option's letter. */
  answerLabel?: string;
  /** The same, as the released datasets name it. */
  answer_label?: string;
  /** The correct option's text (taken from `options` when absent). */
  answer?: string;
  /** Ordered options, letter -> text. */
  options?: Record<string, string> | string;
}

/** The recipe reward's parts. */
export interface MedVLThinkerScore {
  /** 1 when the whole response is `<think>...</think>` then `<answer>...</answer>`. */
  format: number;
  /** 1 when the first single-line `<answer>` block (else the whole response) names the answer. */
  accuracy: number;
  /** format AND accuracy. */
  reward: number;
}

// re.fullmatch(r"<think>.*?</think>\s*<answer>.*?</answer>", response, re.DOTALL): `.` matches
// newlines, and the whole string must match (JavaScript's `$` without the m flag is end of input).
const FORMAT = new RegExp(`^<think>[\\s\\S]*?</think>[${PY_WS}]*<answer>[\\s\\S]*?</answer>$`);
// re.search(r"<answer>(.*?)</answer>", response): Python's `.` excludes only "\n".
const FIRST_ANSWER = /<answer>([^\n]*?)<\/answer>/;

/** The answer letter of a row, whichever way it is spelled. */
export function rowAnswerLabel(row: GradedRow): string {
  const label = row.answerLabel ?? row.answer_label;
  if (typeof label !== "string") {
    throw new Error("The row has no answerLabel (or answer_label) to grade against.");
  }
  return label;
}

/** The options of a row as an ordered object (parsing a JSON string, as the released datasets store them). */
export function rowOptions(row: GradedRow): Record<string, string> | undefined {
  const o = row.options;
  if (o === undefined || o === null) return undefined;
  if (typeof o === "string") return JSON.parse(o);
  return o;
}

/** The answer text of a row (`answer`, else the option under the answer letter). */
export function rowAnswerText(row: GradedRow): string {
  if (typeof row.answer === "string") return row.answer;
  const text = rowOptions(row)?.[rowAnswerLabel(row)];
  if (typeof text !== "string") {
    throw new Error("The row has neither an answer text nor an option for its answer label.");
  }
  return text;
}

/** 1 when `completion` is entirely `<think>...</think>`, whitespace, `<answer>...</answer>`. */
export function formatScore(completion: string): number {
  return FORMAT.test(completion) ? 1 : 0;
}

/** 1 when the recipe's accuracy check accepts `completion` for `row`. */
export function accuracyScore(completion: string, row: GradedRow): number {
  const m = FIRST_ANSWER.exec(completion);
  const pred = pyStrip(m ? m[1] : completion).toLowerCase();
  const label = rowAnswerLabel(row);
  const text = rowAnswerText(row);
  const accepted = [label.toLowerCase(), text.toLowerCase(), `${label}. ${text}`.toLowerCase()];
  return accepted.includes(pred) ? 1 : 0;
}

/**
 * The recipe's binary reward: format (the whole response is a think block then an answer block,
 * newlines allowed) and accuracy (the first `<answer>` block on one line, else the whole response,
 * stripped and lower-cased, equals the letter, the option text or "L. text").
 *
 * Grade text decoded WITHOUT special tokens: a trailing `<|im_end|>` fails the format check.
 *
 * @example
 * ```ts
 * import { medvlthinkerReward } from "./medvlthinker.ts";
 * medvlthinkerReward("<think>beta cells</think>\n<answer>B</answer>", { answerLabel: "B", answer: "Pancreas" });
 * // { format: 1, accuracy: 1, reward: 1 }
 * ```
 */
export function medvlthinkerReward(completion: string, row: GradedRow): MedVLThinkerScore {
  const format = formatScore(completion);
  const accuracy = accuracyScore(completion, row);
  return { format, accuracy, reward: format && accuracy ? 1 : 0 };
}

/** {@linkcode medvlthinkerReward}'s `reward` as a {@linkcode RewardFunction}-shaped function. */
export function medvlthinkerRewardFn(completion: string, row: Row): number {
  return medvlthinkerReward(completion, row).reward;
}

/** The recipe's format check alone, as a reward function. */
export function formatReward(completion: string, _row?: Row): number {
  return formatScore(completion);
}

/** The recipe's accuracy check alone, as a reward function. */
export function accuracyReward(completion: string, row: Row): number {
  return accuracyScore(completion, row);
}
