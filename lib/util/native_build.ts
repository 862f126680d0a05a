/**
 * What the native (C) helpers share: whether a permission is granted without prompting, and the name of a
 * build in medthink's cache, keyed by the source, the compiler flags and the processor (builds use
 * `-march=native`, so a cache shared between machines must never hand one processor another's build).
 *
 * @module
 */

/** Whether `desc` is granted now (never prompts; false where the query itself is refused). */
export function permissionGranted(desc: Deno.PermissionDescriptor): boolean {
  try {
    return Deno.permissions.querySync(desc).state === "granted";
  } catch {
    return false;
  }
}

/** FNV-1a, 32 bits, as 8 hex digits. */
function fnv(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, "0");
}

/** The processor's model and feature flags (Linux); the build target elsewhere. */
function cpuKey(): string {
  try {
    const info = Deno.readTextFileSync("/proc/cpuinfo");
    const line = (name: string) => info.match(new RegExp(`^${name}\\s*:(.*)$`, "m"))?.[1]?.trim() ?? "";
    return `${line("model name")}|${line("flags")}`;
  } catch {
    return Deno.build.target;
  }
}

/**
 * The path `dir/<name>-<hash>.so` of the build of `source` with `flags` for this processor.
 *
 * @example
 * ```ts ignore
 * import { nativeBuildPath } from "./native_build.ts";
 * nativeBuildPath("/cache/native", "gemv", "int f(void){return 1;}", ["-O3"]); // "/cache/native/gemv-1a2b3c4d.so"
 * ```
 */
export function nativeBuildPath(dir: string, name: string, source: string, flags: readonly string[]): string {
  return `${dir}/${name}-${fnv(source + flags.join(" ") + cpuKey())}.so`;
}
