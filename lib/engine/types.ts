/**
 * One interface for "generate completions for these prompts", with a local implementation (the tfjs
 * model, `local.ts`) and a remote one (OpenAI-compatible servers such as vLLM, SGLang or `medthink serve`,
 * `openai.ts`).
 *
 * Every sampling value is explicit and every sample carries its own seed: a sample is then a pure
 * function of (prompt, sampling, seed), so a repeated request is harmless (retries, failover) and a
 * remote run can equal a local one.
 *
 * @module
 */
import type { ChatMessage } from "../data/tokenizer.ts";

export type { ChatMessage };

/** One prompt to complete: chat messages (the engine applies its chat template) or prompt token ids. */
export interface CompletionRequest {
  /** Chat messages; image parts are `{type: "image", image: ImageRef | path | bytes}` or OpenAI `image_url` parts. */
  messages?: ChatMessage[];
  /** Prompt token ids (already rendered); used instead of `messages`. */
  promptIds?: number[];
  /**
   * One seed per sample: the request asks for `seeds.length` samples. A seeded sample is a pure
   * function of the request, so engines may repeat it (retry, failover); without seeds give `n`.
   */
  seeds?: number[];
  /** Samples without seeds (never retried by remote engines). Used only when `seeds` is absent. Default 1. */
  n?: number;
}

/** Sampling values of a call; every one is sent explicitly (servers otherwise apply the model's generation config). */
export interface EngineSampling {
  /** 0 = greedy. */
  temperature: number;
  /** Nucleus mass (1 = off). */
  topP: number;
  /** Top-k (0 = off). */
  topK: number;
  /** New tokens per sample. */
  maxNewTokens: number;
  /** Strings that end a sample (cut from the text). Default none. */
  stop?: string[];
  /** Model or adapter name to sample from (remote engines; default: the engine's `model` option). */
  model?: string;
}

/** One generated sample. */
export interface CompletionSample {
  /** The completion text, special tokens removed. */
  text: string;
  /** Generated token ids (the stop token included when the sample ended on one). */
  tokenIds: number[];
  /** log p of each generated token under the distribution sampled from (temperature applied). */
  logprobs: number[];
  /** `stop` (stop token or string) or `length`. */
  finishReason: "stop" | "length";
}

/** Generates completions; implemented by {@linkcode localEngine} and {@linkcode openaiEngine}. */
export interface CompletionEngine {
  /** A name for reports and resume metadata (model folder or served model name). */
  readonly name: string;
  /** `results[i][j]` is sample j (seed `requests[i].seeds[j]`) of request i. */
  complete(requests: CompletionRequest[], sampling: EngineSampling): Promise<CompletionSample[][]>;
}

/** True when `x` is a {@linkcode CompletionEngine} rather than a model. */
export function isCompletionEngine(x: unknown): x is CompletionEngine {
  return typeof x === "object" && x !== null && typeof (x as CompletionEngine).complete === "function" &&
    typeof (x as { generate?: unknown }).generate !== "function";
}
