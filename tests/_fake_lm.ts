/**
 * A small differentiable stand-in for a causal LM (embedding -> tanh(linear) -> head), used where a test
 * checks the training machinery itself rather than the Qwen2 forward.
 *
 * @module
 */
import { tf } from "../lib/util/deps.ts";
import type { CausalLM, ModelConfig } from "../lib/model/types.ts";

/** A deterministic tiny LM whose params are Variables under Hub-like names. */
export function fakeLM(options: { vocab?: number; hidden?: number; seed?: number } = {}): CausalLM {
  const vocab = options.vocab ?? 37;
  const h = options.hidden ?? 8;
  const seed = options.seed ?? 1;
  const params: Record<string, tf.Variable> = {
    "model.embed_tokens.weight": tf.variable(tf.randomNormal([vocab, h], 0, 1, "float32", seed)),
    "model.layers.0.mlp.up_proj.weight": tf.variable(tf.randomNormal([h, h], 0, 0.5, "float32", seed + 1)),
    "model.layers.0.mlp.up_proj.bias": tf.variable(tf.randomNormal([h], 0, 0.1, "float32", seed + 2)),
    "model.norm.weight": tf.variable(tf.ones([h])),
    "lm_head.weight": tf.variable(tf.randomNormal([vocab, h], 0, 1, "float32", seed + 3)),
  };
  const config = {
    modelType: "fake",
    vocabSize: vocab,
    hiddenSize: h,
    intermediateSize: h,
    numHiddenLayers: 1,
    numAttentionHeads: 1,
    numKeyValueHeads: 1,
    headDim: h,
    rmsNormEps: 1e-6,
    ropeTheta: 1e4,
    tieWordEmbeddings: false,
    maxPositionEmbeddings: 512,
    eosTokenIds: [2],
    dtype: "float32",
    raw: {},
  } as ModelConfig;
  const model: CausalLM = {
    config,
    backend: tf.getBackend(),
    params,
    lora: {},
    loraEnabled: true,
    hidden(inputIds, opts = {}) {
      return tf.tidy(() => {
        const ids = inputIds instanceof tf.Tensor ? inputIds : tf.tensor2d(inputIds, undefined, "int32");
        const [b, t] = ids.shape;
        // one-hot matmul: the gradient of gather is missing on wasm
        const x = tf.matMul(
          tf.oneHot(ids.reshape([b * t]).toInt(), vocab).toFloat(),
          params["model.embed_tokens.weight"],
        );
        // a causal mixing term so positions interact: running mean over time via a lower-triangular matrix
        const tri = tf.linalg.bandPart(tf.ones([t, t]), -1, 0).div(tf.range(1, t + 1).reshape([t, 1]));
        let mask: tf.Tensor = tf.ones([b, t]);
        if (opts.attentionMask) {
          mask = opts.attentionMask instanceof tf.Tensor
            ? opts.attentionMask.toFloat()
            : tf.tensor2d(opts.attentionMask);
        }
        const xm = x.reshape([b, t, h]).mul(mask.reshape([b, t, 1]));
        const mixed = tf.matMul(tri.expandDims(0).tile([b, 1, 1]), xm).reshape([b * t, h]);
        let y = tf.matMul(mixed, params["model.layers.0.mlp.up_proj.weight"], false, true);
        const ad = model.loraEnabled ? model.lora["model.layers.0.mlp.up_proj"] : undefined;
        if (ad) y = y.add(tf.matMul(tf.matMul(mixed, ad.A, false, true), ad.B, false, true).mul(ad.scale));
        y = y.add(params["model.layers.0.mlp.up_proj.bias"]).tanh().mul(params["model.norm.weight"]);
        return y.reshape([b, t, h]) as tf.Tensor3D;
      });
    },
    lmHeadWeight() {
      return params["lm_head.weight"] as unknown as tf.Tensor2D;
    },
    logits(inputIds, opts) {
      return tf.tidy(() => {
        const hs = model.hidden(inputIds, opts);
        const [b, t] = hs.shape;
        return tf.matMul(hs.reshape([b * t, h]), model.lmHeadWeight(), false, true).reshape([
          b,
          t,
          vocab,
        ]) as tf.Tensor3D;
      });
    },
    generate() {
      throw new Error("fakeLM does not generate.");
    },
    dispose() {
      for (const v of Object.values(params)) v.dispose();
      for (const a of Object.values(model.lora)) tf.dispose([a.A, a.B]);
    },
  };
  return model;
}
