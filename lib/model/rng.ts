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

  /** A generator whose whole stream is fixed by `seed` (any integer up to 2^53; both halves count). */
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

  /**
   * Fill `out` with normal(0, std) values (weight initialisation): Marsaglia's polar method on
   * 32-bit uniforms, which needs no trigonometry (about 2x faster than Box-Muller here).
   */
  fillNormal(out: Float32Array, std = 1): Float32Array {
    const n = out.length;
    let s0 = this.#s0, s1 = this.#s1, s2 = this.#s2, s3 = this.#s3;
    let i = 0;
    while (i < n) {
      // Two xoshiro128** draws, inlined (this loop runs tens of millions of times).
      let r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
      let t = s1 << 9;
      s2 ^= s0, s3 ^= s1, s1 ^= s2, s0 ^= s3, s2 ^= t, s3 = rotl(s3, 11);
      const u = r * 4.656612873077393e-10; // signed 32-bit -> [-1, 1)
      r = Math.imul(rotl(Math.imul(s1, 5), 7), 9);
      t = s1 << 9;
      s2 ^= s0, s3 ^= s1, s1 ^= s2, s0 ^= s3, s2 ^= t, s3 = rotl(s3, 11);
      const v = r * 4.656612873077393e-10;
      const q = u * u + v * v;
      if (q >= 1 || q === 0) continue;
      const f = std * Math.sqrt((-2 * Math.log(q)) / q);
      out[i++] = u * f;
      if (i < n) out[i++] = v * f;
    }
    this.#s0 = s0, this.#s1 = s1, this.#s2 = s2, this.#s3 = s3;
    return out;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/**
 * A deterministic uniform [0, 1) generator (mulberry32), seeded with a 32-bit integer.
 *
 * @example
 * ```ts
 * import { seededRandom } from "./rng.ts";
 * const r = seededRandom(1);
 * const x = r();
 * console.assert(x >= 0 && x < 1);
 * ```
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return function next(): number {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
