/**
 * AdamW's host loop in C, compiled on first use and called through Deno's FFI.
 *
 * The JavaScript loop of `_adamw_host.ts` runs at about 6 ns per element on one core (float64 scalar
 * math: a division and a square root per element); for Qwen2.5-0.5B that is 3 of the 5.5 s an SFT step
 * spends in clip + AdamW. The same loop in C, vectorised and spread over the cores with OpenMP, is bound by
 * memory instead. It computes exactly what the JavaScript loop computes, in the same order and precision
 * (float64 arithmetic, no fused multiply-add, float32 stores), so both give the same bits; the tests check
 * that.
 *
 * The source below is compiled with the machine's C compiler (`cc`, e.g. Debian's build-essential) into
 * medthink's cache folder (`$MEDTHINK_CACHE` or `~/.cache/medthink`, under `native/`), keyed by the source
 * and the processor's features (it is built for this processor: `-march=native`). Without a compiler,
 * without `--allow-ffi` / `--allow-run`, or with `MEDTHINK_NATIVE=0`, the optimizer uses the JavaScript loop.
 *
 * @module
 */
import { cacheRoot } from "../util/cache.ts";
import { env } from "../util/env.ts";
import { nativeBuildPath, permissionGranted } from "../util/native_build.ts";

/** Constants of one AdamW step (the same for every element of a parameter). */
export interface HostStep {
  b1: number;
  b2: number;
  eps: number;
  /** `lr / (1 - b1^t)`. */
  stepSize: number;
  /** `sqrt(1 - b2^t)`. */
  bc2Sqrt: number;
  /** `1 - lr * weightDecay`. */
  keep: number;
  /**
   * Factor applied to the gradient first (global-norm clipping folded into the update), already rounded
   * to float32: `fround(g * scale)` is then bit for bit the float32 product a separate `g.mul(scale)` gives.
   */
  scale: number;
}

/** The loop. `from` may be `to` (the host copy updated in place): that case has its own loop, so that
 * the compiler can vectorise both without runtime alias checks. */
const SOURCE = String.raw`
#include <math.h>
#include <stdint.h>

#define ADAMW_BODY(FROM)                                                                       \
  double gi = (float)((double)g[j] * scale);                                                   \
  double mi = FIRST ? c1 * gi : b1 * (double)m[j] + c1 * gi;                                   \
  double vi = FIRST ? c2 * gi * gi : b2 * (double)v[j] + c2 * gi * gi;                         \
  m[j] = (float)mi;                                                                            \
  v[j] = (float)vi;                                                                            \
  to[j] = (float)((double)FROM[j] * keep - stepSize * mi / (sqrt(vi) / bc2Sqrt + eps));

#define ADAMW_LOOPS(NAME, FIRST_VALUE)                                                         \
  static void NAME##_copy(const float *restrict from, float *restrict to, float *restrict m,   \
                          float *restrict v, const float *restrict g, int64_t n, double b1,    \
                          double b2, double eps, double stepSize, double bc2Sqrt, double keep, \
                          double scale) {                                                      \
    const int FIRST = FIRST_VALUE;                                                             \
    const double c1 = 1 - b1, c2 = 1 - b2;                                                     \
    _Pragma("omp parallel for simd schedule(static)")                                          \
    for (int64_t j = 0; j < n; j++) { ADAMW_BODY(from) }                                       \
  }                                                                                            \
  static void NAME##_inplace(float *restrict to, float *restrict m, float *restrict v,         \
                             const float *restrict g, int64_t n, double b1, double b2,         \
                             double eps, double stepSize, double bc2Sqrt, double keep,         \
                             double scale) {                                                   \
    const int FIRST = FIRST_VALUE;                                                             \
    const double c1 = 1 - b1, c2 = 1 - b2;                                                     \
    _Pragma("omp parallel for simd schedule(static)")                                          \
    for (int64_t j = 0; j < n; j++) { ADAMW_BODY(to) }                                         \
  }

ADAMW_LOOPS(adamw_next, 0)
ADAMW_LOOPS(adamw_first, 1)

/* One AdamW update of n elements; first != 0: the moments are still zero and are written unread. */
void medthink_adamw(const float *from, float *to, float *m, float *v, const float *g, int64_t n,
                    double b1, double b2, double eps, double stepSize, double bc2Sqrt, double keep,
                    double scale, int32_t first) {
  if (from == to) {
    if (first) adamw_first_inplace(to, m, v, g, n, b1, b2, eps, stepSize, bc2Sqrt, keep, scale);
    else adamw_next_inplace(to, m, v, g, n, b1, b2, eps, stepSize, bc2Sqrt, keep, scale);
  } else {
    if (first) adamw_first_copy(from, to, m, v, g, n, b1, b2, eps, stepSize, bc2Sqrt, keep, scale);
    else adamw_next_copy(from, to, m, v, g, n, b1, b2, eps, stepSize, bc2Sqrt, keep, scale);
  }
}
`;

/** `-ffp-contract=off`: no fused multiply-add, so the C loop rounds as JavaScript does. `-fno-math-errno`
 * lets `sqrt` vectorise (it changes no value). `-z nodelete`: see {@linkcode openNativeAdamw}. */
const FLAGS = [
  "-O3",
  "-march=native",
  "-ffp-contract=off",
  "-fno-math-errno",
  "-fopenmp",
  "-shared",
  "-fPIC",
  "-Wl,-z,nodelete",
];

/** Flags of a second attempt when {@linkcode FLAGS} fail (no OpenMP, no `-z nodelete`, no `-march=native`). */
const FALLBACK_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC"];

const SYMBOLS = {
  medthink_adamw: {
    parameters: [
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "i64",
      "f64",
      "f64",
      "f64",
      "f64",
      "f64",
      "f64",
      "f64",
      "i32",
    ],
    result: "void",
  },
} as const;

/** Updates `to`, `m`, `v` from `from` (which may be `to` itself) and gradient `g`, all of one length. */
export type NativeAdamw = (
  from: Float32Array,
  to: Float32Array,
  m: Float32Array,
  v: Float32Array,
  g: Float32Array,
  k: HostStep,
  first: boolean,
) => void;

/** The compiled loop, open until {@linkcode NativeAdamwHandle.close} (a step's worth of calls). */
export interface NativeAdamwHandle {
  update: NativeAdamw;
  /** Closes Deno's handle on the library (which stays loaded: it is linked `-z nodelete`, see below). */
  close(): void;
}

let built: { lib: string; reason: string } | undefined;

/**
 * Opens the compiled loop, or gives `null` where it cannot be had ({@linkcode nativeAdamwReason} says
 * why). Compiles at the first call in a process where the cache has no build for this source and
 * processor.
 *
 * Callers open it for a step and close it after: `Deno.test`'s resource sanitizer counts an open library
 * as a leak of whichever test opened it first (a user's test of their training loop included). The
 * library is linked with `-z nodelete`, so closing never unmaps code that OpenMP's worker threads still
 * run, and the next open is a lookup of the loaded library.
 */
export function openNativeAdamw(): NativeAdamwHandle | null {
  built ??= build();
  if (!built.lib) return null;
  let dylib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    dylib = Deno.dlopen(built.lib, SYMBOLS);
  } catch (e) {
    built = { lib: "", reason: `cannot load ${built.lib}: ${(e as Error).message}` };
    return null;
  }
  const f = dylib.symbols.medthink_adamw;
  const update: NativeAdamw = (from, to, m, v, g, k, first) => {
    const n = g.length;
    if (from.length !== n || to.length !== n || m.length !== n || v.length !== n) {
      throw new Error(
        `native AdamW: arrays of different lengths (${[from, to, m, v, g].map((a) => a.length)}).`,
      );
    }
    if (n === 0) return;
    // The same memory in the same place means in place; Deno passes each view's own start address.
    const inPlace = from.buffer === to.buffer && from.byteOffset === to.byteOffset;
    f(
      inPlace ? to : from,
      to,
      m,
      v,
      g,
      BigInt(n),
      k.b1,
      k.b2,
      k.eps,
      k.stepSize,
      k.bc2Sqrt,
      k.keep,
      k.scale,
      first ? 1 : 0,
    );
  };
  return { update, close: () => dylib.close() };
}

/** Why {@linkcode openNativeAdamw} gives `null` (empty when it does not). */
export function nativeAdamwReason(): string {
  built ??= build();
  return built.reason;
}

/** The path of the built library (compiled now if needed), or why there is none. */
function build(): { lib: string; reason: string } {
  const none = (reason: string) => ({ lib: "", reason });
  if (env("MEDTHINK_NATIVE") === "0") return none("MEDTHINK_NATIVE=0");
  if (Deno.build.os === "windows") return none("not built on Windows");
  let dir: string;
  try {
    dir = `${cacheRoot()}/native`;
  } catch (e) {
    return none((e as Error).message);
  }
  const lib = nativeBuildPath(dir, "adamw", SOURCE, FLAGS);
  if (!permissionGranted({ name: "ffi" })) return none("no --allow-ffi");
  if (!permissionGranted({ name: "read", path: dir })) return none(`no read permission for ${dir}`);
  try {
    Deno.statSync(lib);
    return { lib, reason: "" };
  } catch {
    const why = compile(dir, lib);
    return why ? none(why) : { lib, reason: "" };
  }
}

/** Builds `lib` from {@linkcode SOURCE}; returns why it could not (empty on success). */
function compile(dir: string, lib: string): string {
  const cc = env("CC") ?? "cc";
  if (!permissionGranted({ name: "run", command: cc })) return `no --allow-run for the C compiler (${cc})`;
  if (!permissionGranted({ name: "write", path: dir })) return `no write permission for ${dir}`;
  try {
    Deno.mkdirSync(dir, { recursive: true });
    // A name of its own per process: concurrent first uses (parallel test files) each build, one renames last.
    const tmp = `${lib}.${Deno.pid}.${Date.now()}`;
    Deno.writeTextFileSync(`${tmp}.c`, SOURCE);
    const run = (flags: string[]) =>
      new Deno.Command(cc, {
        args: [...flags, `${tmp}.c`, "-o", tmp, "-lm"],
        stdout: "piped",
        stderr: "piped",
      })
        .outputSync();
    let out = run(FLAGS);
    // A compiler without OpenMP or GNU ld's options (Apple's clang): the same loop on one core, vectorised
    // for the baseline of the processor. Without OpenMP's threads the library can be unloaded safely.
    if (!out.success) out = run(FALLBACK_FLAGS);
    Deno.removeSync(`${tmp}.c`);
    if (!out.success) {
      try {
        Deno.removeSync(tmp);
      } catch { /* not written */ }
      const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(0, 3).join(" ");
      return `${cc} failed: ${err}`;
    }
    Deno.renameSync(tmp, lib);
    return "";
  } catch (e) {
    return `cannot build ${lib} with ${cc}: ${(e as Error).message}`;
  }
}
