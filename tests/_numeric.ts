// Numeric helpers the kernel tests share: seeded data (the same on every run, so a failure replays) and the
// relative difference they compare products with.
import type { tf } from "../lib/util/deps.ts";

/** `n` values `scale * (u - 0.5)` from a 32-bit LCG seeded with `seed` (u uniform in [0, 1)). */
export function lcgValues(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * scale;
  }
  return out;
}

/** max |a - b| / max |b|, over every element. */
export async function maxRelDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const x = await a.data(), y = await b.data();
  let num = 0, den = 0;
  for (let i = 0; i < y.length; i++) {
    num = Math.max(num, Math.abs(x[i] - y[i]));
    den = Math.max(den, Math.abs(y[i]));
  }
  return num / den;
}
