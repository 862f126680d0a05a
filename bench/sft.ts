/**
 * The vocabulary head of the SFT loss at Qwen2.5-0.5B's shapes (V = 151,936, H = 896): peak tfjs memory
 * and time of loss + gradients (hidden states and head weight) for
 *   - `naive`: full `[N, V]` logits through plain autograd (log-softmax, one-hot pick), what a loss
 *     written without care keeps alive until the backward pass;
 *   - `one chunk`: `sftLoss`'s custom-gradient head with a single chunk of all N rows;
 *   - `chunked`: the same with the default chunk (about 2^25 logits).
 * The whole SFT step against PyTorch (forward, backward, AdamW) is in `bench/run.ts` (`--rows sft`).
 *
 *   deno run -A bench/sft.ts [--backend wasm] [--rows 256,1024] [--hidden 896] [--vocab 151936]
 *
 * Measured 2026-11-25, backend tensorflow, 2 shared cores (load average ~10, so times are inflated):
 *
 * | rows | mode | peak tfjs memory | time |
 * | --- | --- | --- | --- |
 * | 256 | naive | 3.48 GiB | 13.3 s |
 * | 256 | one chunk | 3.05 GiB | 13.5 s |
 * | 256 | chunked | 3.19 GiB | 14.4 s |
 * | 1024 | naive | 7.84 GiB | 47.2 s |
 * | 1024 | one chunk | 6.11 GiB | 37.6 s |
 * | 1024 | chunked | 3.93 GiB | 27.5 s |
 *
 * The chunked head's peak stays near its floor (the weight, its gradient, one chunk's gradient and their
 * sum: 4 x 0.51 GiB, plus one chunk of logits) while the naive one grows with the rows (~4.4 GiB per
 * 1,000 rows: logits, log-softmax, one-hot and their gradients).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import { headLogprobs } from "../lib/train/losses.ts";

const { values } = parseArgs({
  options: {
    backend: { type: "string", default: "wasm" },
    rows: { type: "string", default: "256,1024" },
    hidden: { type: "string", default: "896" },
    vocab: { type: "string", default: "151936" },
  },
});
const backend = await useBackend(values.backend);
const H = Number(values.hidden), V = Number(values.vocab);
const w = tf.variable(tf.randomNormal([V, H], 0, 0.02, "float32", 1)) as unknown as tf.Variable & tf.Tensor2D;

type Mode = "naive" | "one chunk" | "chunked";

function loss(h: tf.Tensor2D, targets: number[], mode: Mode): tf.Scalar {
  const n = h.shape[0];
  if (mode === "naive") {
    const lp = tf.logSoftmax(tf.matMul(h, w, false, true));
    return lp.mul(tf.oneHot(tf.tensor1d(targets, "int32"), V).toFloat()).sum().neg().div(n) as tf.Scalar;
  }
  const { logprobs } = headLogprobs(h, w, targets, { chunkSize: mode === "one chunk" ? n : undefined });
  return logprobs.sum().neg().div(n) as tf.Scalar;
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
console.log(`backend ${backend}, V = ${V}, H = ${H}; head weight alone ${gib(V * H * 4)}`);
console.log("| rows | mode | peak tfjs memory | time (loss + grads) |");
console.log("| --- | --- | --- | --- |");
for (const n of values.rows!.split(",").map(Number)) {
  const h = tf.variable(tf.randomNormal([n, H], 0, 1, "float32", 2)) as unknown as tf.Variable & tf.Tensor2D;
  const targets = Array.from({ length: n }, (_, i) => (i * 7919) % V);
  for (const mode of ["naive", "one chunk", "chunked"] as Mode[]) {
    const t0 = performance.now();
    let out: tf.Tensor[] = [];
    const info = await tf.profile(() => {
      const { value, grads } = tf.variableGrads(() => loss(h, targets, mode), [h, w]);
      out = [value, ...Object.values(grads)];
      return out;
    });
    for (const t of out) await t.data();
    const seconds = (performance.now() - t0) / 1000;
    tf.dispose(out);
    console.log(`| ${n} | ${mode} | ${gib(info.peakBytes)} | ${seconds.toFixed(1)} s |`);
  }
  h.dispose();
}
