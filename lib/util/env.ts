/**
 * Reading environment variables where the permission may be missing (a browser-like sandbox or
 * `deno run` without `--allow-env`): a missing permission reads as an unset variable.
 *
 * @module
 */

/**
 * The value of environment variable `name`, or `undefined` when it is unset, empty, or not readable.
 *
 * @example
 * ```ts
 * import { env } from "./env.ts";
 * console.assert(env("MEDTHINK_SURELY_UNSET_VARIABLE") === undefined);
 * ```
 */
export function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}
