/**
 * The key/value cache of KV-cached decoding: per layer, the keys and values of every token seen so
 * far, plus their attention mask.
 *
 * @module
 */
import { tf } from "../util/deps.ts";
import type { ModelConfig } from "./types.ts";

/** Per-layer keys/values of the tokens seen so far, and their attention mask. */
export interface KVCache {
  /** `[B, numKeyValueHeads, S, headDim]` per layer (after RoPE). */
  keys: (tf.Tensor4D | null)[];
  /** `[B, numKeyValueHeads, S, headDim]` per layer. */
  values: (tf.Tensor4D | null)[];
  /** `[B, S]` float32, 1 = real token. null before the first step. */
  mask: tf.Tensor2D | null;
  /** The output matrix transposed `[H, V]`, made once per generation where that is faster (wasm). */
  lmHeadT?: tf.Tensor2D | null;
  /**
   * When set, every decoding step's positions are below it (the caller knows: `generate` sets it
   * from the prompt lengths and `maxNewTokens`), so a step may take its rotary cos/sin from a table
   * of positions `0 .. ropeLimit - 1` made once, instead of computing them anew.
   */
  ropeLimit?: number;
  /** That table, `[ropeLimit, headDim]` cosines and sines, made on the first step. */
  ropeTable?: { cos: tf.Tensor2D; sin: tf.Tensor2D } | null;
}

/** A fresh, empty KV cache for `config`. */
export function emptyCache(config: ModelConfig): KVCache {
  return {
    keys: new Array(config.numHiddenLayers).fill(null),
    values: new Array(config.numHiddenLayers).fill(null),
    mask: null,
  };
}

/** Free a cache's tensors. */
export function disposeCache(cache: KVCache): void {
  for (const t of [...cache.keys, ...cache.values, cache.mask, cache.lmHeadT]) t?.dispose();
  if (cache.ropeTable) tf.dispose([cache.ropeTable.cos, cache.ropeTable.sin]);
  cache.ropeTable = null;
  cache.lmHeadT = null;
  cache.keys.fill(null);
  cache.values.fill(null);
  cache.mask = null;
}

/** Reorder / repeat a cache's batch rows (`rows[i]` = the old row that new row i copies). */
export function selectCacheRows(cache: KVCache, rows: number[]): void {
  const idx = tf.tensor1d(rows, "int32");
  const pick = <T extends tf.Tensor>(t: T | null): T | null => {
    if (!t) return t;
    const out = tf.gather(t, idx, 0) as T;
    t.dispose();
    return out;
  };
  cache.keys = cache.keys.map(pick);
  cache.values = cache.values.map(pick);
  cache.mask = pick(cache.mask);
  idx.dispose();
}
