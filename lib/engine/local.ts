/**
 * The local engine: the toolkit's own tfjs model behind the {@linkcode CompletionEngine} interface.
 *
 * Calls are queued and run one `model.generate` at a time (tfjs runs one program at a time anyway);
 * queued requests with the same sampling values and adapter are batched together, up to
 * `maxBatchRows` output rows. Each output row draws from its own seed, so a sample does not depend
 * on which requests share its batch.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import { padRows } from "../util/padding.ts";
import type { CausalLM, LoraAdapter } from "../model/types.ts";
import type { ChatContentPart, ChatMessage } from "../data/tokenizer.ts";
import type { ImageRef, Row } from "../data/types.ts";
import { type ImageInputBuilder, visionInputBuilder } from "./vision_inputs.ts";
import type { CompletionEngine, CompletionRequest, CompletionSample, EngineSampling } from "./types.ts";
import { dataUrlBytes } from "./messages.ts";
import { checkGenerationOptions } from "../model/generation_options.ts";

/** What the local engine needs from a tokenizer (the `Tokenizer` of `lib/data/tokenizer.ts` has it). */
export interface EngineTokenizer {
  /** Render messages with the chat template. */
  applyChatTemplate(messages: ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
  /** Token ids of a rendered text (special tokens written in it become their ids). */
  encode(text: string): number[];
  /** Decode token ids to text. */
  decode(ids: number[], options?: { skipSpecialTokens?: boolean }): string;
}

/** Options of {@linkcode localEngine}. */
export interface LocalEngineOptions {
  /** Name in reports. Default: the model folder, else its model type. */
  name?: string;
  /** Most output rows (prompts x samples) per `generate` call. Default 16. */
  maxBatchRows?: number;
  /** Milliseconds to wait for more requests before a batch starts (servers: lets concurrent requests join). Default 2. */
  batchWaitMs?: number;
  /** Image inputs for chat messages with images (default: `visionInputBuilder(model)` for a VL model). */
  images?: ImageInputBuilder;
  /**
   * Named LoRA adapter sets that `sampling.model` may select (the server's loaded adapters). The base
   * model (any other name) runs with the adapters the model itself holds.
   */
  adapters?: Map<string, Record<string, LoraAdapter>>;
}

/** Sampling of {@linkcode LocalEngine.completeDetailed}: the engine's plus top log-probs. */
export interface LocalSampling extends EngineSampling {
  /** Alternatives per position in `topLogprobs` (0 = none). Default 0. */
  topLogprobs?: number;
}

/** A sample with what an OpenAI-style response may also report. */
export interface LocalSample extends CompletionSample {
  /** Per generated token, the `topLogprobs` most likely tokens `[id, logprob]` (sampling temperature applied). */
  topLogprobs?: [number, number][][];
}

/** One request's result in detail. */
export interface LocalResult {
  /** The prompt's token ids as the model saw them (image tokens expanded). */
  promptIds: number[];
  /** One entry per seed. */
  samples: LocalSample[];
}

/** The local engine: a {@linkcode CompletionEngine} with details and exclusive access for weight updates. */
export interface LocalEngine extends CompletionEngine {
  /** The model it runs. */
  readonly model: CausalLM;
  /** Like `complete`, with prompt ids and optional top log-probs. */
  completeDetailed(requests: CompletionRequest[], sampling: LocalSampling): Promise<LocalResult[]>;
  /** Run `fn` while no generation is in progress (weight and adapter updates). */
  exclusive<T>(fn: () => Promise<T> | T): Promise<T>;
}

interface Job {
  prompt: { ids?: number[]; text?: string; images: ImageRef[] };
  seeds: number[];
  sampling: LocalSampling;
  key: string;
  resolve: (r: LocalResult) => void;
  reject: (e: unknown) => void;
}

/** Converts OpenAI `image_url` parts (data URLs) to the template's `image` parts and collects the images. */
function normalizeMessages(messages: ChatMessage[]): { messages: ChatMessage[]; images: ImageRef[] } {
  const images: ImageRef[] = [];
  const out = messages.map((m, i) => {
    if (typeof m.content === "string") return m;
    if (!Array.isArray(m.content)) {
      throw new Error(`Message ${i} has content that is neither a string nor a list of parts.`);
    }
    const parts: ChatContentPart[] = m.content.map((p) => {
      const part = p as ChatContentPart & { image_url?: { url?: string } | string };
      if (part.type === "image_url" || part.image_url !== undefined) {
        const url = typeof part.image_url === "string" ? part.image_url : part.image_url?.url;
        if (typeof url !== "string") throw new Error(`Message ${i} has an image_url part without a url.`);
        const ref: ImageRef = { bytes: dataUrlBytes(url) };
        images.push(ref);
        return { type: "image", image: ref };
      }
      if (part.type === "image") {
        const img = part.image;
        const ref: ImageRef = typeof img === "string"
          ? { path: img }
          : img instanceof Uint8Array
          ? { bytes: img }
          : img as ImageRef;
        images.push(ref);
        return { type: "image", image: ref };
      }
      return part;
    });
    return { role: m.role, content: parts };
  });
  return { messages: out, images };
}

function samplingKey(s: LocalSampling): string {
  return JSON.stringify([
    s.temperature,
    s.topP,
    s.topK,
    s.maxNewTokens,
    s.stop ?? [],
    s.model ?? "",
    s.topLogprobs ?? 0,
  ]);
}

/**
 * Wrap a local model and its tokenizer as a {@linkcode CompletionEngine}.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * import { loadTokenizer } from "../data/tokenizer.ts";
 * const model = await loadModel("medthink-tiny");
 * const engine = localEngine(model, await loadTokenizer(model.dir));
 * const [[s]] = await engine.complete([{ messages: [{ role: "user", content: "Hi" }], seeds: [1] }], {
 *   temperature: 1, topP: 1, topK: 0, maxNewTokens: 8,
 * });
 * ```
 */
export function localEngine(
  model: CausalLM,
  tokenizer: EngineTokenizer,
  options: LocalEngineOptions = {},
): LocalEngine {
  const maxRows = options.maxBatchRows ?? 16;
  const batchWaitMs = options.batchWaitMs ?? 2;
  const eos = new Set(model.config.eosTokenIds);
  const pad = model.config.padTokenId ?? model.config.eosTokenIds[0] ?? 0;
  const queue: Job[] = [];
  let running = false;
  let chain: Promise<unknown> = Promise.resolve();
  let imageBuilder: ImageInputBuilder | undefined = options.images;

  /** Serialises `fn` with every generation and weight update. */
  function exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    const next = chain.then(() => fn());
    chain = next.catch(() => {});
    return next;
  }

  async function runBatch(jobs: Job[]): Promise<void> {
    const s = jobs[0].sampling;
    const rowsForImages: Row[] = jobs.map((j, i) =>
      ({ id: String(i), images: j.prompt.images }) as unknown as Row
    );
    let texts = jobs.map((j) => j.prompt.text ?? "");
    let pixelValues: tf.Tensor2D | undefined;
    let imageGridThw: number[][] | undefined;
    if (jobs.some((j) => j.prompt.images.length > 0)) {
      if (!model.config.vision) {
        throw new Error(
          `The model ${model.dir ?? model.config.modelType} is text-only and cannot take images.`,
        );
      }
      imageBuilder ??= visionInputBuilder(model);
      const prepared = await imageBuilder(rowsForImages, texts);
      texts = prepared.texts;
      pixelValues = prepared.pixelValues as tf.Tensor2D | undefined;
      imageGridThw = prepared.imageGridThw;
    }
    const prompts = jobs.map((j, i) => j.prompt.ids ?? tokenizer.encode(texts[i]));
    // Rows are grouped by prompt: generate takes one sample count per call, so requests with
    // different counts are expanded to one prompt row per sample.
    const ids: number[][] = [];
    const seeds: number[] = [];
    for (const [i, j] of jobs.entries()) for (const seed of j.seeds) (ids.push(prompts[i]), seeds.push(seed));
    const { ids: padded, mask } = padRows(ids, pad, { side: "left" });
    const savedLora = model.lora, savedEnabled = model.loraEnabled;
    const adapter = s.model !== undefined ? options.adapters?.get(s.model) : undefined;
    let out;
    try {
      if (adapter) (model.lora = adapter), (model.loraEnabled = true);
      out = await model.generate(padded, {
        attentionMask: mask,
        temperature: s.temperature,
        topP: s.topP,
        topK: s.topK,
        maxNewTokens: s.maxNewTokens,
        numSamples: 1,
        seeds,
        ...(pixelValues ? { pixelValues, imageGridThw } : {}),
      });
    } finally {
      pixelValues?.dispose();
      model.lora = savedLora;
      model.loraEnabled = savedEnabled;
    }
    let k = 0;
    for (const [i, j] of jobs.entries()) {
      const samples: LocalSample[] = [];
      for (let q = 0; q < j.seeds.length; q++, k++) {
        let tokens = out.tokens[k];
        let reason = out.finishReasons[k];
        const stopAt = tokens.findIndex((t) => eos.has(t));
        if (stopAt >= 0) (tokens = tokens.slice(0, stopAt + 1)), (reason = "stop");
        let logprobs = out.logprobs[k].slice(0, tokens.length);
        let text = tokenizer.decode(tokens, { skipSpecialTokens: true });
        const cut = firstStop(text, s.stop);
        if (cut !== null) {
          // keep the shortest token prefix whose text reaches the stop string, as servers stream and stop
          let len = 1;
          while (
            len < tokens.length &&
            firstStop(tokenizer.decode(tokens.slice(0, len), { skipSpecialTokens: true }), s.stop) === null
          ) len++;
          tokens = tokens.slice(0, len);
          logprobs = logprobs.slice(0, len);
          text = text.slice(0, cut);
          reason = "stop";
        }
        samples.push({ text, tokenIds: tokens, logprobs, finishReason: reason });
      }
      if ((s.topLogprobs ?? 0) > 0) {
        await addTopLogprobs(prompts[i], samples, s, adapter);
      }
      j.resolve({ promptIds: prompts[i], samples });
    }
  }

  /** Top alternatives per generated position from one forward pass over prompt + completion. */
  async function addTopLogprobs(
    prompt: number[],
    samples: LocalSample[],
    s: LocalSampling,
    adapter: Record<string, LoraAdapter> | undefined,
  ): Promise<void> {
    const savedLora = model.lora, savedEnabled = model.loraEnabled;
    try {
      if (adapter) (model.lora = adapter), (model.loraEnabled = true);
      for (const sample of samples) {
        if (sample.tokenIds.length === 0) {
          sample.topLogprobs = [];
          continue;
        }
        const seq = [...prompt, ...sample.tokenIds.slice(0, -1)];
        const t = s.temperature > 0 ? s.temperature : 1;
        const len = sample.tokenIds.length;
        // hidden states once, then the vocabulary head over chunks of positions: full logits of a long
        // completion would take T x V floats at once
        const hidden = tf.tidy(() =>
          model.hidden([seq]).slice([0, prompt.length - 1, 0], [1, len, -1]).squeeze([0])
        );
        const rows: [number, number][][] = [];
        try {
          for (let p0 = 0; p0 < len; p0 += 256) {
            const n = Math.min(256, len - p0);
            const top = tf.tidy(() => {
              const h = hidden.slice([p0, 0], [n, -1]);
              const logits = tf.matMul(h, model.lmHeadWeight(), false, true);
              return tf.topk(tf.logSoftmax(logits.div(t)), s.topLogprobs!);
            });
            const [values, indices] = await Promise.all([top.values.array(), top.indices.array()]);
            tf.dispose([top.values, top.indices]);
            for (const [q, row] of (values as number[][]).entries()) {
              rows.push(row.map((v, c) => [(indices as number[][])[q][c], v]));
            }
          }
        } finally {
          hidden.dispose();
        }
        sample.topLogprobs = rows;
      }
    } finally {
      model.lora = savedLora;
      model.loraEnabled = savedEnabled;
    }
  }

  function pump(): void {
    if (running || queue.length === 0) return;
    running = true;
    // Collect the batch in a later macrotask: generation on the CPU backends yields only to
    // microtasks, so requests that reached a server during the last batch are read from their
    // sockets only once the event loop polls I/O again; starting at once would run them one by one.
    setTimeout(startBatch, batchWaitMs);
  }

  function startBatch(): void {
    if (queue.length === 0) {
      running = false;
      return;
    }
    const first = queue.shift()!;
    const jobs = [first];
    let rows = first.seeds.length;
    for (let i = 0; i < queue.length && rows < maxRows;) {
      const j = queue[i];
      if (j.key === first.key && rows + j.seeds.length <= maxRows) {
        jobs.push(j);
        rows += j.seeds.length;
        queue.splice(i, 1);
      } else i++;
    }
    exclusive(() => runBatch(jobs)).catch((e) => {
      for (const j of jobs) j.reject(e);
    }).finally(() => {
      running = false;
      pump();
    });
  }

  function completeDetailed(requests: CompletionRequest[], sampling: LocalSampling): Promise<LocalResult[]> {
    try {
      checkGenerationOptions(sampling, "Generation options");
    } catch (e) {
      return Promise.reject(e);
    }
    const key = samplingKey(sampling);
    return Promise.all(requests.map((r, i) => {
      let prompt: Job["prompt"];
      if (r.promptIds) {
        const bad = r.promptIds.find((t) => !Number.isInteger(t) || t < 0 || t >= model.config.vocabSize);
        if (bad !== undefined) {
          return Promise.reject(
            new Error(
              `Request ${i} has prompt token id ${bad}, outside the model's vocabulary of ${model.config.vocabSize}.`,
            ),
          );
        }
        prompt = { ids: r.promptIds, images: [] };
      } else if (r.messages) {
        const norm = normalizeMessages(r.messages);
        prompt = {
          text: tokenizer.applyChatTemplate(norm.messages, { addGenerationPrompt: true }),
          images: norm.images,
        };
      } else return Promise.reject(new Error(`Request ${i} has neither messages nor promptIds.`));
      const seeds = r.seeds ?? Array.from({ length: r.n ?? 1 }, () => Math.floor(Math.random() * 2 ** 32));
      if (seeds.length === 0) return Promise.reject(new Error(`Request ${i} asks for no samples.`));
      if (seeds.length > maxRows) {
        // one request larger than a batch runs alone
        return new Promise<LocalResult>((resolve, reject) => {
          queue.push({ prompt, seeds, sampling, key: key + "#" + Math.random(), resolve, reject });
          pump();
        });
      }
      return new Promise<LocalResult>((resolve, reject) => {
        queue.push({ prompt, seeds, sampling, key, resolve, reject });
        pump();
      });
    }));
  }

  return {
    name: options.name ?? model.dir ?? model.config.modelType,
    model,
    completeDetailed,
    exclusive,
    async complete(requests, sampling) {
      const out = await completeDetailed(requests, sampling);
      return out.map((r) =>
        r.samples.map(({ text, tokenIds, logprobs, finishReason }) => ({
          text,
          tokenIds,
          logprobs,
          finishReason,
        }))
      );
    },
  };
}

/** Index of the earliest stop string in `text`, or null. */
function firstStop(text: string, stop: string[] | undefined): number | null {
  let best: number | null = null;
  for (const s of stop ?? []) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (best === null || i < best)) best = i;
  }
  return best;
}
