/**
 * The `serve` subcommand of `cli.ts`: load a checkpoint and serve it with {@linkcode serveModel} until
 * SIGINT/SIGTERM.
 *
 * @module
 */
import { loadModel } from "../model/load.ts";
import { loadTokenizer } from "../data/tokenizer.ts";
import { DEFAULT_MAX_BODY_BYTES, isLoopbackHost, serveModel } from "./server.ts";
import { type OpenAIEngine, openaiEngine, type ServerProtocol } from "../engine/openai.ts";

/** The flags of `cli.ts serve` (kinds as `cli.ts` reads them). */
export const SERVE_SETTINGS = {
  model: {
    kind: "string",
    help: "checkpoint folder (Hub layout) or medthink-tiny",
    default: "medthink-tiny",
  },
  backend: { kind: "string", help: "tfjs backend: auto, tensorflow, wasm, webgpu, cpu", default: "auto" },
  port: { kind: "number", help: "port (0 picks a free one; the chosen port is printed)", default: 8000 },
  host: { kind: "string", help: "interface to bind", default: "127.0.0.1" },
  servedModelName: { kind: "string", help: "model name clients send (default: --model as given)" },
  maxBatchRows: {
    kind: "number",
    help: "most output rows (prompts x samples) per generate call",
    default: 16,
  },
  defaultMaxTokens: { kind: "number", help: "max_tokens of requests that give none", default: 256 },
  apiKey: {
    kind: "string",
    help:
      "key clients must send as 'Authorization: Bearer KEY' (default: $MEDTHINK_API_KEY); needed to bind a non-loopback --host",
  },
  allowRuntimeUpdates: {
    kind: "boolean",
    help:
      "accept the LoRA-adapter and weight-update routes (also MEDTHINK_ALLOW_RUNTIME_UPDATES=1); paths must lie in --allowed-local-paths",
    default: false,
  },
  allowedLocalPaths: {
    kind: "list",
    help: "comma-separated folders whose contents the weight and adapter routes may load",
  },
  maxBodyBytes: {
    kind: "number",
    help: "largest request body in bytes (413 above it)",
    default: DEFAULT_MAX_BODY_BYTES,
  },
} as const;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env: only the flags count
  }
}

/** Run the server with the parsed settings; resolves when a signal stopped it. */
export async function runServe(config: Record<string, unknown>): Promise<void> {
  const dir = String(config.model);
  const apiKey = (config.apiKey as string | undefined) || env("MEDTHINK_API_KEY");
  const host = String(config.host);
  // refused before the model is loaded: the same check serveModel makes
  if (!apiKey && !isLoopbackHost(host)) {
    throw new Error(
      `serve: refusing to bind --host ${host} without an API key: anyone who reaches it could run the model ` +
        `and change its weights; give --api-key (or MEDTHINK_API_KEY), or bind 127.0.0.1.`,
    );
  }
  const allowRuntimeUpdates = config.allowRuntimeUpdates === true ||
    ["1", "true"].includes((env("MEDTHINK_ALLOW_RUNTIME_UPDATES") ?? "").toLowerCase());
  const model = await loadModel(dir, { backend: config.backend as string });
  const tokenizer = await loadTokenizer(model.dir);
  const server = serveModel(model, {
    tokenizer,
    port: Number(config.port),
    hostname: host,
    modelName: (config.servedModelName as string | undefined) ?? dir,
    maxBatchRows: Number(config.maxBatchRows),
    defaultMaxTokens: Number(config.defaultMaxTokens),
    apiKey,
    allowRuntimeUpdates,
    allowedLocalPaths: (config.allowedLocalPaths as string[] | undefined) ?? [],
    maxBodyBytes: Number(config.maxBodyBytes),
    onListen: ({ hostname, port }) => {
      // one parseable line: tests and scripts read the port from it
      console.log(
        `serve: ${model.dir ?? dir} (${model.backend}${tokenizer.embedded ? ", embedded tokenizer" : ""}) ` +
          `listening on http://${hostname}:${port}`,
      );
    },
  });
  const stop = () => server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  try {
    await server.finished;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    model.dispose();
  }
}

/** Flags of `probe` / `evaluate` that send the generation to OpenAI-compatible servers instead of a local model. */
export const REMOTE_SETTINGS = {
  endpoints: {
    kind: "list",
    help:
      "comma-separated OpenAI-compatible server URLs (vLLM, SGLang, medthink serve); when given, --model is the served model name",
  },
  protocol: {
    kind: "string",
    help: "server software behind --endpoints: vllm, sglang or medthink",
    default: "vllm",
  },
  concurrency: { kind: "number", help: "requests in flight per endpoint", default: 8 },
  apiKeyEnv: {
    kind: "string",
    help: "environment variable holding the servers' API key",
    default: "OPENAI_API_KEY",
  },
  requestTimeout: {
    kind: "number",
    help: "seconds before a request to a server is abandoned (and retried)",
    default: 600,
  },
} as const;

/** The remote engine described by the `REMOTE_SETTINGS` flags, with a no-op `dispose` like a model's. */
export function openRemoteEngine(config: Record<string, unknown>): OpenAIEngine & { dispose(): void } {
  const endpoints = config.endpoints as string[];
  const engine = openaiEngine({
    baseUrls: endpoints,
    // the default model name means "whatever the servers serve" (asked from /v1/models)
    model: config.model === "medthink-tiny" ? undefined : String(config.model),
    protocol: config.protocol as ServerProtocol,
    concurrencyPerEndpoint: Number(config.concurrency ?? 8),
    apiKeyEnv: String(config.apiKeyEnv ?? "OPENAI_API_KEY"),
    timeoutMs: Number(config.requestTimeout ?? 600) * 1000,
  });
  return Object.assign(engine, { dispose() {} });
}
