// `cli.ts serve` driven by the official openai client, on loopback servers started (and stopped) here.
import { deepStrictEqual as assertEquals, notDeepStrictEqual, ok as assert } from "node:assert/strict";
import { OpenAI, tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { addLora, saveLora } from "../lib/model/lora.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { loadGolden, QWEN2_TINY } from "./_model_fixtures.ts";
import { startServe } from "./_serve.ts";

function client(url: string): OpenAI {
  return new OpenAI({ baseURL: `${url}/v1`, apiKey: "EMPTY", maxRetries: 0, timeout: 60_000 });
}

async function post(url: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch { /* plain text */ }
  return { status: r.status, body: parsed };
}

Deno.test({
  name:
    "serve: greedy /v1/completions from token ids reproduces qwen2-tiny's golden tokens (embedded tokenizer)",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const golden = loadGolden();
    const server = await startServe(["--model", QWEN2_TINY]);
    try {
      const api = client(server.url);
      const models = await api.models.list();
      assertEquals(models.data.map((m) => m.id), [QWEN2_TINY]);
      const r = await api.completions.create({
        model: QWEN2_TINY,
        prompt: golden.input_ids,
        max_tokens: 8,
        temperature: 0,
        return_token_ids: true,
        logprobs: 0,
      } as never) as any;
      assertEquals(r.choices.length, 2);
      assertEquals(r.choices.map((c: any) => c.token_ids), golden.greedy_new_tokens);
      assertEquals(r.choices.map((c: any) => c.prompt_token_ids), golden.input_ids);
      assert(
        r.choices.every((c: any) => c.finish_reason === "length" && c.logprobs.token_logprobs.length === 8),
      );
      assertEquals(r.usage, { prompt_tokens: 24, completion_tokens: 16, total_tokens: 40 });
      // a token id outside this checkpoint's 300-token vocabulary is a 400, not a crash
      const bad = await post(server.url, "/v1/completions", {
        model: QWEN2_TINY,
        prompt: [5, 300],
        max_tokens: 2,
      });
      assertEquals(bad.status, 400);
      assert(/vocabulary/.test(bad.body.error.message));
    } finally {
      await server.stop();
    }
  },
});

Deno.test({
  name: "serve: chat with n samples and log-probs, seeds, errors, a 200-request load test, LoRA hot-swap",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    // adapters are loaded at runtime from this folder only (the routes are off without the flag)
    const adapterRoot = await Deno.makeTempDir({ prefix: "serve_lora_" });
    const server = await startServe([
      "--model",
      "medthink-tiny",
      "--max-batch-rows",
      "32",
      "--allow-runtime-updates",
      "--allowed-local-paths",
      adapterRoot,
    ]);
    const api = client(server.url);
    const messages = [{ role: "user" as const, content: "What is the capital of France?" }];
    try {
      await t.step("n samples with log-probs and token ids", async () => {
        const r = await api.chat.completions.create({
          model: "medthink-tiny",
          messages,
          n: 3,
          max_tokens: 6,
          temperature: 1,
          seed: 11,
          logprobs: true,
          top_logprobs: 2,
          return_token_ids: true,
        } as never) as any;
        assertEquals(r.object, "chat.completion");
        assertEquals(r.choices.map((c: any) => c.index), [0, 1, 2]);
        let tokens = 0;
        for (const c of r.choices) {
          assertEquals(c.message.role, "assistant");
          assertEquals(typeof c.message.content, "string");
          assertEquals(c.logprobs.content.length, c.token_ids.length);
          for (const lp of c.logprobs.content) {
            assert(lp.logprob <= 0 && Number.isFinite(lp.logprob));
            assertEquals(lp.top_logprobs.length, 2);
            // the best alternative is at least as likely as the sampled token
            assert(lp.top_logprobs[0].logprob >= lp.logprob - 1e-4);
          }
          tokens += c.token_ids.length;
        }
        assertEquals(r.usage.completion_tokens, tokens);
        assertEquals(r.usage.prompt_tokens, r.prompt_token_ids.length);
        // three samples of a random model at temperature 1 are not all the same
        assert(new Set(r.choices.map((c: any) => c.message.content)).size > 1);
      });

      await t.step("the same seed gives the same text; another seed another", async () => {
        const ask = (seed: number) =>
          api.chat.completions.create({
            model: "medthink-tiny",
            messages,
            max_tokens: 8,
            temperature: 1,
            seed,
          });
        const [a, b, c] = await Promise.all([ask(5), ask(5), ask(6)]);
        assertEquals(a.choices[0].message.content, b.choices[0].message.content);
        notDeepStrictEqual(a.choices[0].message.content, c.choices[0].message.content);
      });

      await t.step("a stop string ends the sample before it, with finish_reason stop", async () => {
        const full = await api.chat.completions.create({
          model: "medthink-tiny",
          messages,
          max_tokens: 8,
          temperature: 0,
          logprobs: true,
          top_logprobs: 2,
        });
        // greedy: the chosen token is the top alternative, with the same log-prob (the chunked head pass)
        for (const x of full.choices[0].logprobs!.content!) {
          assertEquals(x.top_logprobs[0].token, x.token);
          assert(
            Math.abs(x.top_logprobs[0].logprob - x.logprob) < 1e-4,
            `${x.top_logprobs[0].logprob} vs ${x.logprob}`,
          );
        }
        const pieces = full.choices[0].logprobs!.content!.map((x) => x.token);
        const stop = pieces[3];
        const cut = full.choices[0].message.content!.indexOf(stop);
        const r = await api.chat.completions.create({
          model: "medthink-tiny",
          messages,
          max_tokens: 8,
          temperature: 0,
          stop: [stop],
          logprobs: true,
        });
        assertEquals(r.choices[0].message.content, full.choices[0].message.content!.slice(0, cut));
        assertEquals(r.choices[0].finish_reason, "stop");
        assert(r.choices[0].logprobs!.content!.length <= 4);
      });

      await t.step("bad requests get OpenAI-style 4xx bodies; unknown models 404", async () => {
        const cases: [string, unknown, number][] = [
          ["/v1/chat/completions", "{not json", 400],
          ["/v1/chat/completions", [1, 2], 400],
          ["/v1/chat/completions", { model: "medthink-tiny" }, 400],
          ["/v1/chat/completions", { model: "medthink-tiny", messages: [{ role: "user", content: 3 }] }, 400],
          ["/v1/chat/completions", { messages, n: 0 }, 400],
          ["/v1/chat/completions", { messages, temperature: -1 }, 400],
          ["/v1/chat/completions", { messages, top_p: 2 }, 400],
          ["/v1/chat/completions", { messages, max_tokens: "many" }, 400],
          ["/v1/chat/completions", { messages, stream: true }, 400],
          ["/v1/chat/completions", {
            messages: [{
              role: "user",
              content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }],
            }],
          }, 400],
          ["/v1/chat/completions", { model: "gpt-4", messages }, 404],
          ["/v1/completions", { prompt: [], max_tokens: 2 }, 400],
          ["/v1/completions", { prompt: [1, 2], max_tokens: 2, model: "other" }, 404],
          ["/v1/unload_lora_adapter", { lora_name: "never-loaded" }, 404],
          ["/v1/load_lora_adapter", { lora_name: "x", lora_path: "/nonexistent/adapter" }, 400],
          ["/nope", {}, 404],
        ];
        for (const [path, body, status] of cases) {
          const r = await post(server.url, path, body);
          assertEquals(r.status, status, `${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
          assertEquals(r.body.error.code, status);
          assertEquals(typeof r.body.error.message, "string");
          assert(typeof r.body.error.type === "string");
        }
        // the official client sees a NotFoundError for an unknown model
        let err: any;
        try {
          await api.chat.completions.create({ model: "gpt-4", messages });
        } catch (e) {
          err = e;
        }
        assertEquals(err?.status, 404);
        assertEquals((await fetch(`${server.url}/health`)).status, 200);
      });

      await t.step(
        "200 concurrent chat requests: all answered, server healthy, tensors back to baseline",
        async () => {
          const before = await (await fetch(`${server.url}/medthink/stats`)).json();
          const t0 = performance.now();
          const results = await Promise.allSettled(
            Array.from({ length: 200 }, (_, i) =>
              api.chat.completions.create({
                model: "medthink-tiny",
                messages: [{ role: "user", content: `Question ${i}: is ${i} even?` }],
                max_tokens: 3,
                temperature: 1,
                seed: i,
              })),
          );
          const seconds = (performance.now() - t0) / 1000;
          const failed = results.filter((r) => r.status === "rejected");
          assertEquals(
            failed.length,
            0,
            `${failed.length} failed: ${(failed[0] as PromiseRejectedResult)?.reason}`,
          );
          for (const r of results) {
            const v = (r as PromiseFulfilledResult<any>).value;
            assertEquals(v.choices.length, 1);
            assert(v.usage.completion_tokens >= 1 && v.usage.completion_tokens <= 3);
          }
          assertEquals((await fetch(`${server.url}/health`)).status, 200);
          const after = await (await fetch(`${server.url}/medthink/stats`)).json();
          assertEquals(after.numTensors, before.numTensors);
          assertEquals(after.numBytes, before.numBytes);
          assertEquals(after.served - before.served, 200);
          assert(after.rss < before.rss + 512 * 2 ** 20, `rss grew from ${before.rss} to ${after.rss}`);
          console.log(
            `  200 requests in ${seconds.toFixed(1)} s; rss ${(before.rss / 2 ** 20).toFixed(0)} -> ${
              (after.rss / 2 ** 20).toFixed(0)
            } MiB`,
          );
        },
      );

      await t.step("a LoRA adapter loaded in place changes the outputs as its weights say", async () => {
        const dir = adapterRoot;
        const model = await loadModel("medthink-tiny");
        try {
          const tok = await loadTokenizer(model.dir);
          const prompt = tok.encode(tok.applyChatTemplate(messages, { addGenerationPrompt: true }));
          const eos = new Set(model.config.eosTokenIds);
          const cut = (ids: number[]) => {
            const i = ids.findIndex((x) => eos.has(x));
            return i < 0 ? ids : ids.slice(0, i + 1);
          };
          const localGreedy = async () =>
            cut((await model.generate([prompt], { temperature: 0, maxNewTokens: 8 })).tokens[0]);
          const remoteGreedy = async (name: string) => {
            const r = await api.completions.create({
              model: name,
              prompt: [prompt] as never,
              max_tokens: 8,
              temperature: 0,
              return_token_ids: true,
            } as never) as any;
            return r.choices[0].token_ids as number[];
          };
          const base = await localGreedy();
          assertEquals(await remoteGreedy("medthink-tiny"), base);
          const versions: number[][] = [];
          for (const [k, scale] of [[1, 0.6], [2, 0.9]]) {
            addLora(model, { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj", "o_proj"], seed: k });
            for (const ad of Object.values(model.lora)) {
              ad.B.assign(tf.randomNormal(ad.B.shape, 0, scale, "float32", 100 * k + ad.B.shape[0]));
            }
            await saveLora(model, `${dir}/v${k}`);
            const want = await localGreedy();
            const r = await post(server.url, "/v1/load_lora_adapter", {
              lora_name: "policy",
              lora_path: `${dir}/v${k}`,
              load_inplace: true,
            });
            assertEquals(r.status, 200, JSON.stringify(r.body));
            assertEquals(await remoteGreedy("policy"), want);
            versions.push(want);
          }
          notDeepStrictEqual(versions[0], base);
          notDeepStrictEqual(versions[1], versions[0]);
          // the base model is untouched by the adapter
          assertEquals(await remoteGreedy("medthink-tiny"), base);
          const listed = await api.models.list();
          assertEquals(listed.data.map((m) => m.id), ["medthink-tiny", "policy"]);
          // loading again without load_inplace is refused, as vLLM does
          assertEquals(
            (await post(server.url, "/v1/load_lora_adapter", { lora_name: "policy", lora_path: `${dir}/v1` }))
              .status,
            400,
          );
          assertEquals(
            (await post(server.url, "/v1/unload_lora_adapter", { lora_name: "policy" })).status,
            200,
          );
          assertEquals(
            (await post(server.url, "/v1/completions", { model: "policy", prompt: [1], max_tokens: 1 }))
              .status,
            404,
          );
        } finally {
          model.dispose();
          await Deno.remove(dir, { recursive: true });
        }
      });
    } finally {
      await server.stop();
      await Deno.remove(adapterRoot, { recursive: true }).catch(() => {});
    }
  },
});
