// KV-cached generation: cached vs uncached logits, seeds, per-row independence, numSamples, EOS,
// log-probabilities, and the sampling filters.
import { tf } from "../lib/util/deps.ts";
import { sampleToken } from "../lib/model/generate.ts";
import { loadModel } from "../lib/model/load.ts";
import { disposeCache, emptyCache, type Qwen2Model } from "../lib/model/qwen2.ts";
import type { CausalLM } from "../lib/model/types.ts";
import { BACKENDS, backendTest } from "./_backends.ts";
import { check, checkEqual, loadGolden, QWEN2_TINY } from "./_model_fixtures.ts";

/** Uncached: log-softmax(logits / T) at the last position of each full (left-padded) sequence. */
async function lastLogprobs(model: CausalLM, ids: number[][], mask: number[][], T = 1): Promise<number[][]> {
  const lg = model.logits(ids, { attentionMask: mask });
  const [B, L, V] = lg.shape;
  const lp = tf.logSoftmax(tf.div(tf.reshape(tf.slice(lg, [0, L - 1, 0], [B, 1, V]), [B, V]), T));
  const out = await lp.array() as number[][];
  tf.dispose([lg, lp]);
  return out;
}

for (const backend of BACKENDS) {
  backendTest("generate: cached decoding gives the uncached logits", backend, async () => {
    const g = loadGolden();
    const model = await loadModel(QWEN2_TINY, { backend }) as Qwen2Model;
    try {
      let ids = g.padded.input_ids.map((r) => r.slice());
      let mask = g.padded.attention_mask.map((r) => r.slice());
      const cache = emptyCache(model.config);
      const pre = model.prefill(tf.tensor2d(ids, undefined, "int32"), tf.tensor2d(mask), cache);
      let logits = pre.logits;
      let pos = pre.nextPositions;
      for (let step = 0; step < 6; step++) {
        const got = await logits.array();
        const want = (await model.logits(ids, { attentionMask: mask }).array()).map((r) => r[r.length - 1]);
        let d = 0;
        for (let b = 0; b < 2; b++) {
          for (let v = 0; v < want[b].length; v++) d = Math.max(d, Math.abs(got[b][v] - want[b][v]));
        }
        check(d < 1e-4, `step ${step}: cached vs uncached logits differ by ${d}`);
        const next = got.map((r) => r.indexOf(Math.max(...r)));
        ids = ids.map((r, b) => [...r, next[b]]);
        mask = mask.map((r) => [...r, 1]);
        const old = logits, oldPos = pos;
        logits = model.decodeStep(tf.tensor2d(next.map((t) => [t]), undefined, "int32"), pos, cache);
        pos = tf.add(pos, 1);
        old.dispose();
        oldPos.dispose();
      }
      logits.dispose();
      pos.dispose();
      disposeCache(cache);
    } finally {
      model.dispose();
    }
  });

  backendTest("generate: seeds, per-row independence, numSamples, EOS, log-probs", backend, async (t) => {
    const g = loadGolden();
    const model = await loadModel(QWEN2_TINY, { backend });
    const opts = { maxNewTokens: 6, temperature: 0.9, topP: 0.95, topK: 50, eosTokenIds: [] as number[] };
    try {
      await t.step("same seed, same samples; another seed, other samples", async () => {
        const a = await model.generate(g.input_ids, { ...opts, seed: 7 });
        const b = await model.generate(g.input_ids, { ...opts, seed: 7 });
        const c = await model.generate(g.input_ids, { ...opts, seed: 8 });
        checkEqual(a, b, "same seed");
        check(JSON.stringify(a.tokens) !== JSON.stringify(c.tokens), "different seeds should differ");
      });
      await t.step("a row's sample depends only on its seed, not on the batch", async () => {
        // (the ids and the mask as tensors here)
        const ids = tf.tensor2d(g.padded.input_ids, undefined, "int32");
        const mask = tf.tensor2d(g.padded.attention_mask, undefined, "int32");
        const both = await model.generate(ids, { ...opts, attentionMask: mask, seeds: [11, 12] });
        tf.dispose([ids, mask]);
        const alone = await model.generate([g.padded.input_ids[1].slice(5)], { ...opts, seeds: [12] });
        checkEqual(alone.tokens[0], both.tokens[1], "row 1 alone vs in the batch");
      });
      await t.step("numSamples: row i*n+j is sample j of prompt i; tensor inputs work", async () => {
        const seeds = [1, 2, 3, 4, 5, 6];
        const ids = tf.tensor2d(g.input_ids, undefined, "int32");
        const out = await model.generate(ids, { ...opts, numSamples: 3, seeds });
        ids.dispose();
        check(out.tokens.length === 6, "6 rows");
        const single = await model.generate([g.input_ids[1]], { ...opts, numSamples: 1, seeds: [5] });
        checkEqual(out.tokens[4], single.tokens[0], "row 4 = prompt 1, sample 1");
        const greedy = await model.generate(g.input_ids, {
          maxNewTokens: 8,
          temperature: 0,
          numSamples: 2,
          eosTokenIds: [],
        });
        checkEqual(greedy.tokens, [
          g.greedy_new_tokens[0],
          g.greedy_new_tokens[0],
          g.greedy_new_tokens[1],
          g.greedy_new_tokens[1],
        ]);
      });
      await t.step("stops on EOS (token included), others run to maxNewTokens", async () => {
        const eos = g.greedy_new_tokens[0][2];
        const out = await model.generate(g.input_ids, {
          maxNewTokens: 8,
          temperature: 0,
          eosTokenIds: [eos],
        });
        checkEqual(out.tokens[0], g.greedy_new_tokens[0].slice(0, 3), "row 0 stops");
        checkEqual(out.tokens[1], g.greedy_new_tokens[1], "row 1 unaffected");
        checkEqual(out.finishReasons, ["stop", "length"]);
        check(out.logprobs[0].length === 3 && out.logprobs[1].length === 8, "one log-prob per token");
      });
      await t.step("a sampled row that stops leaves the batch without changing the others", async () => {
        const free = await model.generate(g.input_ids, { ...opts, numSamples: 2, seeds: [21, 22, 23, 24] });
        const eos = free.tokens[1][1];
        const out = await model.generate(g.input_ids, {
          ...opts,
          numSamples: 2,
          seeds: [21, 22, 23, 24],
          eosTokenIds: [eos],
        });
        for (let r = 0; r < 4; r++) {
          const cut = free.tokens[r].indexOf(eos);
          const want = cut >= 0 ? free.tokens[r].slice(0, cut + 1) : free.tokens[r];
          checkEqual(out.tokens[r], want, `row ${r}`);
          checkEqual(out.finishReasons[r], cut >= 0 ? "stop" : "length");
          for (let s = 0; s < want.length; s++) {
            check(Math.abs(out.logprobs[r][s] - free.logprobs[r][s]) < 1e-4, `row ${r} logprob ${s}`);
          }
        }
      });
      await t.step("log-probs are log-softmax(logits / T) of the chosen tokens", async () => {
        for (const temperature of [0, 0.7]) {
          const out = await model.generate(g.padded.input_ids, {
            attentionMask: g.padded.attention_mask,
            maxNewTokens: 3,
            temperature,
            seed: 3,
            eosTokenIds: [],
          });
          const ids = g.padded.input_ids.map((r) => r.slice());
          const mask = g.padded.attention_mask.map((r) => r.slice());
          for (let s = 0; s < 3; s++) {
            const lp = await lastLogprobs(model, ids, mask, temperature || 1);
            for (let b = 0; b < 2; b++) {
              const tok = out.tokens[b][s];
              check(Math.abs(lp[b][tok] - out.logprobs[b][s]) < 1e-4, `T=${temperature} row ${b} step ${s}`);
              ids[b].push(tok);
              mask[b].push(1);
            }
          }
        }
      });
    } finally {
      model.dispose();
    }
  });
}

Deno.test("sampleToken: greedy, top-k, top-p (HF semantics), inverse-CDF draw", () => {
  const lp = Float32Array.from([0.5, 0.3, 0.2], Math.log);
  const draws = (o: { temperature: number; topK: number; topP: number }) =>
    [...new Set(Array.from({ length: 200 }, (_, i) => sampleToken(lp, o, (i + 0.5) / 200)))].sort();
  checkEqual(sampleToken(lp, { temperature: 0, topK: 0, topP: 1 }, 0.99), 0);
  checkEqual(draws({ temperature: 1, topK: 0, topP: 1 }), [0, 1, 2]);
  checkEqual(draws({ temperature: 1, topK: 2, topP: 1 }), [0, 1]);
  checkEqual(draws({ temperature: 1, topK: 1, topP: 1 }), [0]);
  // ascending cumulative mass [0.2, 0.5, 1.0]: drop where <= 1 - top_p
  checkEqual(draws({ temperature: 1, topK: 0, topP: 0.75 }), [0, 1]);
  checkEqual(draws({ temperature: 1, topK: 0, topP: 0.5 }), [0]);
  checkEqual(draws({ temperature: 1, topK: 0, topP: 0.81 }), [0, 1, 2]);
  // the draw is inverse-CDF over the kept, renormalised tokens
  checkEqual(sampleToken(lp, { temperature: 1, topK: 2, topP: 1 }, 0.62), 0);
  checkEqual(sampleToken(lp, { temperature: 1, topK: 2, topP: 1 }, 0.63), 1);
  // a large vocabulary: the nucleus search must not need the whole sort, and must agree with it
  const V = 151936;
  const big = new Float32Array(V);
  let x = 1;
  for (let i = 0; i < V; i++) big[i] = ((x = (x * 48271) % 2147483647) / 2147483647) * 12;
  let m = -Infinity, z = 0;
  for (const v of big) m = Math.max(m, v);
  for (const v of big) z += Math.exp(v - m);
  for (let i = 0; i < V; i++) big[i] = big[i] - m - Math.log(z);
  const order = Array.from(big.keys()).sort((a, b) => big[a] - big[b]);
  let cum = 0;
  const keep = new Set<number>();
  for (const i of order) {
    cum += Math.exp(big[i]);
    if (cum > 0.1) keep.add(i);
  }
  const t0 = performance.now();
  for (let k = 0; k < 50; k++) {
    const tok = sampleToken(big, { temperature: 1, topK: 0, topP: 0.9 }, k / 50);
    check(keep.has(tok), `token ${tok} outside the nucleus`);
  }
  const ms = (performance.now() - t0) / 50;
  check(ms < 30, `top-p sampling took ${ms.toFixed(1)} ms per row`);
  const top = new Set(order.slice(V - 40));
  for (let k = 0; k < 20; k++) {
    const tok = sampleToken(big, { temperature: 1, topK: 40, topP: 1 }, k / 20);
    check(top.has(tok), `token ${tok} outside the top 40`);
  }
});

Deno.test("no tensor leaks: generate, logits, hidden; dispose frees everything", async () => {
  const g = loadGolden();
  const model = await loadModel(QWEN2_TINY, { backend: "cpu" });
  const before = tf.memory().numTensors;
  await model.generate(g.padded.input_ids, {
    attentionMask: g.padded.attention_mask,
    maxNewTokens: 5,
    numSamples: 3,
    seed: 1,
    eosTokenIds: [g.greedy_new_tokens[0][1]],
  });
  await model.generate(g.input_ids, { maxNewTokens: 5, temperature: 0 });
  model.logits(g.input_ids).dispose();
  model.hidden(g.input_ids).dispose();
  checkEqual(tf.memory().numTensors, before, "tensors after use");
  model.dispose();
  checkEqual(tf.memory().numTensors, before - Object.keys(model.params).length, "tensors after dispose");
});
