/**
 * The recipe's prompt and SFT target, and user templates.
 *
 * The recipe's user turn is `instruction + "\n\n" + "Question: {question}\n\nOptions:" + "\n\n{L}. {text}"`
 * per option, with the images before the text and Qwen's default system prompt supplied by the chat
 * template. The instruction keeps the original's LITERAL backslash-n (a Python raw string).
 *
 * @module
 */
import type { ChatContentPart, ChatMessage } from "./tokenizer.ts";
import type { Row } from "./types.ts";

/** The recipe's instruction, with its literal backslash followed by `n` (not a newline). */
export const RECIPE_INSTRUCTION =
  "You will solve a problem/request. You should provide your thoughts within <think> </think> tags before providing the answer.\\nWrite your final answer within <answer> </answer> tags.";

/** The recipe's user-turn template (see {@linkcode PromptOptions.template} for the placeholders). */
export const RECIPE_TEMPLATE = "{instruction}\n\nQuestion: {question}\n\nOptions:\n\n{options}";

/** A template function: the user turn's text for a row. */
export type PromptTemplateFn = (row: Row, context: { instruction: string; options: string }) => string;

/** Options of {@linkcode buildPrompt}. */
export interface PromptOptions {
  /**
   * The user turn's text. A string with placeholders `{instruction}`, `{question}`, `{options}` (the
   * options as `L. text` lines separated by a blank line, as the recipe writes them), `{letters}`
   * (`A, B, C, D`), `{datasetName}`, `{id}`; `{{` and `}}` are literal braces. Or a function of the row.
   * Default {@linkcode RECIPE_TEMPLATE}.
   */
  template?: string | PromptTemplateFn;
  /** Default {@linkcode RECIPE_INSTRUCTION}. */
  instruction?: string;
  /** A system message; default none, so the chat template adds Qwen's default ("You are a helpful assistant."). */
  systemPrompt?: string;
  /** Put one image part per image before the text (the recipe). Default true; false drops the images. */
  includeImages?: boolean;
}

const PLACEHOLDER = /\{\{|\}\}|\{([A-Za-z_]+)\}/g;

/** Fills a string template's placeholders; an unknown placeholder is an error. */
export function fillTemplate(template: string, values: Record<string, string>): string {
  return template.replace(PLACEHOLDER, (whole, name: string | undefined) => {
    if (whole === "{{") return "{";
    if (whole === "}}") return "}";
    const v = values[name!];
    if (v === undefined) {
      throw new Error(
        `The prompt template uses {${name}}, which is not one of ${
          Object.keys(values).map((k) => `{${k}}`).join(", ")
        }.`,
      );
    }
    return v;
  });
}

/** The options as the recipe prints them: `A. text`, separated by blank lines. */
export function formatOptions(options: Record<string, string>): string {
  return Object.entries(options).map(([letter, text]) => `${letter}. ${text}`).join("\n\n");
}

/**
 * The chat messages of a row's prompt: an optional system message, then one user turn with one
 * `{type: "image", image}` part per image followed by the text part.
 *
 * @example
 * ```ts
 * import { buildPrompt } from "./prompt.ts";
 * const row = { id: "1", question: "Is it broken?", options: { A: "Yes", B: "No" }, answerLabel: "A", answer: "Yes", images: [] };
 * const messages = buildPrompt(row);
 * // [{ role: "user", content: [{ type: "text", text: "You will solve ...\n\nQuestion: Is it broken?\n\nOptions:\n\nA. Yes\n\nB. No" }] }]
 * ```
 */
export function buildPrompt(row: Row, options: PromptOptions = {}): ChatMessage[] {
  const instruction = options.instruction ?? RECIPE_INSTRUCTION;
  const opts = formatOptions(row.options);
  const template = options.template ?? RECIPE_TEMPLATE;
  const text = typeof template === "function"
    ? template(row, { instruction, options: opts })
    : fillTemplate(template, {
      instruction,
      question: row.question,
      options: opts,
      letters: Object.keys(row.options).join(", "),
      datasetName: row.datasetName ?? "",
      id: String(row.id ?? ""),
    });
  const content: ChatContentPart[] = [];
  if (options.includeImages ?? true) {
    for (const image of row.images ?? []) content.push({ type: "image", image });
  }
  content.push({ type: "text", text });
  const messages: ChatMessage[] = [];
  if (options.systemPrompt !== undefined) messages.push({ role: "system", content: options.systemPrompt });
  messages.push({ role: "user", content });
  return messages;
}

/**
 * The recipe's SFT target: `<think> {reasoning} </think>\n<answer> {letter} </answer>`.
 *
 * @example
 * ```ts
 * import { sftTarget } from "./prompt.ts";
 * sftTarget({ id: "1", question: "q", options: { A: "x", B: "y" }, answerLabel: "B", answer: "y", images: [], reasoning: "because" });
 * // "<think> because </think>\n<answer> B </answer>"
 * ```
 */
export function sftTarget(row: Row): string {
  if (typeof row.reasoning !== "string") {
    throw new Error(`Row ${row.id} has no reasoning trace, which the SFT target needs.`);
  }
  return `<think> ${row.reasoning} </think>\n<answer> ${row.answerLabel} </answer>`;
}

/** The prompt messages followed by the assistant turn holding {@linkcode sftTarget} (an SFT example). */
export function buildSftMessages(row: Row, options: PromptOptions = {}): ChatMessage[] {
  return [...buildPrompt(row, options), {
    role: "assistant",
    content: [{ type: "text", text: sftTarget(row) }],
  }];
}
