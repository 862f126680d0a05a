/**
 * The one rule for where medthink caches things (the tiny models, downloaded checkpoints, the
 * TensorFlow binding set up by `scripts/setup_tensorflow.ts`): every reader and writer asks here, so
 * that they agree.
 *
 * @module
 */
import { env } from "./env.ts";

/**
 * The cache root: `$MEDTHINK_CACHE`, else `$XDG_CACHE_HOME/medthink`, else `~/.cache/medthink`
 * (`%USERPROFILE%\.cache\medthink` on Windows).
 *
 * @example
 * ```ts
 * import { cacheRoot } from "./cache.ts";
 * console.assert(cacheRoot().length > 0);
 * ```
 */
export function cacheRoot(): string {
  const own = env("MEDTHINK_CACHE");
  if (own) return own;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg.replace(/[\\/]$/, "")}/medthink`;
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) throw new Error("Cannot find a cache folder: set MEDTHINK_CACHE (or HOME).");
  return `${home}/.cache/medthink`;
}
