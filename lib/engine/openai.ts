/**
 * The remote engine: one or more OpenAI-compatible servers (vLLM, SGLang, `medthink serve`) driven
 * through the official `openai` client.
 *
 * - Every sample is one request with `n: 1` and its own `seed`, so a sample equals what the local
 *   engine draws for the same seed, and repeating it is harmless: failed seeded samples are retried
 *   with exponential backoff, on another endpoint when theirs died. Unseeded samples are never retried.
 * - Requests go to the live endpoint with the fewest requests in flight, at most
 *   `concurrencyPerEndpoint` at a time each. An endpoint that refuses connections, times out or
 *   answers 5xx rests for a cool-down (doubling while it keeps failing) and is tried again after it.
 * - Every sampling value is sent explicitly (servers otherwise apply the model's generation config);
 *   vLLM/SGLang extras (`top_k`, `skip_special_tokens`, `return_token_ids`) ride along in the body.
 * - The API key is the `apiKey` option or read from the environment variable `apiKeyEnv`, and never logged.
 *
 * @module
 */
import { OpenAI } from "../util/deps.ts";
import type { CompletionEngine, CompletionRequest, CompletionSample, EngineSampling } from "./types.ts";
import { toWireMessages } from "./messages.ts";
import { checkGenerationOptions } from "../model/generation_options.ts";

/** The server software behind the URLs (what extras and weight routes it takes). */
export type ServerProtocol = "vllm" | "sglang" | "medthink";

/** Options of {@linkcode openaiEngine}. */
export interface OpenAIEngineOptions {
  /** Base URLs of the servers (`http://host:8000` or `http://host:8000/v1`). */
  baseUrls: string[];
  /** Model name to request. Default: the first model the first reachable server lists. */
  model?: string;
  /** The servers' API key (sent as `Authorization: Bearer KEY`). Default: the variable `apiKeyEnv` names. */
  apiKey?: string;
  /** Environment variable holding the API key. Default `OPENAI_API_KEY` (servers without auth accept any key). */
  apiKeyEnv?: string;
  /** Requests in flight per endpoint. Default 8. */
  concurrencyPerEndpoint?: number;
  /** Timeout of one request in milliseconds. Default 600000. */
  timeoutMs?: number;
  /** Retries of a seeded sample after a failure. Default 4. */
  retries?: number;
  /** First backoff in milliseconds (doubled per retry). Default 200. */
  backoffMs?: number;
  /** First cool-down of a failed endpoint in milliseconds (doubled while it keeps failing, at most 60 s). Default 2000. */
  cooldownMs?: number;
  /** `vllm` (default), `sglang` or `medthink`. */
  protocol?: ServerProtocol;
  /** Name in reports and resume metadata. Default: the model name, else `openai-compatible`. */
  name?: string;
}

/** Counters of one endpoint. */
export interface EndpointStats {
  /** Its base URL (ending in `/v1`). */
  url: string;
  /** Requests answered. */
  ok: number;
  /** Requests that failed. */
  failed: number;
  /** False while it rests after a failure. */
  alive: boolean;
}

/** A {@linkcode CompletionEngine} over OpenAI-compatible servers. */
export interface OpenAIEngine extends CompletionEngine {
  /** The servers' base URLs (ending in `/v1`). */
  readonly baseUrls: string[];
  /** The protocol option. */
  readonly protocol: ServerProtocol;
  /** The model name requests use (resolved from `/v1/models` when not given). */
  modelName(): Promise<string>;
  /** Per-endpoint counters. */
  stats(): EndpointStats[];
}

interface Endpoint {
  url: string;
  client: InstanceType<typeof OpenAI>;
  inFlight: number;
  deadUntil: number;
  strikes: number;
  ok: number;
  failed: number;
}

/** Normalise `http://h:p`, `http://h:p/` and `http://h:p/v1` to `http://h:p/v1`. */
export function apiBaseUrl(url: string): string {
  const u = url.replace(/\/+$/, "");
  return u.endsWith("/v1") ? u : `${u}/v1`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** True when the failure says nothing about the request itself (the endpoint is down or overloaded). */
function endpointFailure(e: unknown): boolean {
  const status = (e as { status?: number }).status;
  if (typeof status === "number") return status >= 500 || status === 408 || status === 429;
  return true; // connection refused, reset, timeout
}

/**
 * Drive OpenAI-compatible servers as a {@linkcode CompletionEngine}.
 *
 * @example
 * ```ts ignore
 * const engine = openaiEngine({ baseUrls: ["http://10.0.0.1:8000", "http://10.0.0.2:8000"], protocol: "vllm" });
 * const table = await probe(engine, questions, { n: 16, out: "probe.jsonl" });
 * ```
 */
export function openaiEngine(options: OpenAIEngineOptions): OpenAIEngine {
  if (!Array.isArray(options.baseUrls) || options.baseUrls.length === 0) {
    throw new Error(`openaiEngine needs at least one URL in baseUrls.`);
  }
  const protocol = options.protocol ?? "vllm";
  if (!["vllm", "sglang", "medthink"].includes(protocol)) {
    throw new Error(`openaiEngine protocol must be vllm, sglang or medthink, got '${protocol}'.`);
  }
  const keyEnv = options.apiKeyEnv ?? "OPENAI_API_KEY";
  let apiKey: string | undefined = options.apiKey;
  try {
    apiKey ||= Deno.env.get(keyEnv);
  } catch {
    apiKey = undefined; // no --allow-env: servers without auth need none
  }
  const limit = options.concurrencyPerEndpoint ?? 8;
  const retries = options.retries ?? 4;
  const backoff = options.backoffMs ?? 200;
  const cooldown = options.cooldownMs ?? 2000;
  const endpoints: Endpoint[] = options.baseUrls.map((u) => {
    const url = apiBaseUrl(u);
    return {
      url,
      client: new OpenAI({
        baseURL: url,
        apiKey: apiKey || "EMPTY",
        maxRetries: 0, // retries are ours: only seeded samples, and on another endpoint
        timeout: options.timeoutMs ?? 600_000,
      }),
      inFlight: 0,
      deadUntil: 0,
      strikes: 0,
      ok: 0,
      failed: 0,
    };
  });
  const waiters: (() => void)[] = [];
  let model: Promise<string> | undefined = options.model ? Promise.resolve(options.model) : undefined;

  function wake(): void {
    for (const w of waiters.splice(0)) w();
  }

  async function acquire(): Promise<Endpoint> {
    while (true) {
      const now = Date.now();
      const free = endpoints.filter((e) => e.inFlight < limit);
      const alive = free.filter((e) => e.deadUntil <= now);
      if (alive.length > 0) {
        const e = alive.reduce((a, b) => (b.inFlight < a.inFlight ? b : a));
        e.inFlight++;
        return e;
      }
      // every endpoint is busy or resting: wait for a slot, or for the first to end its rest
      const resting = endpoints.filter((e) => e.deadUntil > now).map((e) => e.deadUntil - now);
      await new Promise<void>((resolve) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const done = () => {
          if (timer !== undefined) clearTimeout(timer);
          resolve();
        };
        waiters.push(done);
        if (resting.length > 0 && free.length > 0) timer = setTimeout(done, Math.min(...resting));
      });
    }
  }

  function release(e: Endpoint, ok: boolean): void {
    e.inFlight--;
    if (ok) {
      e.ok++;
      e.strikes = 0;
      e.deadUntil = 0;
    } else {
      e.failed++;
      e.strikes++;
      e.deadUntil = Date.now() + Math.min(60_000, cooldown * 2 ** (e.strikes - 1));
    }
    wake();
  }

  async function resolveModel(): Promise<string> {
    model ??= (async () => {
      let last: unknown;
      for (const e of endpoints) {
        try {
          const list = await e.client.models.list();
          const first = list.data[0]?.id;
          if (first) return first;
        } catch (err) {
          last = err;
        }
      }
      model = undefined;
      throw new Error(
        `No server of ${endpoints.map((e) => e.url).join(", ")} lists a model` +
          (last ? ` (${(last as Error).message}).` : "."),
      );
    })();
    return await model;
  }

  async function sampleOnce(
    e: Endpoint,
    req: CompletionRequest,
    wire: unknown,
    s: EngineSampling,
    name: string,
    seed: number | undefined,
  ): Promise<CompletionSample> {
    const common: Record<string, unknown> = {
      model: name,
      n: 1,
      temperature: s.temperature,
      top_p: s.topP,
      max_tokens: s.maxNewTokens,
      ...(seed !== undefined ? { seed } : {}),
      ...(s.stop && s.stop.length > 0 ? { stop: s.stop } : {}),
      // vLLM and SGLang take top_k (-1 = off); the OpenAI API itself has none
      top_k: s.topK > 0 ? s.topK : -1,
      skip_special_tokens: true,
      ...(protocol !== "sglang" ? { return_token_ids: true } : {}),
    };
    if (req.promptIds) {
      const r = await e.client.completions.create(
        { ...common, prompt: req.promptIds, logprobs: 0 } as never,
      ) as any;
      const c = r.choices[0];
      const logprobs: number[] = (c.logprobs?.token_logprobs ?? []).map(Number);
      return {
        text: c.text ?? "",
        tokenIds: c.token_ids ?? [],
        logprobs,
        finishReason: c.finish_reason === "length" ? "length" : "stop",
      };
    }
    const r = await e.client.chat.completions.create(
      { ...common, messages: wire, logprobs: true } as never,
    ) as any;
    const c = r.choices[0];
    return {
      text: c.message?.content ?? "",
      tokenIds: c.token_ids ?? [],
      logprobs: (c.logprobs?.content ?? []).map((t: { logprob: number }) => t.logprob),
      finishReason: c.finish_reason === "length" ? "length" : "stop",
    };
  }

  async function sample(req: CompletionRequest, wire: unknown, s: EngineSampling, seed: number | undefined) {
    const name = s.model ?? await resolveModel();
    for (let attempt = 0;; attempt++) {
      const e = await acquire();
      let ok = false;
      try {
        const out = await sampleOnce(e, req, wire, s, name, seed);
        ok = true;
        return out;
      } catch (err) {
        const down = endpointFailure(err);
        // a bad request fails the same way everywhere; an unseeded sample must not be drawn twice
        if (!down || seed === undefined || attempt >= retries) {
          ok = !down; // the endpoint itself answered
          const status = (err as { status?: number }).status;
          throw new Error(
            `Request to ${e.url} failed${status ? ` with HTTP ${status}` : ""}: ${(err as Error).message}` +
              (down && seed !== undefined ? ` (after ${attempt + 1} attempts)` : ""),
          );
        }
      } finally {
        release(e, ok);
      }
      await sleep(backoff * 2 ** attempt * (0.5 + Math.random() / 2));
    }
  }

  return {
    // not the URLs: a resumed run may use other endpoints for the same model
    get name() {
      return options.name ?? options.model ?? "openai-compatible";
    },
    baseUrls: endpoints.map((e) => e.url),
    protocol,
    modelName: resolveModel,
    stats: () =>
      endpoints.map((e) => ({ url: e.url, ok: e.ok, failed: e.failed, alive: e.deadUntil <= Date.now() })),
    async complete(requests, s) {
      checkGenerationOptions(s, "Generation options");
      return await Promise.all(requests.map(async (req, i) => {
        if (!req.promptIds && !req.messages) {
          throw new Error(`Request ${i} has neither messages nor promptIds.`);
        }
        const wire = req.messages ? await toWireMessages(req.messages) : undefined;
        const seeds: (number | undefined)[] = req.seeds ?? new Array(req.n ?? 1).fill(undefined);
        return await Promise.all(seeds.map((seed) => sample(req, wire, s, seed)));
      }));
    },
  };
}
