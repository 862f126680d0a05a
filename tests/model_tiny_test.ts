// The embedded default model: created once in the cache from a fixed seed, then loaded through
// loadModel like any checkpoint.
import { loadModel } from "../lib/model/load.ts";
import { Rng } from "../lib/model/rng.ts";
import { defaultModelDir, ensureTinyModel, TINY_CONFIG, tinyModelTensors } from "../lib/model/tiny.ts";
import { check, checkEqual } from "./_model_fixtures.ts";

Deno.test("Rng: reproducible streams; fillNormal has mean 0 and the asked std", () => {
  const a = new Rng(5), b = new Rng(5), c = new Rng(6);
  const xa = Array.from({ length: 5 }, () => a.nextU32());
  checkEqual(xa, Array.from({ length: 5 }, () => b.nextU32()));
  check(JSON.stringify(xa) !== JSON.stringify(Array.from({ length: 5 }, () => c.nextU32())), "seeds differ");
  const x = new Rng(1).fillNormal(new Float32Array(200_001), 0.02);
  let m = 0, v = 0;
  for (const e of x) m += e / x.length;
  for (const e of x) v += (e - m) ** 2 / x.length;
  check(Math.abs(m) < 2e-4 && Math.abs(Math.sqrt(v) - 0.02) < 2e-4, `mean ${m}, std ${Math.sqrt(v)}`);
  for (let i = 0; i < 1000; i++) {
    const u = a.next();
    check(u >= 0 && u < 1, "uniform in [0, 1)");
  }
});

Deno.test("medthink-tiny: built in the cache once, loads like a checkpoint, generates", async () => {
  const cache = await Deno.makeTempDir({ prefix: "medthink-cache-" });
  const before = Deno.env.get("MEDTHINK_CACHE");
  Deno.env.set("MEDTHINK_CACHE", cache);
  try {
    checkEqual(defaultModelDir(), `${cache}/medthink-tiny`);
    const t0 = performance.now();
    const dir = await ensureTinyModel();
    const ms = performance.now() - t0;
    check(ms < 20_000, `creating medthink-tiny took ${ms} ms`);
    const stat = await Deno.stat(`${dir}/model.safetensors`);
    await ensureTinyModel(); // second call: reuses the files
    check(
      (await Deno.stat(`${dir}/model.safetensors`)).mtime?.getTime() === stat.mtime?.getTime(),
      "not rewritten",
    );
    const model = await loadModel("medthink-tiny", { backend: "wasm" });
    try {
      checkEqual(model.dir, dir);
      const c = model.config;
      check(
        c.vocabSize === 151936 && c.tieWordEmbeddings && c.hiddenSize === 128 && c.numHiddenLayers === 4,
        "config",
      );
      checkEqual(c.eosTokenIds, [151645, 151643]);
      check(!("lm_head.weight" in model.params), "tied: no lm_head");
      const n = Object.values(model.params).reduce((s, v) => s + v.size, 0);
      check(n === 20_187_264, `parameter count ${n}`);
      // Same seed, same weights: the saved embedding equals a fresh draw.
      const emb = tinyModelTensors()[0];
      checkEqual(emb.name, "model.embed_tokens.weight");
      const want = (await emb.data()).slice(0, 1000);
      const got = (await model.params["model.embed_tokens.weight"].data()).slice(0, 1000);
      checkEqual(Array.from(got), Array.from(want), "weights from the fixed seed");
      const norm = await model.params["model.layers.0.input_layernorm.weight"].data();
      const bias = await model.params["model.layers.0.self_attn.q_proj.bias"].data();
      check(norm.every((x) => x === 1) && bias.every((x) => x === 0), "norms 1, biases 0");
      const out = await model.generate([[151644, 872, 198], [151643, 3838, 374]], {
        attentionMask: [[1, 1, 1], [0, 1, 1]],
        maxNewTokens: 4,
        numSamples: 2,
        seed: 1,
      });
      check(
        out.tokens.length === 4 &&
          out.tokens.every((t) => t.length === 4 || out.finishReasons.includes("stop")),
        "tokens",
      );
      check(out.tokens.flat().every((t) => t >= 0 && t < 151936), "ids in the vocabulary");
      check(out.logprobs.flat().every((l) => l < 0 && l > -20), "log-probs near log(1/V) for a random init");
    } finally {
      model.dispose();
    }
    checkEqual(TINY_CONFIG.vocab_size, 151936);
  } finally {
    if (before === undefined) Deno.env.delete("MEDTHINK_CACHE");
    else Deno.env.set("MEDTHINK_CACHE", before);
    await Deno.remove(cache, { recursive: true });
  }
});
