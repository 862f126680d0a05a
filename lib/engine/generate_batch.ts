/**
 * The generation step shared by `probe` and `evaluate`: rows -> chat prompts -> left-padded batches ->
 * `model.generate` -> completions decoded without special tokens.
 *
 * Sample `j` of the question with id `q` always draws from the seed `sampleSeed(seed, q, j)`, a
 * stable hash, and the model gets one seed per output row: a completion therefore does not depend
 * on which other questions share its batch or on where an interrupted run was resumed.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { CausalLM } from "../model/types.ts";
import { type ImageInputBuilder, type ImageInputs, visionInputBuilder } from "./vision_inputs.ts";

export type { ImageInputBuilder, ImageInputs };
import type { ChatContentPart, ChatMessage, EncodedBatch } from "../data/tokenizer.ts";
import type { Row } from "../data/types.ts";
import { type CompletionEngine, isCompletionEngine } from "./types.ts";

export type { ChatContentPart, ChatMessage, EncodedBatch };

/** What generation needs from a tokenizer (the `Tokenizer` of `lib/data/tokenizer.ts` has it). */
export interface ChatTokenizer {
  /** Render messages with the chat template (ending in the assistant header when asked). */
  applyChatTemplate(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
  /** Encode texts into one padded batch. */
  encodeBatch(texts: string[], options?: { padding?: "left" | "right" }): EncodedBatch;
  /** Decode token ids to text. */
  decode(ids: number[], options?: { skipSpecialTokens?: boolean }): string;
}

/** A canonical dataset row (see `lib/data/types.ts`). */
export type QuestionRow = Row;

/** Turns a row into chat messages (default: the recipe's prompt through `buildPrompt`). */
export type PromptBuilder = (row: QuestionRow) => ChatMessage[] | Promise<ChatMessage[]>;

/** Sampling settings of a generation run. */
export interface SamplingOptions {
  /** Completions per question. Default 1. */
  n?: number;
  /** Temperature; 0 = greedy. Default 1. */
  temperature?: number;
  /** Nucleus mass. Default 1. */
  topP?: number;
  /** Top-k; 0 = off. Default 0. */
  topK?: number;
  /** New tokens per completion. Default 256. */
  maxNewTokens?: number;
  /** Base seed of every per-sample seed. Default 0. */
  seed?: number;
  /** Index of the first sample: sample `j` draws from `sampleSeed(seed, id, firstSample + j)` (rounds of one sample each). Default 0. */
  firstSample?: number;
}

/** Options of {@linkcode generateCompletions}. */
export interface GenerateCompletionsOptions extends SamplingOptions {
  /** The tokenizer that renders and encodes prompts and decodes completions (local models; an engine brings its own). */
  tokenizer?: ChatTokenizer;
  /** Turns a row into messages. */
  prompt: PromptBuilder;
  /**
   * Prepares image inputs for a batch of rows (Qwen2.5-VL): returns the rendered prompt texts with
   * their image tokens expanded and the processor's tensors. Default for a vision model:
   * `visionInputBuilder(model)` (the model folder's processor settings).
   */
  images?: ImageInputBuilder;
}

/** The completions of one question. */
export interface RowCompletions {
  /** The question's id. */
  id: string;
  /** Decoded completion text per sample, special tokens removed. */
  completions: string[];
  /** Generated token count per sample (stop token included). */
  lengths: number[];
  /** `stop` or `length` per sample. */
  finishReasons: ("stop" | "length")[];
}

/**
 * A stable 32-bit seed for sample `j` of question `id` under base `seed` (FNV-1a over the three
 * values, then a murmur3 finaliser to spread the bits).
 *
 * @example
 * ```ts
 * import { sampleSeed } from "./generate_batch.ts";
 * console.assert(sampleSeed(0, "q1", 0) === sampleSeed(0, "q1", 0));
 * console.assert(sampleSeed(0, "q1", 0) !== sampleSeed(0, "q1", 1));
 * ```
 */
export function sampleSeed(seed: number, id: string | number, j: number): number {
  const text = `${seed}\u0000${id}\u0000${j}`;
  const bytes = new TextEncoder().encode(text);
  let h = 0x811c9dc5;
  for (const b of bytes) {
    h ^= b;
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** True when a row carries at least one image. */
export function rowHasImages(row: QuestionRow): boolean {
  return Array.isArray(row.images) && row.images.length > 0;
}

/** True when the model has a vision tower (a Qwen2.5-VL checkpoint). */
export function isVisionModel(model: CausalLM): boolean {
  return Boolean(model.config.vision) || model.config.modelType === "qwen2_5_vl";
}

function completionLength(tokens: number[], reason: "stop" | "length", eos: Set<number>): number {
  if (reason === "stop") {
    const i = tokens.findIndex((t) => eos.has(t));
    if (i >= 0) return i + 1;
  }
  return tokens.length;
}

/**
 * Generate `n` completions for each row in one batched `model.generate` call, or, given a
 * {@linkcode CompletionEngine} (local or remote servers), one engine call with the rows' chat
 * messages (images as data URLs on the wire) and the same per-sample seeds.
 *
 * @example
 * ```ts ignore
 * const out = await generateCompletions(model, rows, { tokenizer, prompt: (r) => buildPrompt(r), n: 4 });
 * ```
 */
export async function generateCompletions(
  model: CausalLM | CompletionEngine,
  rows: QuestionRow[],
  options: GenerateCompletionsOptions,
): Promise<RowCompletions[]> {
  if (isCompletionEngine(model)) return await engineCompletions(model, rows, options);
  const {
    tokenizer,
    prompt,
    images,
    n = 1,
    temperature = 1,
    topP = 1,
    topK = 0,
    maxNewTokens = 256,
    seed = 0,
  } = options;
  if (rows.length === 0) return [];
  if (!tokenizer) throw new Error(`generateCompletions with a local model needs the tokenizer option.`);
  const texts: string[] = [];
  for (const row of rows) {
    const messages = await prompt(row);
    texts.push(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }));
  }
  let promptTexts = texts;
  let pixelValues: unknown;
  let imageGridThw: number[][] | undefined;
  if (rows.some(rowHasImages)) {
    if (!isVisionModel(model)) {
      const row = rows.find(rowHasImages)!;
      throw new Error(
        `Row ${row.id} holds an image but the model (${model.config.modelType}) is text-only; ` +
          `use a Qwen2.5-VL checkpoint or a text-only benchmark.`,
      );
    }
    const prepared = await (images ?? visionInputBuilder(model))(rows, texts);
    promptTexts = prepared.texts;
    pixelValues = prepared.pixelValues;
    imageGridThw = prepared.imageGridThw;
  }
  const { inputIds, attentionMask } = tokenizer.encodeBatch(promptTexts, { padding: "left" });
  const seeds: number[] = [];
  const first = options.firstSample ?? 0;
  for (const row of rows) for (let j = 0; j < n; j++) seeds.push(sampleSeed(seed, row.id, first + j));
  let result;
  try {
    result = await model.generate(inputIds, {
      attentionMask,
      temperature,
      topP,
      topK,
      maxNewTokens,
      numSamples: n,
      seeds,
      ...(pixelValues !== undefined ? { pixelValues: pixelValues as tf.Tensor2D, imageGridThw } : {}),
    });
  } finally {
    if (pixelValues instanceof tf.Tensor) pixelValues.dispose();
  }
  const eos = new Set(model.config.eosTokenIds);
  return rows.map((row, i) => {
    const completions: string[] = [];
    const lengths: number[] = [];
    const finishReasons: ("stop" | "length")[] = [];
    for (let j = 0; j < n; j++) {
      const k = i * n + j;
      const reason = result.finishReasons[k];
      const len = completionLength(result.tokens[k], reason, eos);
      completions.push(tokenizer.decode(result.tokens[k].slice(0, len), { skipSpecialTokens: true }));
      lengths.push(len);
      finishReasons.push(reason);
    }
    return { id: String(row.id), completions, lengths, finishReasons };
  });
}

/** The engine path of {@linkcode generateCompletions}: same seeds, same record shape. */
async function engineCompletions(
  engine: CompletionEngine,
  rows: QuestionRow[],
  options: GenerateCompletionsOptions,
): Promise<RowCompletions[]> {
  const { prompt, n = 1, temperature = 1, topP = 1, topK = 0, maxNewTokens = 256, seed = 0 } = options;
  if (rows.length === 0) return [];
  const requests = [];
  for (const row of rows) {
    const seeds: number[] = [];
    for (let j = 0; j < n; j++) seeds.push(sampleSeed(seed, row.id, (options.firstSample ?? 0) + j));
    requests.push({ messages: await prompt(row), seeds });
  }
  const out = await engine.complete(requests, { temperature, topP, topK, maxNewTokens });
  return rows.map((row, i) => ({
    id: String(row.id),
    completions: out[i].map((s) => s.text),
    // servers that return no token ids (SGLang) still return one log-prob per token
    lengths: out[i].map((s) => s.tokenIds.length || s.logprobs.length),
    finishReasons: out[i].map((s) => s.finishReason),
  }));
}
