// Golden logits and KV-cached greedy tokens of the qwen2-tiny fixture, on every backend.
import { tf } from "../lib/util/deps.ts";
import { parseConfig } from "../lib/model/config.ts";
import { loadModel } from "../lib/model/load.ts";
import { inverseFrequencies, ropeCosSin } from "../lib/model/qwen2.ts";
import { BACKENDS, backendTest } from "./_backends.ts";
import { check, checkEqual, loadGolden, maxAbsDiff, QWEN2_TINY, take } from "./_model_fixtures.ts";

for (const backend of BACKENDS) {
  backendTest("qwen2-tiny: golden logits, padded batch, greedy generation", backend, async (t) => {
    const g = loadGolden();
    const model = await loadModel(QWEN2_TINY, { backend });
    try {
      await t.step("logits within 1e-3", async () => {
        const got = await take(model.logits(g.input_ids));
        const d = maxAbsDiff(got, g.logits);
        check(d < 1e-3, `max |logit diff| ${d}`);
      });
      await t.step("left-padded batch where mask = 1", async () => {
        const got = await take(model.logits(g.padded.input_ids, { attentionMask: g.padded.attention_mask }));
        const d = maxAbsDiff(got, g.padded.logits, g.padded.attention_mask);
        check(d < 1e-3, `max |logit diff| ${d}`);
      });
      await t.step("8 greedy tokens per row with the KV cache", async () => {
        const out = await model.generate(g.input_ids, { maxNewTokens: 8, temperature: 0, eosTokenIds: [] });
        checkEqual(out.tokens, g.greedy_new_tokens, "greedy tokens");
        checkEqual(out.finishReasons, ["length", "length"]);
      });
      await t.step("greedy tokens of the left-padded batch equal the unpadded row's", async () => {
        const out = await model.generate(g.padded.input_ids, {
          attentionMask: g.padded.attention_mask,
          maxNewTokens: 8,
          temperature: 0,
          eosTokenIds: [],
        });
        const row1 = await model.generate([g.padded.input_ids[1].slice(5)], {
          maxNewTokens: 8,
          temperature: 0,
          eosTokenIds: [],
        });
        checkEqual(out.tokens[0], g.greedy_new_tokens[0], "row 0");
        checkEqual(out.tokens[1], row1.tokens[0], "padded row 1");
      });
    } finally {
      model.dispose();
    }
  });
}

for (const backend of BACKENDS) {
  backendTest("ropeCosSin: float32 angles like HF, accurate at long positions", backend, async () => {
    const config = parseConfig({
      model_type: "qwen2",
      vocab_size: 10,
      hidden_size: 64,
      intermediate_size: 8,
      num_hidden_layers: 1,
      num_attention_heads: 1,
      rope_theta: 1e6,
    });
    const positions = [0, 1, 7, 100, 4095, 30000, 131071];
    const pos = tf.tensor2d([positions]);
    const { cos, sin } = ropeCosSin(config, pos);
    const [c, s] = [await cos.array(), await sin.array()];
    tf.dispose([pos, cos, sin]);
    const inv = inverseFrequencies(config);
    let err = 0;
    positions.forEach((p, t) => {
      for (let j = 0; j < 64; j++) {
        const angle = Math.fround(p * inv[j % 32]); // what HF computes in float32
        err = Math.max(err, Math.abs(c[0][t][j] - Math.cos(angle)), Math.abs(s[0][t][j] - Math.sin(angle)));
      }
    });
    check(err < 2e-5, `cos/sin error ${err}`);
  });
}
