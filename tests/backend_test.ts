import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
  rejects as assertRejects,
} from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import { embeddingLookup } from "../lib/model/qwen2.ts";
import { BACKENDS, backendTest, unavailableReason } from "./_backends.ts";

// ---------------------------------------------------------------------------------------------------
// selection

for (const b of BACKENDS) {
  backendTest("useBackend selects the backend and computes a matmul", b, async () => {
    assertEquals(tf.getBackend(), b);
    const a = tf.tensor2d([[1, 2], [3, 4]]);
    const c = tf.matMul(a, a);
    // Async read: synchronous reads fail on webgpu under Deno.
    assertEquals(Array.from(await c.data()), [7, 10, 15, 22]);
    tf.dispose([a, c]);
  });
}

Deno.test({
  name: "auto picks tensorflow when its binding loads, else wasm",
  ignore: unavailableReason("wasm") !== null && unavailableReason("tensorflow") !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const expected = unavailableReason("tensorflow") === null ? "tensorflow" : "wasm";
    assertEquals(await useBackend("auto"), expected);
    assertEquals(tf.getBackend(), expected);
  },
});

Deno.test("MEDTHINK_BACKEND chooses the backend when no name is given", async () => {
  const before = Deno.env.get("MEDTHINK_BACKEND");
  Deno.env.set("MEDTHINK_BACKEND", "cpu");
  try {
    assertEquals(await useBackend(), "cpu");
    assertEquals(tf.getBackend(), "cpu");
  } finally {
    if (before === undefined) Deno.env.delete("MEDTHINK_BACKEND");
    else Deno.env.set("MEDTHINK_BACKEND", before);
  }
});

Deno.test("an unknown backend is a clear error listing the choices", async () => {
  await assertRejects(
    () => useBackend("cuda"),
    /^Error: Unknown backend 'cuda': choose one of auto, tensorflow, wasm, webgpu, cpu\.$/,
  );
});

Deno.test("an unavailable backend's reason says how to get it", () => {
  const tfReason = unavailableReason("tensorflow");
  if (tfReason) assertMatch(tfReason, /deno task setup:tensorflow/);
  const gpuReason = unavailableReason("webgpu");
  if (gpuReason) assertMatch(gpuReason, /mesa-vulkan-drivers/);
  assertEquals(unavailableReason("cpu"), null);
});

async function denoNpmCache(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"], stdout: "piped" }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).npmCache;
}

// A child Deno outside the project (no deno.json: npm packages come from Deno's global cache, as for
// users who import mod.ts by URL). Returns its exit code and output.
async function child(code: string, args: string[], envs: Record<string, string> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "medthink-backend-test-" });
  try {
    const file = `${dir}/child.ts`;
    const backendUrl = new URL("../lib/model/backend.ts", import.meta.url).href;
    await Deno.writeTextFile(file, code.replaceAll("BACKEND_URL", backendUrl));
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...args, "--no-check", "--node-modules-dir=none", file],
      cwd: dir,
      env: envs,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "tensorflow without its binding: one clear error, and no duplicate kernel registrations",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // Denying FFI to the two bindings makes loading them fail, as on a machine where they were never
    // built; with MEDTHINK_TFJS_GPU=1 both packages are tried and both register kernels before failing.
    const pkgs = `${await denoNpmCache()}/registry.npmjs.org/@tensorflow`;
    const bindings = ["tfjs-node", "tfjs-node-gpu"].map((p) =>
      `${pkgs}/${p}/4.22.0/lib/napi-v8/tfjs_binding.node`
    );
    const r = await child(
      `import { useBackend } from "BACKEND_URL";
try { await useBackend("tensorflow"); console.log("LOADED"); } catch (e) { console.log("ERR " + e.message); }`,
      ["-A", `--deny-ffi=${bindings.join(",")}`],
      { MEDTHINK_TFJS_GPU: "1" },
    );
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, /^ERR The 'tensorflow' backend is not available \(.*\): build its binding with/m);
    assertMatch(r.stdout, /deno task setup:tensorflow/);
    assertMatch(r.stdout, /@tensorflow\/tfjs-node-gpu: /);
    assert(
      !/already registered/.test(r.stderr),
      `duplicate kernel registrations:\n${r.stderr.slice(0, 500)}`,
    );
  },
});

Deno.test({
  name:
    "tensorflow also loads outside the project (Deno's global npm cache), as for URL imports; threads option",
  ignore: unavailableReason("tensorflow") !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const r = await child(
      `import { useBackend } from "BACKEND_URL";
console.log("BACKEND " + await useBackend("auto", { threads: 1 }));
console.log("THREADS " + Deno.env.get("TF_NUM_INTRAOP_THREADS") + " " + Deno.env.get("TF_NUM_INTEROP_THREADS"));`,
      ["-A"],
      { TF_NUM_INTRAOP_THREADS: "", TF_NUM_INTEROP_THREADS: "" }, // empty: unset for our purpose
    );
    assertEquals(r.code, 0, r.stderr);
    assertMatch(r.stdout, /^BACKEND tensorflow$/m);
    // The thread option reaches TensorFlow through its environment, set before the library loads.
    assertMatch(r.stdout, /^THREADS 1 1$/m);
    assert(!/already registered/.test(r.stderr), r.stderr.slice(0, 500));
  },
});

// ---------------------------------------------------------------------------------------------------
// gradients: embedding lookup + matmul + log-softmax, against a float64 reference computed here

function assertClose(got: number, want: number, tol: number, what: string): void {
  assert(Math.abs(got - want) <= tol, `${what}: got ${got}, want ${want} (tolerance ${tol})`);
}

const V = 11, H = 6;
const IDS = [[3, 7, 3], [0, 10, 7]]; // repeated ids: their embedding gradients must add up
const TARGETS = [[7, 3, 0], [10, 10, 1]];

function fixedValues(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.fround((s / 2 ** 32 - 0.5) * 2);
  });
}
const EMB = fixedValues(V * H, 1);
const OUT = fixedValues(H * V, 2);

/** Mean cross-entropy and its gradients in float64, by hand. */
function reference(): { loss: number; gEmb: number[]; gOut: number[] } {
  const gEmb = new Array(V * H).fill(0), gOut = new Array(H * V).fill(0);
  const rows = IDS.flat(), targets = TARGETS.flat(), n = rows.length;
  let loss = 0;
  rows.forEach((id, r) => {
    const h = EMB.slice(id * H, id * H + H);
    const z = Array.from({ length: V }, (_, v) => h.reduce((s, hi, i) => s + hi * OUT[i * V + v], 0));
    const m = Math.max(...z);
    const lse = m + Math.log(z.reduce((s, zi) => s + Math.exp(zi - m), 0));
    loss -= (z[targets[r]] - lse) / n;
    const dz = z.map((zi, v) => (Math.exp(zi - lse) - (v === targets[r] ? 1 : 0)) / n);
    for (let i = 0; i < H; i++) {
      for (let v = 0; v < V; v++) {
        gOut[i * V + v] += h[i] * dz[v];
        gEmb[id * H + i] += OUT[i * V + v] * dz[v];
      }
    }
  });
  return { loss, gEmb, gOut };
}

for (const b of BACKENDS) {
  backendTest("gradient of embedding + matmul + log-softmax matches float64", b, async () => {
    const ref = reference();
    const emb = tf.tensor2d(EMB, [V, H]), out = tf.tensor2d(OUT, [H, V]);
    const ids = tf.tensor2d(IDS, undefined, "int32");
    const mask = tf.oneHot(tf.tensor1d(TARGETS.flat(), "int32"), V).reshape([2, 3, V]);
    const f = (e: tf.Tensor, o: tf.Tensor) => {
      const h = embeddingLookup(e as tf.Tensor2D, ids) as tf.Tensor3D; // [2, 3, H]
      const logits = tf.matMul(h.reshape([6, H]), o as tf.Tensor2D).reshape([2, 3, V]);
      return tf.neg(tf.mean(tf.sum(tf.mul(tf.logSoftmax(logits), mask), -1)));
    };
    const before = tf.memory().numTensors;
    const { value, grads } = tf.valueAndGrads(f)([emb, out]);
    const [loss, gEmb, gOut] = [await value.data(), await grads[0].data(), await grads[1].data()];
    tf.dispose([value, ...grads]);
    assertEquals(tf.memory().numTensors, before, "the gradient computation leaked tensors");
    assertClose(loss[0], ref.loss, 1e-5, `loss on ${b}`);
    gEmb.forEach((g, i) => assertClose(g, ref.gEmb[i], 1e-5, `d loss / d emb[${i}] on ${b}`));
    gOut.forEach((g, i) => assertClose(g, ref.gOut[i], 1e-5, `d loss / d out[${i}] on ${b}`));
    tf.dispose([emb, out, ids, mask]);
  });
}
