/**
 * Checking the keys of an options object (or a YAML section) against the keys a function knows, so
 * that a misspelt or foreign option is an error instead of silently running on a default.
 *
 * @module
 */

/** Levenshtein distance, for "did you mean" suggestions. */
function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0];
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j];
      prev[j] = Math.min(prev[j] + 1, prev[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length];
}

/** Lower-case without separators: `learning_rate`, `learning-rate` and `learningRate` all become `learningrate`. */
function squash(key: string): string {
  return key.toLowerCase().replace(/[-_\s]/g, "");
}

/** The known key closest to `key` (same letters ignoring case and separators, or within a small edit distance). */
export function closestKey(key: string, known: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    if (squash(k) === squash(key)) return k;
    const d = editDistance(squash(k), squash(key));
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(key.length / 4)) ? best : undefined;
}

/**
 * Throw when `options` has a key that `known` lacks: one sentence naming the key, where it was given
 * and, when one is close, the intended key. `known` is a list of keys or an object whose keys are
 * the known ones (a defaults object). Keys whose value is `undefined` are checked too.
 *
 * @example
 * ```ts
 * import { checkOptionKeys } from "./options.ts";
 * let message = "";
 * try {
 *   checkOptionKeys({ learning_rate: 0.5 }, ["learningRate", "maxSteps"], "sft options");
 * } catch (e) {
 *   message = (e as Error).message;
 * }
 * console.assert(message.includes("did you mean 'learningRate'"));
 * ```
 */
export function checkOptionKeys(
  options: object | null | undefined,
  known: Iterable<string> | Record<string, unknown>,
  where: string,
): void {
  if (options === null || options === undefined) return;
  if (typeof options !== "object" || Array.isArray(options)) {
    throw new Error(
      `${where} must be an object of named settings, not ${
        Array.isArray(options) ? "a list" : typeof options
      }.`,
    );
  }
  const keys = new Set(
    Symbol.iterator in Object(known)
      ? [...(known as Iterable<string>)]
      : Object.keys(known as Record<string, unknown>),
  );
  for (const key of Object.keys(options)) {
    if (keys.has(key)) continue;
    const near = closestKey(key, keys);
    throw new Error(
      `Unknown key '${key}' in ${where}` +
        (near ? `: did you mean '${near}'?` : `; known keys: ${[...keys].sort().join(", ")}.`),
    );
  }
}
