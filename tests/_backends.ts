/**
 * Run one test body on every tfjs backend. A backend that cannot load here is registered as an
 * IGNORED test (with the reason printed once), never silently passed.
 *
 * @module
 */
import { backendUnavailableReason, useBackend } from "../lib/model/backend.ts";

/** The backends every golden test runs on. */
export const BACKENDS = ["cpu", "wasm", "webgpu", "tensorflow"] as const;

/** One of {@linkcode BACKENDS}. */
export type TestBackend = typeof BACKENDS[number];

// Probed once per test module (top-level await): Deno.test must be registered synchronously.
const REASONS: Record<string, string | null> = {};
// TensorFlow's binding first: loading it after a WebGPU device exists crashes the process (segfault).
for (const b of ["tensorflow", "cpu", "wasm", "webgpu"] as const) {
  REASONS[b] = await backendUnavailableReason(b);
}

/** null when `backend` loads here, else why not. */
export function unavailableReason(backend: TestBackend): string | null {
  return REASONS[backend];
}

const reported = new Set<string>();

/**
 * Register `Deno.test({ name: "<name> [<backend>]" })` that first switches to `backend`.
 * Ignored (reported as such) when the backend is unavailable.
 */
export function backendTest(
  name: string,
  backend: TestBackend,
  fn: (t: Deno.TestContext) => void | Promise<void>,
): void {
  const reason = REASONS[backend];
  if (reason && !reported.has(backend)) {
    reported.add(backend);
    console.error(`[tests] backend '${backend}' unavailable, its tests are ignored: ${reason}`);
  }
  // WebGPU and the TensorFlow binding keep async ops/resources alive across tests in Deno.
  const lax = backend === "webgpu" || backend === "tensorflow";
  Deno.test({
    name: `${name} [${backend}]`,
    ignore: reason !== null,
    sanitizeOps: !lax,
    sanitizeResources: !lax,
    fn: async (t) => {
      await useBackend(backend);
      await fn(t);
    },
  });
}

/** Register `name` once per backend of {@linkcode BACKENDS}. */
export function allBackendsTest(
  name: string,
  fn: (backend: TestBackend, t: Deno.TestContext) => void | Promise<void>,
): void {
  for (const b of BACKENDS) backendTest(name, b, (t) => fn(b, t));
}
