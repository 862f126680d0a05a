/**
 * Small seeded random number generators: reproducible across runs, platforms and backends
 * (pure 32-bit integer arithmetic, no Math.random).
 *
 * @module
 */

/** Mix a 32-bit value (the finaliser of splitmix32 / murmur3): a good hash of a counter or seed. */
export function mix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/**
 * A stream seed derived from a base seed and a stream index (e.g. an output row): distinct
 * indices give unrelated streams.
 */
export function deriveSeed(seed: number, index: number): number {
  return mix32(mix32(seed >>> 0) ^ mix32((index + 0x632be5ab) >>> 0));
}

/**
 * xoshiro128** seeded through splitmix32: fast, 2^128 - 1 period, reproducible.
 *
 * @example
 * ```ts
 * import { Rng } from "./rng.ts";
 * const r = new Rng(42);
 * const u = r.next(); // in [0, 1)
 * ```
 */
export class Rng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;
  #spare: number | null = null;

  /** A generator whose whole stream is fixed by `seed` (any number; its low 32 bits... and more via hashing). */
  constructor(seed: number) {
    // Fold a non-32-bit seed (e.g. Date.now()) into 32 bits without losing the high part.
    const hi = Math.floor(seed / 4294967296) >>> 0;
    let s = (mix32(seed >>> 0) ^ mix32(hi ^ 0x5bd1e995)) >>> 0;
    const next = () => (s = mix32(s));
    this.#s0 = next();
    this.#s1 = next();
    this.#s2 = next();
    this.#s3 = next();
    if ((this.#s0 | this.#s1 | this.#s2 | this.#s3) === 0) this.#s0 = 1;
  }

  /** Next uniform 32-bit unsigned integer. */
  nextU32(): number {
    const s1 = this.#s1;
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  next(): number {
    const a = this.nextU32() >>> 5, b = this.nextU32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.#spare !== null) {
      const v = this.#spare;
      this.#spare = null;
      return v;
    }
    let u = this.next();
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Fill `out` with normal(0, std) values (fast path for weight initialisation). */
  fillNormal(out: Float32Array, std = 1): Float32Array {
    const n = out.length;
    let i = 0;
    for (; i + 1 < n; i += 2) {
      // 32-bit uniforms are plenty for initialisation and twice as fast as 53-bit ones.
      const u = (this.nextU32() + 1) / 4294967297;
      const v = this.nextU32() / 4294967296;
      const r = std * Math.sqrt(-2 * Math.log(u));
      const a = 2 * Math.PI * v;
      out[i] = r * Math.cos(a);
      out[i + 1] = r * Math.sin(a);
    }
    if (i < n) out[i] = std * this.normal();
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
