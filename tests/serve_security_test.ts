// `serve` on a network (#16 item 1): API keys, loopback-only without one, runtime weight updates off by
// default and confined to allowed folders (without revealing what exists elsewhere), a body size
// limit, and chat prompts longer than the context refused.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { OpenAI, tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { addLora, saveLora } from "../lib/model/lora.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { serveModel } from "../lib/serve/server.ts";
import { openaiEngine } from "../lib/engine/openai.ts";
import { startServe } from "./_serve.ts";

const CLI = new URL("../cli.ts", import.meta.url).pathname;

async function call(
  url: string,
  path: string,
  init: { body?: unknown; key?: string; method?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: any }> {
  const r = await fetch(`${url}${path}`, {
    method: init.method ?? (init.body === undefined ? "GET" : "POST"),
    headers: {
      "content-type": "application/json",
      ...(init.key ? { authorization: `Bearer ${init.key}` } : {}),
      ...init.headers,
    },
    body: init.body === undefined
      ? undefined
      : init.body instanceof ReadableStream || typeof init.body === "string"
      ? init.body as BodyInit
      : JSON.stringify(init.body),
  });
  const text = await r.text();
  try {
    return { status: r.status, body: JSON.parse(text) };
  } catch {
    return { status: r.status, body: text };
  }
}

Deno.test({
  name: "serve: no key means loopback only (library and CLI refuse 0.0.0.0)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const model = await loadModel("medthink-tiny");
    const tokenizer = await loadTokenizer(model.dir);
    try {
      for (const hostname of ["0.0.0.0", "::", "192.0.2.1"]) {
        let message = "";
        try {
          serveModel(model, { tokenizer, port: 0, hostname });
        } catch (e) {
          message = (e as Error).message;
        }
        assert(message.includes(hostname) && message.includes("API key"), message);
      }
      // unknown options are errors, not silently ignored
      let message = "";
      try {
        serveModel(model, { tokenizer, port: 0, apiKeys: "x" } as never);
      } catch (e) {
        message = (e as Error).message;
      }
      assert(message.includes("apiKeys"), message);
    } finally {
      model.dispose();
    }
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", CLI, "serve", "--host", "0.0.0.0", "--port", "0"],
      env: { MEDTHINK_API_KEY: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assertEquals(out.code, 1);
    const err = new TextDecoder().decode(out.stderr);
    assert(err.includes("--host 0.0.0.0") && err.includes("--api-key"), err);
  },
});

Deno.test({
  name: "serve --api-key on 0.0.0.0: every route but /health needs the Bearer key; clients send it",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    // bound on every interface, reached over loopback only
    const server = await startServe(["--model", "medthink-tiny", "--host", "0.0.0.0", "--api-key", "s3cret"]);
    const url = server.url.replace("0.0.0.0", "127.0.0.1");
    try {
      assertEquals((await fetch(`${url}/health`)).status, 200);
      for (const key of [undefined, "wrong", "s3cre", "s3cret2"]) {
        const r = await call(url, "/v1/models", { key });
        assertEquals(r.status, 401, `key ${key}`);
        assertEquals(r.body.error.code, 401);
        assertEquals(r.body.error.type, "AuthenticationError");
      }
      const chat = { messages: [{ role: "user", content: "Hi" }], max_tokens: 2 };
      assertEquals((await call(url, "/v1/chat/completions", { body: chat })).status, 401);
      assertEquals((await call(url, "/v1/chat/completions", { body: chat, key: "s3cret" })).status, 200);
      // the official client with the key, and ours with the apiKey option
      const api = new OpenAI({ baseURL: `${url}/v1`, apiKey: "s3cret", maxRetries: 0 });
      assertEquals((await api.models.list()).data[0].id, "medthink-tiny");
      const engine = openaiEngine({ baseUrls: [url], apiKey: "s3cret", protocol: "medthink", retries: 0 });
      const [[s]] = await engine.complete([{ messages: chat.messages as never, seeds: [1] }], {
        temperature: 0,
        topP: 1,
        topK: 0,
        maxNewTokens: 2,
      });
      assertEquals(typeof s.text, "string");
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name: "serve: MEDTHINK_API_KEY and MEDTHINK_ALLOW_RUNTIME_UPDATES=1 work as the flags do",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "serve_env_" });
    const server = await startServe(["--model", "medthink-tiny", "--allowed-local-paths", root], 90_000, {
      MEDTHINK_API_KEY: "from-env",
      MEDTHINK_ALLOW_RUNTIME_UPDATES: "1",
    });
    try {
      assertEquals((await call(server.url, "/v1/models")).status, 401);
      assertEquals((await call(server.url, "/v1/models", { key: "from-env" })).status, 200);
      // the route is on (400 for a folder that holds no adapter, not 403)
      const r = await call(server.url, "/v1/load_lora_adapter", {
        body: { lora_name: "x", lora_path: `${root}/none` },
        key: "from-env",
      });
      assertEquals(r.status, 400, JSON.stringify(r.body));
    } finally {
      await server.stop();
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "serve: runtime updates are off by default, then confined to the allowed folders; body limit; long chats",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const root = await Deno.makeTempDir({ prefix: "serve_sec_" });
    const allowed = `${root}/allowed`, outside = `${root}/outside`;
    const model = await loadModel("medthink-tiny");
    const tokenizer = await loadTokenizer(model.dir);
    const adapterModel = await loadModel("medthink-tiny");
    addLora(adapterModel, { r: 2, targetModules: ["q_proj"], seed: 1 });
    for (const ad of Object.values(adapterModel.lora)) ad.B.assign(tf.fill(ad.B.shape, 0.1));
    await saveLora(adapterModel, `${allowed}/a1`);
    await saveLora(adapterModel, `${outside}/secret`);
    await Deno.symlink(`${outside}/secret`, `${allowed}/link-out`);
    adapterModel.dispose();
    const off = serveModel(model, { tokenizer, port: 0, modelName: "m" });
    const on = serveModel(model, {
      tokenizer,
      port: 0,
      modelName: "m",
      allowRuntimeUpdates: true,
      allowedLocalPaths: [allowed],
      maxBodyBytes: 4096,
    });
    try {
      await t.step("off by default: 403 on every weight route, naming the flag", async () => {
        for (
          const path of [
            "/v1/load_lora_adapter",
            "/v1/unload_lora_adapter",
            "/load_lora_adapter",
            "/unload_lora_adapter",
            "/update_weights_from_disk",
          ]
        ) {
          const r = await call(off.url, path, {
            body: { lora_name: "a", lora_path: `${allowed}/a1`, model_path: allowed },
          });
          assertEquals(r.status, 403, path);
          assert(r.body.error.message.includes("--allow-runtime-updates"), r.body.error.message);
        }
      });

      await t.step(
        "enabled: a folder inside loads; outside, '..', symlinks out and missing paths get one answer",
        async () => {
          const ok = await call(on.url, "/v1/load_lora_adapter", {
            body: { lora_name: "a1", lora_path: `${allowed}/a1` },
          });
          assertEquals(ok.status, 200, JSON.stringify(ok.body));
          const answers = new Set<string>();
          for (
            const path of [
              `${outside}/secret`, // exists, outside
              `${outside}/nothing-here`, // missing, outside
              `${allowed}/../outside/secret`, // '..' leaving the folder
              `${allowed}/link-out`, // a symlink inside pointing out
              `${allowed}/missing`, // missing, inside
              "/etc",
            ]
          ) {
            const r = await call(on.url, "/v1/load_lora_adapter", {
              body: { lora_name: "x", lora_path: path },
            });
            assertEquals(r.status, 400, path);
            answers.add(r.body.error.message);
            assert(
              !r.body.error.message.includes(root),
              `the answer repeats the path: ${r.body.error.message}`,
            );
          }
          assertEquals(answers.size, 1, [...answers].join(" | "));
          const w = await call(on.url, "/update_weights_from_disk", {
            body: { model_path: `${outside}/secret` },
          });
          assertEquals(w.status, 400);
          assertEquals(w.body.error.message, [...answers][0].replace("lora_path", "model_path"));
        },
      );

      await t.step(
        "bodies over the limit get 413, by Content-Length and when streamed in chunks",
        async () => {
          const big = JSON.stringify({
            messages: [{ role: "user", content: "x".repeat(5000) }],
            max_tokens: 1,
          });
          const r = await call(on.url, "/v1/chat/completions", { body: big });
          assertEquals(r.status, 413);
          assert(r.body.error.message.includes("--max-body-bytes"));
          // chunked: no Content-Length, the bytes are counted as they come
          const bytes = new TextEncoder().encode(big);
          const stream = new ReadableStream<Uint8Array>({
            start(c) {
              for (let i = 0; i < bytes.length; i += 1000) c.enqueue(bytes.subarray(i, i + 1000));
              c.close();
            },
          });
          const s = await call(on.url, "/v1/chat/completions", { body: stream });
          assertEquals(s.status, 413);
          const small = await call(on.url, "/v1/chat/completions", {
            body: { messages: [{ role: "user", content: "Hi" }], max_tokens: 1 },
          });
          assertEquals(small.status, 200);
        },
      );

      await t.step("a chat prompt longer than the context is a 400, as for /v1/completions", async () => {
        const maxLen = model.config.maxPositionEmbeddings;
        const r = await call(off.url, "/v1/chat/completions", {
          body: { messages: [{ role: "user", content: "Hi" }], max_tokens: maxLen },
        });
        assertEquals(r.status, 400);
        assert(r.body.error.message.includes("maximum context length"), r.body.error.message);
        const long = await call(off.url, "/v1/chat/completions", {
          body: {
            messages: [{ role: "user", content: [{ type: "text", text: " a".repeat(maxLen + 10) }] }],
            max_tokens: 1,
          },
        });
        assertEquals(long.status, 400);
        assert(long.body.error.message.includes("maximum context length"), long.body.error.message);
      });
    } finally {
      await off.shutdown();
      await on.shutdown();
      model.dispose();
      await Deno.remove(root, { recursive: true });
    }
  },
});
