/**
 * `medthink serve`: an OpenAI-compatible HTTP server (vLLM's request and response shapes) over the
 * toolkit's own engine, on `Deno.serve`.
 *
 * Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, the weight routes
 * `POST /v1/load_lora_adapter` / `/v1/unload_lora_adapter` (vLLM; SGLang's `/load_lora_adapter` and
 * `/unload_lora_adapter` too) and `POST /update_weights_from_disk` (SGLang), `GET /health`, and
 * `GET /medthink/stats` (tensor count and memory, for load tests).
 *
 * Bad requests get OpenAI-style error bodies (`{error: {message, type, param, code}}`) with a 4xx
 * status; a request naming a model that is neither the served one nor a loaded adapter gets 404.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { CausalLM, LoraAdapter } from "../model/types.ts";
import { loadModel } from "../model/load.ts";
import { loadLora } from "../model/lora.ts";
import { type EngineTokenizer, type LocalEngine, localEngine, type LocalResult } from "../engine/local.ts";
import type { ChatMessage } from "../data/tokenizer.ts";
import { checkOptionKeys } from "../util/options.ts";

/** Options of {@linkcode serveModel}. */
export interface ServeOptions {
  /** The tokenizer (the model folder's own, else the embedded Qwen2.5 one). */
  tokenizer: EngineTokenizer;
  /** Port; 0 picks a free one. Default 8000 (vLLM's). */
  port?: number;
  /** Interface to bind. Default `127.0.0.1`. */
  hostname?: string;
  /** The name clients use in `model`. Default: the model folder as given. */
  modelName?: string;
  /** Most output rows per `generate` call. Default 16. */
  maxBatchRows?: number;
  /** `max_tokens` when a request gives none. Default 256. */
  defaultMaxTokens?: number;
  /** Largest `n` accepted. Default 64. */
  maxN?: number;
  /**
   * Key every request but `GET /health` must send as `Authorization: Bearer KEY` (compared in constant
   * time), as vLLM's `--api-key`. Without one the server binds to loopback interfaces only.
   */
  apiKey?: string;
  /**
   * Accept the weight and adapter routes (`/v1/load_lora_adapter`, `/v1/unload_lora_adapter`, SGLang's
   * `/load_lora_adapter`, `/unload_lora_adapter`, `/update_weights_from_disk`). Default false (403), as
   * vLLM without `VLLM_ALLOW_RUNTIME_LORA_UPDATING`.
   */
  allowRuntimeUpdates?: boolean;
  /** Folders whose contents (resolved real paths) the weight routes may load. Default none. */
  allowedLocalPaths?: string[];
  /** Largest request body in bytes; larger ones get 413 before they are parsed. Default 8 MiB. */
  maxBodyBytes?: number;
  /** Called once listening. */
  onListen?: (addr: { hostname: string; port: number }) => void;
}

/** The options {@linkcode serveModel} knows (unknown keys are errors). */
export const SERVE_OPTION_KEYS = [
  "tokenizer",
  "port",
  "hostname",
  "modelName",
  "maxBatchRows",
  "defaultMaxTokens",
  "maxN",
  "apiKey",
  "allowRuntimeUpdates",
  "allowedLocalPaths",
  "maxBodyBytes",
  "onListen",
] as const;

/** Default of {@linkcode ServeOptions.maxBodyBytes}: 8 MiB (a chat request with a few images as data URLs). */
export const DEFAULT_MAX_BODY_BYTES = 8 * 2 ** 20;

/** Whether `hostname` names a loopback interface only (what a server without an API key may bind). */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** A running server. */
export interface ModelServer {
  /** `http://host:port`. */
  readonly url: string;
  /** The bound port. */
  readonly port: number;
  /** The engine behind it. */
  readonly engine: LocalEngine;
  /** Stop listening and finish the requests in flight. */
  shutdown(): Promise<void>;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly param: string | null = null) {
    super(message);
  }
}

const ERROR_TYPES: Record<number, string> = {
  400: "BadRequestError",
  401: "AuthenticationError",
  403: "PermissionDeniedError",
  404: "NotFoundError",
  405: "MethodNotAllowed",
  413: "RequestTooLarge",
  500: "InternalServerError",
};

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function errorResponse(status: number, message: string, param: string | null = null): Response {
  return json({ error: { message, type: ERROR_TYPES[status] ?? "Error", param, code: status } }, status);
}

type Body = Record<string, unknown>;

function optNumber(
  body: Body,
  key: string,
  fallback: number,
  check: (v: number) => boolean,
  what: string,
): number {
  const v = body[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || !check(v)) {
    throw new HttpError(400, `'${key}' must be ${what}, got ${JSON.stringify(v)}.`, key);
  }
  return v;
}

function optInt(
  body: Body,
  key: string,
  fallback: number,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  return optNumber(
    body,
    key,
    fallback,
    (v) => Number.isInteger(v) && v >= min && v <= max,
    `an integer in [${min}, ${max}]`,
  );
}

function optBool(body: Body, key: string, fallback: boolean): boolean {
  const v = body[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "boolean") {
    throw new HttpError(400, `'${key}' must be a boolean, got ${JSON.stringify(v)}.`, key);
  }
  return v;
}

function stopOf(body: Body): string[] {
  const v = body.stop;
  if (v === undefined || v === null) return [];
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((s) => typeof s === "string")) return v as string[];
  throw new HttpError(400, `'stop' must be a string or a list of strings.`, "stop");
}

function checkMessages(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) {
    throw new HttpError(400, `'messages' must be a non-empty list.`, "messages");
  }
  for (const [i, m] of v.entries()) {
    if (typeof m !== "object" || m === null || typeof m.role !== "string") {
      throw new HttpError(400, `messages[${i}] must be an object with a string 'role'.`, "messages");
    }
    const c = (m as Body).content;
    if (typeof c === "string") continue;
    if (!Array.isArray(c)) {
      throw new HttpError(400, `messages[${i}].content must be a string or a list of parts.`, "messages");
    }
    for (const [k, p] of c.entries()) {
      const part = p as Body;
      const ok = typeof part === "object" && part !== null &&
        ((part.type === "text" && typeof part.text === "string") ||
          (part.type === "image_url" && typeof (part.image_url as Body)?.url === "string"));
      if (!ok) {
        throw new HttpError(
          400,
          `messages[${i}].content[${k}] must be a text part or an image_url part with a url.`,
          "messages",
        );
      }
    }
  }
  return v as ChatMessage[];
}

/** Seeds of n samples: the request's seed for the first (so n = 1 with seed s equals a local row seeded s). */
function seedsOf(seed: number | undefined, n: number): number[] {
  const base = seed ?? Math.floor(Math.random() * 2 ** 32);
  return Array.from({ length: n }, (_, j) => j === 0 ? base >>> 0 : (base + Math.imul(j, 0x9e3779b9)) >>> 0);
}

const UPDATE_ROUTES = new Set([
  "/v1/load_lora_adapter",
  "/v1/unload_lora_adapter",
  "/load_lora_adapter",
  "/unload_lora_adapter",
  "/update_weights_from_disk",
]);

function digest(text: string): Promise<Uint8Array> {
  return crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)).then((d) => new Uint8Array(d));
}

/**
 * Whether an `Authorization` header carries the key: the SHA-256 digests are compared with a loop that
 * looks at every byte, so the time taken says nothing about how much of a guess was right (nor its length).
 */
async function authorized(header: string | null, want: Promise<Uint8Array>): Promise<boolean> {
  const m = /^Bearer (.+)$/i.exec(header ?? "");
  const [got, key] = await Promise.all([digest(m ? m[1].trim() : ""), want]);
  let diff = m ? 0 : 1;
  for (let i = 0; i < key.length; i++) diff |= got[i] ^ key[i];
  return diff === 0;
}

/**
 * The request body as text, refused with 413 when larger than `limit` bytes: by its Content-Length
 * before anything is read, and by counting the bytes of a chunked body as they arrive (the read stops
 * at the limit, so a huge body is never held).
 */
async function readBody(req: Request, limit: number): Promise<string> {
  const tooLarge = () =>
    new HttpError(413, `The request body exceeds the server's limit of ${limit} bytes (--max-body-bytes).`);
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge();
  if (!req.body) return "";
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) (all.set(c, at), (at += c.byteLength));
  return new TextDecoder().decode(all);
}

/**
 * Serve `model` over HTTP with OpenAI-compatible routes.
 *
 * @example
 * ```ts ignore
 * import { loadModel } from "../model/load.ts";
 * import { loadTokenizer } from "../data/tokenizer.ts";
 * const model = await loadModel("medthink-tiny");
 * const server = serveModel(model, { tokenizer: await loadTokenizer(model.dir), port: 0, modelName: "medthink-tiny" });
 * // ... POST {server.url}/v1/chat/completions
 * await server.shutdown();
 * ```
 */
export function serveModel(model: CausalLM, options: ServeOptions): ModelServer {
  checkOptionKeys(options, SERVE_OPTION_KEYS, "serveModel options");
  const hostname = options.hostname ?? "127.0.0.1";
  const apiKey = options.apiKey || undefined;
  if (!apiKey && !isLoopbackHost(hostname)) {
    throw new Error(
      `serve: refusing to bind ${hostname} without an API key: anyone who reaches it could run the model ` +
        `and change its weights; give --api-key (or MEDTHINK_API_KEY), or bind 127.0.0.1.`,
    );
  }
  if (options.apiKey !== undefined && typeof options.apiKey !== "string") {
    throw new Error(`serveModel option apiKey must be a string.`);
  }
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  if (!Number.isSafeInteger(maxBody) || maxBody < 1) {
    throw new Error(
      `serveModel option maxBodyBytes (--max-body-bytes) must be a positive integer, got ${maxBody}.`,
    );
  }
  const allowUpdates = options.allowRuntimeUpdates ?? false;
  const allowedRoots = (options.allowedLocalPaths ?? []).map((p) => {
    try {
      return Deno.realPathSync(p);
    } catch {
      throw new Error(
        `serve: the allowed local path ${p} (--allowed-local-paths) does not exist or cannot be read.`,
      );
    }
  });
  const keyDigest = apiKey ? digest(apiKey) : undefined;
  const tokenizer = options.tokenizer;
  const modelName = options.modelName ?? model.dir ?? model.config.modelType;
  const adapters = new Map<string, Record<string, LoraAdapter>>();
  const adapterPaths = new Map<string, string>();
  const engine = localEngine(model, tokenizer, {
    name: modelName,
    maxBatchRows: options.maxBatchRows,
    adapters,
  });
  const defaultMax = options.defaultMaxTokens ?? 256;
  const maxN = options.maxN ?? 64;
  const maxLen = model.config.maxPositionEmbeddings;
  const created = Math.floor(Date.now() / 1000);
  let served = 0;
  let counter = 0;

  function modelOf(body: Body): string | undefined {
    const m = body.model;
    if (m === undefined || m === null) return undefined;
    if (typeof m !== "string") throw new HttpError(400, `'model' must be a string.`, "model");
    if (m !== modelName && !adapters.has(m)) {
      throw new HttpError(404, `The model '${m}' does not exist.`, "model");
    }
    return m === modelName ? undefined : m;
  }

  function sampling(body: Body) {
    const maxTokens = body.max_completion_tokens ?? body.max_tokens;
    const temperature = optNumber(body, "temperature", 1, (v) => v >= 0, "a number >= 0");
    const topK = optNumber(body, "top_k", 0, (v) => Number.isInteger(v) && v >= -1, "an integer >= -1");
    return {
      n: optInt(body, "n", 1, 1, maxN),
      temperature,
      topP: optNumber(body, "top_p", 1, (v) => v > 0 && v <= 1, "a number in (0, 1]"),
      topK: topK < 0 ? 0 : topK,
      maxNewTokens: optInt({ max_tokens: maxTokens }, "max_tokens", defaultMax, 1, maxLen),
      seed: body.seed === undefined || body.seed === null
        ? undefined
        : optInt(body, "seed", 0, -(2 ** 63), 2 ** 64),
      stop: stopOf(body),
    };
  }

  function usage(results: LocalResult[]) {
    const prompt = results.reduce((a, r) => a + r.promptIds.length, 0);
    const completion = results.reduce((a, r) => a + r.samples.reduce((b, s) => b + s.tokenIds.length, 0), 0);
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  }

  function tokenText(id: number): string {
    return tokenizer.decode([id]);
  }

  async function chat(body: Body): Promise<Response> {
    const messages = checkMessages(body.messages);
    if (optBool(body, "stream", false)) {
      throw new HttpError(
        400,
        `Streaming is not supported by medthink serve; set stream to false.`,
        "stream",
      );
    }
    const lora = modelOf(body);
    const s = sampling(body);
    const logprobs = optBool(body, "logprobs", false);
    const top = optInt(body, "top_logprobs", 0, 0, 20);
    if (top > 0 && !logprobs) {
      throw new HttpError(400, `'top_logprobs' needs 'logprobs' set to true.`, "top_logprobs");
    }
    const returnIds = optBool(body, "return_token_ids", false);
    checkChatContext(messages, s.maxNewTokens);
    const [result] = await generate([{ messages, seeds: seedsOf(s.seed, s.n) }], s, lora, top);
    return json({
      id: `chatcmpl-${++counter}`,
      object: "chat.completion",
      created: Math.floor(Date.now() / 1000),
      model: lora ?? modelName,
      choices: result.samples.map((x, index) => ({
        index,
        message: { role: "assistant", content: x.text, reasoning_content: null, tool_calls: [] },
        logprobs: logprobs
          ? {
            content: x.tokenIds.map((id, p) => ({
              token: tokenText(id),
              logprob: x.logprobs[p],
              bytes: [...new TextEncoder().encode(tokenText(id))],
              top_logprobs: (x.topLogprobs?.[p] ?? []).map(([tid, lp]) => ({
                token: tokenText(tid),
                logprob: lp,
                bytes: [...new TextEncoder().encode(tokenText(tid))],
              })),
            })),
          }
          : null,
        finish_reason: x.finishReason,
        stop_reason: null,
        ...(returnIds ? { token_ids: x.tokenIds } : {}),
      })),
      usage: usage([result]),
      ...(returnIds ? { prompt_token_ids: result.promptIds } : {}),
    });
  }

  /**
   * A chat prompt longer than the context is a 400, as for /v1/completions: its text tokens (a lower
   * bound when images are attached, which only add tokens) plus max_tokens must fit the context.
   */
  function checkChatContext(messages: ChatMessage[], maxNewTokens: number): void {
    const textOnly = messages.map((m) =>
      typeof m.content === "string" ? m : {
        role: m.role,
        content: (m.content as { type: string; text?: string }[])
          .filter((p) => p.type === "text")
          .map((p) => ({ type: "text", text: p.text ?? "" })),
      }
    ) as ChatMessage[];
    const len = tokenizer.encode(tokenizer.applyChatTemplate(textOnly, { addGenerationPrompt: true })).length;
    if (len + maxNewTokens > maxLen) {
      throw new HttpError(
        400,
        `This model's maximum context length is ${maxLen} tokens; the messages (${len} tokens) plus max_tokens (${maxNewTokens}) exceed it.`,
        "messages",
      );
    }
  }

  async function completions(body: Body): Promise<Response> {
    if (optBool(body, "stream", false)) {
      throw new HttpError(
        400,
        `Streaming is not supported by medthink serve; set stream to false.`,
        "stream",
      );
    }
    if (optBool(body, "echo", false)) {
      throw new HttpError(400, `'echo' is not supported by medthink serve.`, "echo");
    }
    const lora = modelOf(body);
    const s = sampling(body);
    const top = optInt(body, "logprobs", -1, 0, 20);
    const returnIds = optBool(body, "return_token_ids", false);
    const p = body.prompt;
    let prompts: number[][];
    const isIds = (x: unknown) => Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t));
    if (typeof p === "string") prompts = [tokenizer.encode(p)];
    else if (isIds(p)) prompts = [p as number[]];
    else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === "string")) {
      prompts = (p as string[]).map((x) => tokenizer.encode(x));
    } else if (Array.isArray(p) && p.length > 0 && p.every(isIds)) prompts = p as number[][];
    else {
      throw new HttpError(
        400,
        `'prompt' must be a string, a list of strings, a list of token ids or a list of such lists.`,
        "prompt",
      );
    }
    for (const [i, ids] of prompts.entries()) {
      if (ids.length === 0) throw new HttpError(400, `prompt ${i} is empty.`, "prompt");
      const bad = ids.find((t) => t < 0 || t >= model.config.vocabSize);
      if (bad !== undefined) {
        throw new HttpError(
          400,
          `prompt ${i} has token id ${bad}, outside the vocabulary of ${model.config.vocabSize}.`,
          "prompt",
        );
      }
    }
    const results = await generate(
      prompts.map((ids) => ({ promptIds: ids, seeds: seedsOf(s.seed, s.n) })),
      s,
      lora,
      Math.max(0, top),
    );
    const choices = [];
    for (const [i, r] of results.entries()) {
      for (const x of r.samples) {
        let offset = 0;
        const offsets = x.tokenIds.map((id) => {
          const o = offset;
          offset += tokenText(id).length;
          return o;
        });
        choices.push({
          index: choices.length,
          text: x.text,
          logprobs: top >= 0
            ? {
              text_offset: offsets,
              token_logprobs: x.logprobs,
              tokens: x.tokenIds.map(tokenText),
              top_logprobs: x.tokenIds.map((_, q) =>
                Object.fromEntries((x.topLogprobs?.[q] ?? []).map(([tid, lp]) => [tokenText(tid), lp]))
              ),
            }
            : null,
          finish_reason: x.finishReason,
          stop_reason: null,
          prompt_logprobs: null,
          ...(returnIds ? { prompt_token_ids: r.promptIds, token_ids: x.tokenIds } : {}),
        });
        void i;
      }
    }
    return json({
      id: `cmpl-${++counter}`,
      object: "text_completion",
      created: Math.floor(Date.now() / 1000),
      model: lora ?? modelName,
      choices,
      usage: usage(results),
    });
  }

  async function generate(
    requests: Parameters<LocalEngine["completeDetailed"]>[0],
    s: ReturnType<typeof sampling>,
    lora: string | undefined,
    topLogprobs: number,
  ): Promise<LocalResult[]> {
    for (const r of requests) {
      const len = r.promptIds?.length ?? 0;
      if (len + s.maxNewTokens > maxLen) {
        throw new HttpError(
          400,
          `This model's maximum context length is ${maxLen} tokens; the prompt (${len}) plus max_tokens (${s.maxNewTokens}) exceed it.`,
        );
      }
    }
    try {
      const out = await engine.completeDetailed(requests, {
        temperature: s.temperature,
        topP: s.topP,
        topK: s.topK,
        maxNewTokens: s.maxNewTokens,
        stop: s.stop,
        model: lora,
        topLogprobs,
      });
      served += requests.length;
      return out;
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      // input problems found by the engine (an image that does not decode, a text-only model given an image)
      if (/^Request \d|image|text-only|data URL/i.test(msg)) throw new HttpError(400, msg);
      throw e;
    }
  }

  /**
   * The real path of `path` when it lies inside an allowed folder. Missing and outside paths get the same
   * answer, so a client cannot probe which paths exist elsewhere on the host.
   */
  async function allowedPath(path: string, param: string): Promise<string> {
    let real: string | undefined;
    try {
      real = await Deno.realPath(path);
    } catch { /* missing: answered as outside */ }
    const inside = real !== undefined &&
      allowedRoots.some((root) => real === root || real!.startsWith(root.endsWith("/") ? root : root + "/"));
    if (!inside) {
      throw new HttpError(
        400,
        `'${param}' must name an existing folder inside the server's allowed local paths ` +
          `(--allowed-local-paths${allowedRoots.length ? "" : ", none configured"}).`,
        param,
      );
    }
    return real!;
  }

  function checkUpdatesAllowed(path: string): void {
    if (!allowUpdates) {
      throw new HttpError(
        403,
        `${path} is off: start the server with --allow-runtime-updates (or MEDTHINK_ALLOW_RUNTIME_UPDATES=1) ` +
          `and --allowed-local-paths to change weights or adapters at runtime.`,
      );
    }
  }

  async function loadAdapter(body: Body, sglang: boolean): Promise<Response> {
    const name = body.lora_name, path = body.lora_path;
    if (typeof name !== "string" || !name) {
      throw new HttpError(400, `'lora_name' must be a non-empty string.`, "lora_name");
    }
    if (typeof path !== "string" || !path) {
      throw new HttpError(400, `'lora_path' must be a non-empty string.`, "lora_path");
    }
    if (name === modelName) {
      throw new HttpError(400, `The adapter name '${name}' is the served model's name.`, "lora_name");
    }
    const inplace = optBool(body, "load_inplace", false);
    if (adapters.has(name) && !inplace && !sglang) {
      throw new HttpError(400, `The lora adapter '${name}' has already been loaded.`, "lora_name");
    }
    const real = await allowedPath(path, "lora_path");
    await engine.exclusive(async () => {
      const savedLora = model.lora, savedEnabled = model.loraEnabled;
      const trainable = new Map(Object.values(model.params).map((p) => [p, p.trainable]));
      model.lora = {};
      try {
        await loadLora(model, real, { freezeBase: false });
        const old = adapters.get(name);
        adapters.set(name, model.lora);
        adapterPaths.set(name, path);
        if (old) { for (const a of Object.values(old)) tf.dispose([a.A, a.B]); }
      } catch (e) {
        for (const a of Object.values(model.lora)) tf.dispose([a.A, a.B]);
        throw new HttpError(400, (e as Error).message, "lora_path");
      } finally {
        model.lora = savedLora;
        model.loraEnabled = savedEnabled;
        for (const [p, t] of trainable) p.trainable = t;
      }
    });
    const message = `Success: LoRA adapter '${name}' added successfully.`;
    return sglang ? json({ success: true, message }) : new Response(message, { status: 200 });
  }

  async function unloadAdapter(body: Body, sglang: boolean): Promise<Response> {
    const name = body.lora_name;
    if (typeof name !== "string" || !name) {
      throw new HttpError(400, `'lora_name' must be a non-empty string.`, "lora_name");
    }
    if (!adapters.has(name)) {
      throw new HttpError(404, `The lora adapter '${name}' cannot be found.`, "lora_name");
    }
    await engine.exclusive(() => {
      const a = adapters.get(name)!;
      adapters.delete(name);
      adapterPaths.delete(name);
      for (const x of Object.values(a)) tf.dispose([x.A, x.B]);
    });
    const message = `Success: LoRA adapter '${name}' removed successfully.`;
    return sglang ? json({ success: true, message }) : new Response(message, { status: 200 });
  }

  async function updateWeights(body: Body): Promise<Response> {
    const path = body.model_path;
    if (typeof path !== "string" || !path) {
      throw new HttpError(400, `'model_path' must be a non-empty string.`, "model_path");
    }
    const real = await allowedPath(path, "model_path");
    await engine.exclusive(async () => {
      let fresh: CausalLM;
      try {
        fresh = await loadModel(real, { backend: model.backend });
      } catch (e) {
        throw new HttpError(400, `Cannot load ${path}: ${(e as Error).message}`, "model_path");
      }
      try {
        for (const [name, p] of Object.entries(model.params)) {
          const q = fresh.params[name];
          if (!q || q.shape.join() !== p.shape.join()) {
            throw new HttpError(
              400,
              `The checkpoint ${path} has no tensor ${name} of shape [${p.shape}].`,
              "model_path",
            );
          }
        }
        for (const [name, p] of Object.entries(model.params)) p.assign(fresh.params[name]);
      } finally {
        fresh.dispose();
      }
    });
    return json({ success: true, message: "Succeeded to update model weights.", num_paused_requests: 0 });
  }

  function models(): Response {
    const data = [{
      id: modelName,
      object: "model",
      created,
      owned_by: "medthink",
      root: model.dir ?? modelName,
      parent: null,
      max_model_len: maxLen,
    }];
    for (const name of adapters.keys()) {
      data.push({
        id: name,
        object: "model",
        created,
        owned_by: "medthink",
        root: adapterPaths.get(name)!,
        parent: modelName as unknown as null,
        max_model_len: maxLen,
      });
    }
    return json({ object: "list", data });
  }

  async function route(req: Request): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (req.method === "GET" && (path === "/health" || path === "/v1/health")) {
      return new Response(null, { status: 200 });
    }
    if (keyDigest && !(await authorized(req.headers.get("authorization"), keyDigest))) {
      const r = errorResponse(401, `Unauthorized: send the server's API key as 'Authorization: Bearer KEY'.`);
      r.headers.set("www-authenticate", "Bearer");
      return r;
    }
    if (req.method === "GET") {
      if (path === "/v1/models") return models();
      if (path === "/medthink/stats") {
        const mem = tf.memory();
        return json({
          numTensors: mem.numTensors,
          numBytes: mem.numBytes,
          rss: Deno.memoryUsage().rss,
          served,
        });
      }
    }
    const posts: Record<string, (b: Body) => Promise<Response>> = {
      "/v1/chat/completions": chat,
      "/v1/completions": completions,
      "/v1/load_lora_adapter": (b) => loadAdapter(b, false),
      "/v1/unload_lora_adapter": (b) => unloadAdapter(b, false),
      "/load_lora_adapter": (b) => loadAdapter(b, true),
      "/unload_lora_adapter": (b) => unloadAdapter(b, true),
      "/update_weights_from_disk": updateWeights,
    };
    const handler = posts[path];
    if (!handler) {
      if (req.method !== "POST" && path in posts) return errorResponse(405, `${path} takes POST requests.`);
      return errorResponse(404, `There is no route ${req.method} ${path}.`);
    }
    if (req.method !== "POST") return errorResponse(405, `${path} takes POST requests.`);
    if (UPDATE_ROUTES.has(path)) checkUpdatesAllowed(path);
    const text = await readBody(req, maxBody);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new HttpError(400, `The request body is not valid JSON.`);
    }
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw new HttpError(400, `The request body must be a JSON object.`);
    }
    return await handler(body as Body);
  }

  const server = Deno.serve({
    port: options.port ?? 8000,
    hostname,
    onListen: (addr) => options.onListen?.(addr),
  }, async (req) => {
    try {
      return await route(req);
    } catch (e) {
      if (e instanceof HttpError) return errorResponse(e.status, e.message, e.param);
      console.error(`serve: internal error: ${(e as Error).stack ?? e}`);
      return errorResponse(500, `Internal error: ${(e as Error).message ?? e}`);
    }
  });
  const addr = server.addr as Deno.NetAddr;
  return {
    url: `http://${addr.hostname}:${addr.port}`,
    port: addr.port,
    engine,
    shutdown: () => server.shutdown(),
    finished: server.finished,
  };
}
