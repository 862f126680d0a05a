/**
 * File-system checks shared by the loaders, caches and scripts.
 *
 * @module
 */

/**
 * Whether `path` exists (file or folder). Any error of `stat` (not found, or no read permission)
 * reads as "no": callers then fall back to their default (the embedded tokenizer, a fresh download).
 *
 * @example
 * ```ts
 * import { exists } from "./fs.ts";
 * console.assert(!(await exists("/surely/not/here/medthink")));
 * ```
 */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Synchronous {@linkcode exists}, for the synchronous loaders (dataset paths, tokenizer files).
 *
 * @example
 * ```ts
 * import { existsSync } from "./fs.ts";
 * console.assert(!existsSync("/surely/not/here/medthink"));
 * ```
 */
export function existsSync(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether `path` is a regular file (absent, a folder, or no read permission: false).
 *
 * @example
 * ```ts
 * import { isFileSync } from "./fs.ts";
 * console.assert(!isFileSync("/"));
 * ```
 */
export function isFileSync(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * Asynchronous {@linkcode isFileSync}.
 *
 * @example
 * ```ts
 * import { isFile } from "./fs.ts";
 * console.assert(!(await isFile("/")));
 * ```
 */
export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}
