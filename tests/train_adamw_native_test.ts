// The C AdamW loop (lib/train/_adamw_native.ts) against the JavaScript loop it replaces: the same bits.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { firstUpdateRange, type HostStep, updateRange } from "../lib/train/_adamw_host.ts";
import { type NativeAdamw, nativeAdamwReason, openNativeAdamw } from "../lib/train/_adamw_native.ts";

/** Runs `f` with the loop open (null where it does not build), closing it after. */
function withNative(f: (native: NativeAdamw | null) => void): void {
  const handle = openNativeAdamw();
  try {
    f(handle?.update ?? null);
  } finally {
    handle?.close();
  }
}

function hasCompiler(): boolean {
  try {
    return new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

// A seeded generator, so that a failure can be replayed.
function filled(n: number, seed: number, scale: number, positive = false): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 2 ** 32 - 0.5;
    a[i] = positive ? Math.abs(u) * scale : u * scale;
  }
  return a;
}

/** Index and values of the first element where two arrays differ in their bits, or null. */
function firstDifference(a: Float32Array, b: Float32Array): string | null {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length),
    ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) if (ua[i] !== ub[i]) return `element ${i}: ${a[i]} vs ${b[i]}`;
  return null;
}

Deno.test("native AdamW: builds wherever a C compiler is installed", () => {
  if (!hasCompiler()) return; // the JavaScript loop is used; nothing to check
  withNative((native) =>
    assert(native !== null, `the native AdamW loop did not build: ${nativeAdamwReason()}`)
  );
});

Deno.test("native AdamW: the same bits as the JavaScript loop (first and later steps, in place or not)", () =>
  withNative((native) => {
    if (!native) return; // no compiler here: nothing to compare
    // An odd length: the vector loops' tails run too. Gradients with zeros and large values.
    const n = 100_003;
    const g = filled(n, 1, 4);
    for (let i = 0; i < n; i += 97) g[i] = 0;
    g[5] = 3e4;
    const steps: HostStep[] = [
      {
        b1: 0.9,
        b2: 0.999,
        eps: 1e-8,
        stepSize: 1e-3 / 0.1,
        bc2Sqrt: Math.sqrt(0.001),
        keep: 1 - 1e-5,
        scale: 1,
      },
      {
        b1: 0.9,
        b2: 0.95,
        eps: 1e-6,
        stepSize: 2e-5 / 0.19,
        bc2Sqrt: Math.sqrt(1 - 0.95 ** 2),
        keep: 1 - 2e-5 * 0.01,
        scale: Math.fround(0.123),
      },
    ];
    for (const k of steps) {
      for (const first of [true, false]) {
        for (const inPlace of [true, false]) {
          const p = filled(n, 2, 0.2);
          const m = first ? new Float32Array(n) : filled(n, 3, 0.01);
          const v = first ? new Float32Array(n) : filled(n, 4, 1e-3, true);
          const js = { p: p.slice(), to: new Float32Array(n), m: m.slice(), v: v.slice() };
          const c = { p: p.slice(), to: new Float32Array(n), m: m.slice(), v: v.slice() };
          (first ? firstUpdateRange : updateRange)(js.p, inPlace ? js.p : js.to, js.m, js.v, g, k);
          native(c.p, inPlace ? c.p : c.to, c.m, c.v, g, k, first);
          const label = `scale ${k.scale}, first ${first}, in place ${inPlace}`;
          for (const key of ["p", "to", "m", "v"] as const) {
            assertEquals(firstDifference(js[key], c[key]), null, `${label}: ${key} differs`);
          }
          assert((inPlace ? js.p : js.to).some((x, i) => x !== p[i]), `${label}: the update changed nothing`);
        }
      }
    }
  }));

Deno.test("native AdamW: views into larger buffers update only their own range", () =>
  withNative((native) => {
    if (!native) return;
    const n = 1000;
    const p = filled(3 * n, 5, 0.2), m = new Float32Array(3 * n), v = new Float32Array(3 * n);
    const g = filled(n, 6, 1);
    const before = p.slice();
    const k: HostStep = { b1: 0.9, b2: 0.95, eps: 1e-8, stepSize: 0.01, bc2Sqrt: 0.3, keep: 1, scale: 1 };
    const at = (a: Float32Array) => a.subarray(n, 2 * n);
    native(at(p), at(p), at(m), at(v), g, k, true);
    assertEquals(firstDifference(p.subarray(0, n), before.subarray(0, n)), null);
    assertEquals(firstDifference(p.subarray(2 * n), before.subarray(2 * n)), null);
    assert(m.subarray(0, n).every((x) => x === 0) && m.subarray(2 * n).every((x) => x === 0));
    const ref = before.slice(n, 2 * n), rm = new Float32Array(n), rv = new Float32Array(n);
    firstUpdateRange(ref, ref, rm, rv, g, k);
    assertEquals(firstDifference(at(p), ref), null);
  }));
