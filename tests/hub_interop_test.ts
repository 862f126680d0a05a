// medthink's Hub cache and huggingface_hub's are one: (a) a snapshot medthink downloaded is found by
// huggingface_hub offline (same paths), (b) one huggingface_hub downloaded from the same loopback Hub is
// loaded by medthink with no request, and (c) both write the same cache layout. Runs tests/data/hub_interop.py
// with python3's huggingface_hub, installed into a venv under the test's temp dir (from the local wheel
// store) when python3 lacks it; without either the tests are reported IGNORED with the reason.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { folderFiles, HubServer } from "./_hub_server.ts";
import { QWEN2_TINY } from "./_model_fixtures.ts";
import { loadModel } from "../lib/model/load.ts";
import { resolveModelDir } from "../lib/hub/models.ts";

const TOOL = new URL("./data/hub_interop.py", import.meta.url).pathname;
const TMP = await Deno.makeTempDir({ prefix: "medthink-hub-interop-" });

async function run(cmd: string[], env: Record<string, string> = {}): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await new Deno.Command(cmd[0], { args: cmd.slice(1), env, stdout: "piped", stderr: "piped" })
      .output();
    const dec = new TextDecoder();
    return { ok: r.success, out: dec.decode(r.stdout) + dec.decode(r.stderr) };
  } catch (e) {
    return { ok: false, out: (e as Error).message };
  }
}

/** A python3 with huggingface_hub, or the reason there is none (probed once: Deno.test registers synchronously). */
async function findPython(): Promise<{ python?: string; reason?: string }> {
  if ((await run(["python3", "-c", "import huggingface_hub"])).ok) return { python: "python3" };
  const venv = `${TMP}/venv`;
  const made = await run(["python3", "-m", "venv", venv]);
  if (!made.ok) {
    return {
      reason: `python3 -m venv failed (apt-get install python3-venv): ${made.out.trim().split("\n").pop()}`,
    };
  }
  // The local wheel store as the index (no request to a registry that cannot be reached), else pip's own config.
  let index: string[] = [];
  try {
    if (Deno.statSync("/opt/pypi/simple").isDirectory) index = ["--index-url", "file:///opt/pypi/simple"];
  } catch { /* pip's configuration decides */ }
  const pip = await run([`${venv}/bin/pip`, "install", "-q", ...index, "huggingface_hub"]);
  if (!pip.ok) return { reason: `pip install huggingface_hub failed: ${pip.out.trim().split("\n").pop()}` };
  return { python: `${venv}/bin/python` };
}

const { python, reason } = await findPython();
if (reason) console.error(`hub_interop_test: IGNORED, ${reason}`);

const FILES = Object.fromEntries(
  Object.entries(folderFiles(QWEN2_TINY)).filter(([p]) => !p.endsWith("golden.json")),
);

async function interop(
  mode: string,
  args: string[],
  env: Record<string, string>,
): Promise<Record<string, unknown>> {
  const r = await run([python!, TOOL, mode, ...args], env);
  assert(r.ok, `hub_interop.py ${mode} failed:\n${r.out}`);
  return JSON.parse(r.out.trim().split("\n").pop()!);
}

/** Paths under `dir` -> `file` or `-> link target`, without huggingface_hub's bookkeeping (locks, tree listings). */
function layout(dir: string, prefix = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of Deno.readDirSync(dir)) {
    const rel = prefix + e.name;
    if (rel === ".locks" || rel === "trees" || rel === "CACHEDIR.TAG") continue;
    const p = `${dir}/${e.name}`;
    if (e.isSymlink) out[rel] = `-> ${Deno.readLinkSync(p)}`;
    else if (e.isDirectory) Object.assign(out, layout(p, `${rel}/`));
    else out[rel] = "file";
  }
  return out;
}

function withEnv(vars: Record<string, string>): () => void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  return () => {
    for (const [k, v] of Object.entries(saved)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  };
}

Deno.test({
  name:
    "hub interop: huggingface_hub finds medthink's snapshot offline, medthink loads huggingface_hub's with no request, same layout",
  ignore: !python,
  async fn() {
    const hub = new HubServer();
    const sha = hub.addCommit("model", "test-org/qwen2-tiny", {
      ...FILES,
      "pytorch_model.bin": new TextEncoder().encode("pickle"),
    });
    const ours = `${TMP}/ours`, theirs = `${TMP}/theirs`;
    const restore = withEnv({ HF_ENDPOINT: hub.url, HF_HUB_CACHE: ours, HF_HUB_DISABLE_PROGRESS_BARS: "1" });
    try {
      // (a) medthink downloads; huggingface_hub, offline, returns the same snapshot and files.
      const dir = await resolveModelDir("test-org/qwen2-tiny");
      const shard = "model-00001-of-00002.safetensors";
      const env = { HF_ENDPOINT: hub.url };
      const found = await interop("find", [
        "--cache",
        ours,
        "--repo",
        "test-org/qwen2-tiny",
        "--file",
        "config.json",
        "--file",
        shard,
      ], env);
      assertEquals(found.snapshot, dir);
      assertEquals(found.files, { "config.json": `${dir}/config.json`, [shard]: `${dir}/${shard}` });
      assertEquals(found.cached, found.files);
      const byHash = await interop("find", [
        "--cache",
        ours,
        "--repo",
        "test-org/qwen2-tiny",
        "--revision",
        sha,
      ], env);
      assertEquals(byHash.snapshot, dir);

      // (b) huggingface_hub downloads from the same server; medthink loads it without a request.
      const allow = ["config.json", "*.safetensors", "*.safetensors.index.json", "README.md"];
      const got = await interop("download", [
        "--cache",
        theirs,
        "--repo",
        "test-org/qwen2-tiny",
        ...allow.flatMap((a) => ["--allow", a]),
      ], env);
      assertEquals(got.snapshot, `${theirs}/models--test-org--qwen2-tiny/snapshots/${sha}`);
      Deno.env.set("HF_HUB_CACHE", theirs);
      const before = hub.requests.length;
      const model = await loadModel("test-org/qwen2-tiny", { backend: "cpu" });
      assertEquals(model.dir, got.snapshot);
      assertEquals(
        hub.requests.length,
        before,
        "medthink made a request for a snapshot huggingface_hub had cached",
      );

      // (c) The same layout: blobs, refs and relative links (huggingface_hub also keeps .locks and trees/;
      // medthink leaves out README.md, which it does not need).
      const a = layout(`${ours}/models--test-org--qwen2-tiny`);
      const b = layout(`${theirs}/models--test-org--qwen2-tiny`);
      const readme = Object.keys(b).filter((k) => k.endsWith("/README.md"));
      for (const k of readme) {
        delete b[`blobs/${b[k].split("/").pop()}`];
        delete b[k];
      }
      assertEquals(a, b);
      assertEquals(
        Deno.readTextFileSync(`${ours}/models--test-org--qwen2-tiny/refs/main`),
        Deno.readTextFileSync(`${theirs}/models--test-org--qwen2-tiny/refs/main`),
      );
    } finally {
      restore();
      await hub.close();
    }
  },
});

Deno.test({
  name: "hub interop: cleanup",
  sanitizeResources: false,
  async fn() {
    await Deno.remove(TMP, { recursive: true });
  },
});
