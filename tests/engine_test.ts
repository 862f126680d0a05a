// The engine interface: localEngine, openaiEngine against in-process fake servers (concurrency,
// retries, failover) and against two `cli.ts serve` processes (a probe that survives a killed server).
import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { arquero as aq } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { localEngine } from "../lib/engine/local.ts";
import { apiBaseUrl, openaiEngine } from "../lib/engine/openai.ts";
import { toWireMessages } from "../lib/engine/messages.ts";
import { probe } from "../lib/eval/probe.ts";
import { readJsonl } from "../lib/data/jsonl_store.ts";
import { fakeRows } from "./_eval_fakes.ts";
import { buildPrompt } from "../lib/data/prompt.ts";
import { startServe } from "./_serve.ts";

const SAMPLING = { temperature: 1, topP: 1, topK: 0, maxNewTokens: 6 };

/** An in-process OpenAI-style server answering `seed:<seed>`; `fail(req#)` makes a request fail with 500. */
function fakeServer(options: { delayMs?: number; fail?: (i: number) => number | null } = {}) {
  const state = { requests: 0, inFlight: 0, maxInFlight: 0, bodies: [] as any[] };
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, async (req) => {
    const i = state.requests++;
    const body = await req.json();
    state.bodies.push(body);
    state.inFlight++;
    state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
    try {
      if (options.delayMs) await new Promise((r) => setTimeout(r, options.delayMs));
      const status = options.fail?.(i);
      if (status) {
        return new Response(
          JSON.stringify({ error: { message: "boom", type: "X", param: null, code: status } }),
          {
            status,
            headers: { "content-type": "application/json" },
          },
        );
      }
      return Response.json({
        id: "x",
        object: "chat.completion",
        created: 0,
        model: body.model,
        choices: [{
          index: 0,
          message: { role: "assistant", content: `seed:${body.seed}` },
          logprobs: {
            content: [{ token: "a", logprob: -0.5, bytes: [97], top_logprobs: [] }, {
              token: "b",
              logprob: -1,
              bytes: [98],
              top_logprobs: [],
            }],
          },
          finish_reason: "stop",
          token_ids: [7, 8],
        }],
        usage: { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
      });
    } finally {
      state.inFlight--;
    }
  });
  return {
    url: `http://127.0.0.1:${(server.addr as Deno.NetAddr).port}`,
    state,
    stop: () => server.shutdown(),
  };
}

const ask = (seeds?: number[]) => ({
  messages: [{ role: "user", content: "hi" }],
  ...(seeds ? { seeds } : { n: 1 }),
});

Deno.test("openaiEngine: explicit sampling values, extras, one request per seeded sample, concurrency limit", async () => {
  const a = fakeServer({ delayMs: 30 }), b = fakeServer({ delayMs: 30 });
  try {
    const engine = openaiEngine({ baseUrls: [a.url, `${b.url}/v1/`], model: "m", concurrencyPerEndpoint: 3 });
    assertEquals(engine.baseUrls, [apiBaseUrl(a.url), `${b.url}/v1`]);
    const seeds = Array.from({ length: 20 }, (_, i) => 1000 + i);
    const out = await engine.complete([ask(seeds.slice(0, 10)), ask(seeds.slice(10))], {
      ...SAMPLING,
      topK: 5,
    });
    assertEquals(
      out.map((r) => r.map((s) => s.text)),
      [seeds.slice(0, 10), seeds.slice(10)].map((x) => x.map((s) => `seed:${s}`)),
    );
    assertEquals(out[0][0], {
      text: "seed:1000",
      tokenIds: [7, 8],
      logprobs: [-0.5, -1],
      finishReason: "stop",
    });
    assert(
      a.state.maxInFlight <= 3 && b.state.maxInFlight <= 3,
      `in flight ${a.state.maxInFlight}, ${b.state.maxInFlight}`,
    );
    assertEquals(a.state.requests + b.state.requests, 20);
    assert(a.state.requests >= 5 && b.state.requests >= 5, "requests are spread over both endpoints");
    const body = a.state.bodies[0];
    for (const k of ["temperature", "top_p", "max_tokens", "seed", "top_k", "n"]) {
      assert(k in body, `${k} is sent`);
    }
    assertEquals([body.n, body.temperature, body.top_p, body.top_k, body.max_tokens], [1, 1, 1, 5, 6]);
    assertEquals([body.return_token_ids, body.skip_special_tokens, body.logprobs], [true, true, true]);
    assertEquals(engine.stats().map((s) => s.ok).reduce((x, y) => x + y), 20);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

Deno.test("openaiEngine: seeded samples retry with backoff and fail over; unseeded and 4xx are not repeated", async () => {
  // a: every request fails with 503; b: its first request fails
  const a = fakeServer({ fail: () => 503 }), b = fakeServer({ fail: (i) => (i === 0 ? 500 : null) });
  try {
    const engine = openaiEngine({
      baseUrls: [a.url, b.url],
      model: "m",
      backoffMs: 5,
      cooldownMs: 50,
      retries: 4,
    });
    const out = await engine.complete([ask([1, 2, 3, 4])], SAMPLING);
    assertEquals(out[0].map((s) => s.text), ["seed:1", "seed:2", "seed:3", "seed:4"]);
    const stats = engine.stats();
    assertEquals(stats[1].ok, 4);
    assert(stats[0].failed >= 1 && !stats[0].alive);
    // without a seed a repeat is not harmless: one attempt only
    const c = fakeServer({ fail: () => 500 });
    try {
      const once = openaiEngine({ baseUrls: [c.url], model: "m", backoffMs: 5 });
      await rejects(once.complete([ask()], SAMPLING), /HTTP 500/);
      assertEquals(c.state.requests, 1);
      // a 400 says the request is wrong: not retried even with a seed
      const d = fakeServer({ fail: () => 400 });
      try {
        const e4 = openaiEngine({ baseUrls: [d.url], model: "m", backoffMs: 5 });
        await rejects(e4.complete([ask([9])], SAMPLING), /HTTP 400/);
        assertEquals(d.state.requests, 1);
      } finally {
        await d.stop();
      }
    } finally {
      await c.stop();
    }
    // an endpoint that never answers exhausts the retries with a clear error
    const dead = openaiEngine({
      baseUrls: ["http://127.0.0.1:9"],
      model: "m",
      backoffMs: 1,
      cooldownMs: 1,
      retries: 2,
    });
    await rejects(dead.complete([ask([1])], SAMPLING), /after 3 attempts/);
  } finally {
    await Promise.all([a.stop(), b.stop()]);
  }
});

Deno.test("toWireMessages: images become base64 data URLs in image_url parts", async () => {
  const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3]);
  const wire = await toWireMessages([{
    role: "user",
    content: [{ type: "image", image: { bytes: png } }, { type: "text", text: "Q" }],
  }]);
  assertEquals(wire, [{
    role: "user",
    content: [{ type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgoBAgM=" } }, {
      type: "text",
      text: "Q",
    }],
  }]);
});

Deno.test({
  name:
    "localEngine: a sample depends only on its seed, not on its batch; seeds reproduce model.generate rows",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const model = await loadModel("medthink-tiny");
    try {
      const tok = await loadTokenizer(model.dir);
      const engine = localEngine(model, tok, { maxBatchRows: 8 });
      const reqs = [
        {
          messages: [{ role: "user", content: "First question, a long one with many words in it." }],
          seeds: [1, 2],
        },
        { messages: [{ role: "user", content: "Second?" }], seeds: [3] },
      ];
      const together = await engine.complete(reqs, SAMPLING);
      const alone = [await engine.complete([reqs[0]], SAMPLING), await engine.complete([reqs[1]], SAMPLING)];
      // the same tokens and texts; log-probs agree to float32 rounding (padding changes reduction order)
      const strip = (x: typeof together) => x.map((r) => r.map(({ logprobs: _, ...rest }) => rest));
      assertEquals(strip(together), strip([alone[0][0], alone[1][0]]));
      const close = (a: number[], b: number[]) => {
        assertEquals(a.length, b.length);
        a.forEach((v, i) => assert(Math.abs(v - b[i]) < 1e-4, `log-prob ${i}: ${v} vs ${b[i]}`));
      };
      together.forEach((r, i) => r.forEach((smp, j) => close(smp.logprobs, alone[i][0][j].logprobs)));
      const ids = tok.encode(tok.applyChatTemplate(reqs[1].messages, { addGenerationPrompt: true }));
      const direct = await model.generate([ids], { ...SAMPLING, seeds: [3] });
      const eos = new Set(model.config.eosTokenIds);
      const stop = direct.tokens[0].findIndex((t) => eos.has(t));
      assertEquals(
        together[1][0].tokenIds,
        stop < 0 ? direct.tokens[0] : direct.tokens[0].slice(0, stop + 1),
      );
      close(together[1][0].logprobs, direct.logprobs[0].slice(0, together[1][0].tokenIds.length));
    } finally {
      model.dispose();
    }
  },
});

Deno.test({
  name:
    "remote probe over two serve processes, one killed midway: finishes, resumes, each question once, equals local",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "engine_probe_" });
    const [a, b] = await Promise.all([
      startServe(["--model", "medthink-tiny"]),
      startServe(["--model", "medthink-tiny"]),
    ]);
    const model = await loadModel("medthink-tiny");
    try {
      const table = aq.from(fakeRows(8));
      const opts = {
        n: 2,
        temperature: 0,
        maxNewTokens: 8,
        batchSize: 2,
        keepCompletions: true,
        progress: false,
      };
      const local = await probe(model, table, { ...opts, out: `${dir}/local.jsonl` });
      const out = `${dir}/probe.jsonl`;
      const mk = () =>
        openaiEngine({
          baseUrls: [a.url, b.url],
          model: "medthink-tiny",
          backoffMs: 20,
          cooldownMs: 500,
          retries: 6,
        });
      // run 1: A is killed after the first batch, the run is stopped after the second
      const stop = new AbortController();
      const first = mk();
      const partial = await probe(first, table, {
        ...opts,
        out,
        signal: stop.signal,
        onProgress: async ({ done }) => {
          if (done === 2) await a.stop("SIGKILL");
          if (done === 4) stop.abort();
        },
      });
      assertEquals(partial.numRows(), 4);
      const s1 = first.stats();
      assert(s1[1].ok > 0, "B answered after A died");
      assertEquals(s1[0].ok + s1[1].ok, 4 * 2);
      // run 2: resume; only the 4 questions left are requested (A is dead: every sample lands on B)
      const second = mk();
      const resumed = await probe(second, table, { ...opts, out });
      const s2 = second.stats();
      assertEquals(s2[0].ok, 0);
      assertEquals(s2[1].ok, 4 * 2);
      const records = await readJsonl<{ id: string }>(out);
      const ids = records.map((r) => r.id).filter((x) => x !== undefined);
      assertEquals(ids.length, 8);
      assertEquals(new Set(ids).size, 8);
      // greedy decoding: the remote table equals the local one (pass counts, lengths), and so do the texts
      assertEquals(resumed.objects(), local.objects());
      const texts = async (f: string) =>
        Object.fromEntries(
          (await readJsonl<{ id?: string; completions?: string[] }>(f)).filter((r) => r.id).map((
            r,
          ) => [r.id, r.completions]),
        );
      assertEquals(await texts(out), await texts(`${dir}/local.jsonl`));
      // a finished run resumes without a single request
      const third = mk();
      assertEquals((await probe(third, table, { ...opts, out })).objects(), local.objects());
      assertEquals(third.stats().reduce((s, e) => s + e.ok, 0), 0);
      // the CLI does the same with --endpoints (A is dead: the run finishes on B)
      const medqa = new URL("../data/medqa_4opt/test.jsonl", import.meta.url).pathname;
      const cli = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../cli.ts", import.meta.url).pathname,
          "probe",
          "--endpoints",
          `${a.url},${b.url}`,
          "--protocol",
          "medthink",
          "--model",
          "medthink-tiny",
          "--data",
          medqa,
          "--limit",
          "3",
          "--num-generations",
          "2",
          "--temperature",
          "0",
          "--max-new-tokens",
          "8",
          "--batch-size",
          "2",
          "--out",
          `${dir}/cli/probe.jsonl`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const said = new TextDecoder().decode(cli.stdout) + new TextDecoder().decode(cli.stderr);
      assert(cli.success, said);
      assert(/probe: 3 of 3 questions done/.test(said), said);
      const { loadDataset } = await import("../lib/data/dataset.ts");
      await probe(model, await loadDataset(medqa, { limit: 3 }), {
        ...opts,
        keepCompletions: false,
        out: `${dir}/lq.jsonl`,
      });
      const recs = async (f: string) => (await readJsonl<{ id?: string }>(f)).filter((r) => r.id);
      assertEquals(await recs(`${dir}/cli/probe.jsonl`), await recs(`${dir}/lq.jsonl`));
    } finally {
      model.dispose();
      await Promise.all([a.stop("SIGKILL"), b.stop()]);
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "image rows go as base64 data URLs: remote evaluate over serve (tiny VL model) equals the local one",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const { serveModel } = await import("../lib/serve/server.ts");
    const { evaluate } = await import("../lib/eval/evaluate.ts");
    const DATA = new URL("../data/", import.meta.url).pathname;
    const model = await loadModel("medthink-tiny-vl");
    const tokenizer = await loadTokenizer(model.dir);
    const server = serveModel(model, { tokenizer, port: 0, modelName: "tiny-vl" });
    const dir = await Deno.makeTempDir({ prefix: "engine_vl_" });
    try {
      const bench = [{ name: "vqa", path: "vqa_rad_closed/test.jsonl" }];
      const opts = {
        dataDir: DATA,
        limit: 3,
        maxNewTokens: 3,
        batchSize: 3,
        runs: 2,
        temperature: 1,
        progress: false,
      };
      const local = await evaluate(model, bench, { ...opts, tokenizer, outDir: `${dir}/local` });
      const engine = openaiEngine({ baseUrls: [server.url], model: "tiny-vl", protocol: "medthink" });
      const remote = await evaluate(engine, bench, { ...opts, outDir: `${dir}/remote` });
      assertEquals(remote.scores, local.scores);
      assertEquals(remote.benchmarks, local.benchmarks);
      assertEquals(engine.stats()[0].ok, 3 * 2);
      const texts = async (f: string) =>
        (await readJsonl<{ id?: string; run: number; completion: string; length: number }>(f))
          .filter((p) => p.id).map((p) => [p.id, p.run, p.completion, p.length]);
      const want = await texts(`${dir}/local/predictions.jsonl`);
      assertEquals(want.length, 6);
      assertEquals(await texts(`${dir}/remote/predictions.jsonl`), want);
      // the images did travel: without them the prompts (and so the samples) differ
      const noImages = await evaluate(engine, bench, {
        ...opts,
        prompt: (row) => buildPrompt(row, { includeImages: false }),
        outDir: `${dir}/noimg`,
      });
      assert(noImages.benchmarks[0].n === 3);
      assert(JSON.stringify(await texts(`${dir}/noimg/predictions.jsonl`)) !== JSON.stringify(want));
    } finally {
      await Deno.remove(dir, { recursive: true });
      await server.shutdown();
      model.dispose();
    }
  },
});
