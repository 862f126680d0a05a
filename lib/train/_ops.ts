/**
 * Many-input ops that stay correct on every backend: tfjs-backend-webgpu 4.22 silently returns wrong
 * values from `concat` and `addN` with 8 or more inputs (measured under Deno on Mesa's Vulkan: one
 * storage buffer per input, and the 8-buffer limit is exceeded). These combine at most 6 at a time.
 *
 * @module
 */
import { tf } from "../deps.ts";

const GROUP = 6;

/** `tf.concat(parts, axis)` in groups of at most 6 (tidy: the intermediate pieces are freed). */
export function concatMany<T extends tf.Tensor>(parts: T[], axis = 0): T {
  if (parts.length === 1) return parts[0].clone() as T;
  return tf.tidy(() => {
    let level: tf.Tensor[] = parts;
    while (level.length > 1) {
      const next: tf.Tensor[] = [];
      for (let i = 0; i < level.length; i += GROUP) {
        const g = level.slice(i, i + GROUP);
        next.push(g.length === 1 ? g[0] : tf.concat(g, axis));
      }
      level = next;
    }
    return level[0] as T;
  });
}

/** `tf.addN(xs)` in groups of at most 6. */
export function addMany<T extends tf.Tensor>(xs: T[]): T {
  if (xs.length === 1) return xs[0].clone() as T;
  return tf.tidy(() => {
    let level: tf.Tensor[] = xs;
    while (level.length > 1) {
      const next: tf.Tensor[] = [];
      for (let i = 0; i < level.length; i += GROUP) {
        const g = level.slice(i, i + GROUP);
        next.push(g.length === 1 ? g[0] : tf.addN(g));
      }
      level = next;
    }
    return level[0] as T;
  });
}
