// Models and datasets by Hub id, against a Hub on loopback (tests/_hub_server.ts): ids and revisions,
// the cache layout huggingface_hub writes, resume after a cut transfer, checksum mismatch, 404, 401,
// offline with and without a cache, datasets by id with split and config selection, no pickles fetched.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { folderFiles, gitSha1, HubServer, sha256 } from "./_hub_server.ts";
import { QWEN2_TINY } from "./_model_fixtures.ts";
import { formatHubRef, parseHubRef } from "../lib/hub/resolve.ts";
import { hubCacheDir, repoFolderName } from "../lib/hub/cache.ts";
import { resolveModelDir } from "../lib/hub/models.ts";
import { snapshotDownload } from "../lib/hub/download.ts";
import { hubDatasetFiles } from "../lib/hub/datasets.ts";
import { loadModel } from "../lib/model/load.ts";
import { ensureTinyModel } from "../lib/model/tiny.ts";
import { loadDataset } from "../lib/data/dataset.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { resolveBenchmarks } from "../lib/eval/evaluate.ts";

const enc = new TextEncoder();
const MODEL_FILES = Object.fromEntries(
  Object.entries(folderFiles(QWEN2_TINY)).filter(([p]) => !p.endsWith("golden.json")),
);
const PARQUET = Deno.readFileSync(
  new URL("../data/vqa_rad_closed/test-00000-of-00001.parquet", import.meta.url),
);

/** A fresh server with the model `test-org/qwen2-tiny` (plus a README and a pickle that must never be fetched). */
function serve(): { hub: HubServer; sha: string } {
  const hub = new HubServer();
  const sha = hub.addCommit("model", "test-org/qwen2-tiny", {
    ...MODEL_FILES,
    "pytorch_model.bin": enc.encode("pickled weights: never fetched"),
    "tokenizer_config.json": enc.encode('{"model_max_length": 32768}'),
    ".gitattributes": enc.encode("*.safetensors filter=lfs\n"),
  });
  return { hub, sha };
}

/** Run `fn` with HF_* pointing at `hub` and a fresh cache; restores the environment after. */
async function withHub<T>(
  hub: HubServer,
  fn: (cache: string) => Promise<T>,
  env: Record<string, string> = {},
) {
  const cache = await Deno.makeTempDir({ prefix: "medthink-hub-" });
  const vars = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HUB_DISABLE_PROGRESS_BARS: "1", ...env };
  const saved = Object.fromEntries(
    ["HF_HUB_OFFLINE", "HF_TOKEN", ...Object.keys(vars)].map((k) => [k, Deno.env.get(k)]),
  );
  Deno.env.delete("HF_HUB_OFFLINE");
  Deno.env.delete("HF_TOKEN");
  for (const [k, v] of Object.entries(vars)) Deno.env.set(k, v);
  try {
    return await fn(cache);
  } finally {
    for (const [k, v] of Object.entries(saved)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await Deno.remove(cache, { recursive: true });
  }
}

async function rejects(p: Promise<unknown>, parts: string[]): Promise<string> {
  try {
    await p;
  } catch (e) {
    const msg = (e as Error).message;
    for (const part of parts) assert(msg.includes(part), `"${msg}" should mention "${part}"`);
    return msg;
  }
  throw new Error(`expected an error mentioning ${parts.join(", ")}`);
}

/** Every path under `dir` with what it is: `file`, or `-> target` for a symlink. */
function tree(dir: string, prefix = ""): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isSymlink) out[prefix + e.name] = `-> ${Deno.readLinkSync(p)}`;
    else if (e.isDirectory) Object.assign(out, tree(p, `${prefix}${e.name}/`));
    else out[prefix + e.name] = "file";
  }
  return out;
}

Deno.test("hub ids: org/name, @revision, hf://datasets/ID/PATH; existing paths are never ids", () => {
  assertEquals(parseHubRef("Qwen/Qwen2.5-VL-3B-Instruct"), {
    repoType: "model",
    repoId: "Qwen/Qwen2.5-VL-3B-Instruct",
    revision: "main",
  });
  assertEquals(parseHubRef("org/name@v1.0")?.revision, "v1.0");
  assertEquals(parseHubRef("org/name@refs%2Fpr%2F3")?.revision, "refs/pr/3");
  assertEquals(
    parseHubRef("hf://datasets/UCSC-VLAA/MedVLThinker-Eval@abc/data/test-00000-of-00001.parquet"),
    {
      repoType: "dataset",
      repoId: "UCSC-VLAA/MedVLThinker-Eval",
      revision: "abc",
      path: "data/test-00000-of-00001.parquet",
    },
  );
  assertEquals(parseHubRef("tests/fixtures"), undefined); // a folder that exists
  assertEquals(parseHubRef("medthink-tiny"), undefined);
  assertEquals(parseHubRef("a/b/c"), undefined);
  assertEquals(parseHubRef("org/bad--name"), undefined);
  assertEquals(
    formatHubRef({ repoType: "dataset", repoId: "o/n", revision: "v2", path: "x.parquet" }),
    "hf://datasets/o/n@v2/x.parquet",
  );
  assertEquals(
    repoFolderName("Qwen/Qwen2.5-VL-3B-Instruct", "model"),
    "models--Qwen--Qwen2.5-VL-3B-Instruct",
  );
});

Deno.test("hub cache folder: HF_HUB_CACHE, else HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub", () => {
  const saved = ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"].map((
    k,
  ) => [k, Deno.env.get(k)]);
  try {
    for (const [k] of saved) Deno.env.delete(k!);
    Deno.env.set("XDG_CACHE_HOME", "/x");
    assertEquals(hubCacheDir(), "/x/huggingface/hub");
    Deno.env.set("HF_HOME", "/h/");
    assertEquals(hubCacheDir(), "/h/hub");
    Deno.env.set("HF_HUB_CACHE", "/c");
    assertEquals(hubCacheDir(), "/c");
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k!) : Deno.env.set(k!, v);
  }
});

Deno.test("hub: loadModel by id downloads into huggingface_hub's layout, then uses the cache without a request", async () => {
  const { hub, sha } = serve();
  try {
    await withHub(hub, async (cache) => {
      const model = await loadModel("test-org/qwen2-tiny", { backend: "cpu" });
      const local = await loadModel(QWEN2_TINY, { backend: "cpu" });
      const name = "model.layers.0.self_attn.q_proj.weight";
      assertEquals(Array.from(await model.params[name].data()), Array.from(await local.params[name].data()));
      const root = `${cache}/models--test-org--qwen2-tiny`;
      assertEquals(model.dir, `${root}/snapshots/${sha}`);
      // The layout huggingface_hub writes: refs/main, blobs named by sha256 (LFS) or git sha1, relative links.
      const expected: Record<string, string> = { "refs/main": "file" };
      for (const [p, b] of Object.entries(MODEL_FILES)) {
        if (p === "README.md") continue;
        const etag = p.endsWith(".safetensors") ? sha256(b) : gitSha1(b);
        expected[`blobs/${etag}`] = "file";
        expected[`snapshots/${sha}/${p}`] = `-> ../../blobs/${etag}`;
      }
      const tok = enc.encode('{"model_max_length": 32768}');
      expected[`blobs/${gitSha1(tok)}`] = "file";
      expected[`snapshots/${sha}/tokenizer_config.json`] = `-> ../../blobs/${gitSha1(tok)}`;
      assertEquals(tree(root), expected); // no README, no .gitattributes, no pytorch_model.bin, no .incomplete
      assertEquals(Deno.readTextFileSync(`${root}/refs/main`), sha);
      assert(
        Deno.readTextFileSync(`${cache}/CACHEDIR.TAG`).startsWith(
          "Signature: 8a477f597d28d172789f06886806bc55",
        ),
      );
      assert(!hub.requests.some((r) => r.path.endsWith(".bin")), "a pickle was requested");
      // LFS files came through the redirect to the CDN host, small ones directly.
      assert(hub.requests.some((r) => r.path.startsWith("/cdn/")));
      const before = hub.requests.length;
      assertEquals(await resolveModelDir("test-org/qwen2-tiny"), model.dir);
      assertEquals(await resolveModelDir("test-org/qwen2-tiny", { purpose: "tokenizer" }), model.dir);
      assertEquals(hub.requests.length, before, "a cached model made a request");
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: revisions by branch and by commit; the tokenizer fetches no weights", async () => {
  const { hub, sha } = serve();
  const config = JSON.parse(new TextDecoder().decode(MODEL_FILES["config.json"]));
  const v2 = hub.addCommit("model", "test-org/qwen2-tiny", {
    ...MODEL_FILES,
    "config.json": enc.encode(JSON.stringify({ ...config, rms_norm_eps: 1e-5 })),
  }, { branch: "v2" });
  try {
    await withHub(hub, async (cache) => {
      const root = `${cache}/models--test-org--qwen2-tiny`;
      const tokDir = await resolveModelDir("test-org/qwen2-tiny@v2", { purpose: "tokenizer" });
      assertEquals(tokDir, `${root}/snapshots/${v2}`);
      assertEquals(Object.keys(tree(tokDir)).sort(), ["config.json"]); // v2 has no tokenizer files: only config
      const m2 = await loadModel("test-org/qwen2-tiny@v2", { backend: "cpu" });
      assertEquals(m2.dir, `${root}/snapshots/${v2}`);
      assertEquals(Deno.readTextFileSync(`${root}/refs/v2`), v2);
      const m1 = await loadModel(`test-org/qwen2-tiny@${sha}`, { backend: "cpu" });
      assertEquals(m1.dir, `${root}/snapshots/${sha}`);
      assertEquals([...Deno.readDirSync(`${root}/refs`)].map((e) => e.name), ["v2"]); // a hash writes no ref
      // The weights are the same files in both commits: one blob each.
      const blobs = [...Deno.readDirSync(`${root}/blobs`)].length;
      assertEquals(blobs, Object.keys(MODEL_FILES).filter((p) => p !== "README.md").length + 2);
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: a cut transfer leaves blobs/<sha256>.incomplete, and the next run resumes it with a Range request", async () => {
  const { hub, sha } = serve();
  const shard = "model-00002-of-00002.safetensors";
  const oid = sha256(MODEL_FILES[shard]);
  hub.cutOnce.add(oid);
  try {
    await withHub(hub, async (cache) => {
      const root = `${cache}/models--test-org--qwen2-tiny`;
      await rejects(resolveModelDir("test-org/qwen2-tiny"), [shard, "interrupted", "run again to resume"]);
      const part = Deno.statSync(`${root}/blobs/${oid}.incomplete`).size;
      assertEquals(part, MODEL_FILES[shard].length >> 1);
      assert(!tree(root)[`snapshots/${sha}/${shard}`], "an interrupted file was linked");
      const dir = await resolveModelDir("test-org/qwen2-tiny");
      const ranged = hub.requests.filter((r) => r.path === `/cdn/${oid}` && r.range);
      assertEquals(ranged.map((r) => r.range), [`bytes=${part}-`]);
      assertEquals(Deno.readFileSync(`${dir}/${shard}`), MODEL_FILES[shard]);
      assert(!Object.keys(tree(root)).some((p) => p.endsWith(".incomplete")));
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: a checksum mismatch is not admitted to the cache", async () => {
  const { hub, sha } = serve();
  const shard = "model-00001-of-00002.safetensors";
  const oid = sha256(MODEL_FILES[shard]);
  hub.lie.add(oid);
  try {
    await withHub(hub, async (cache) => {
      await rejects(resolveModelDir("test-org/qwen2-tiny"), [
        shard,
        "checksum",
        `sha256 expected ${oid}`,
        "not admitted",
      ]);
      const t = tree(`${cache}/models--test-org--qwen2-tiny`);
      assert(!(`blobs/${oid}` in t) && !(`blobs/${oid}.incomplete` in t), "the bad blob stayed");
      assert(!(`snapshots/${sha}/${shard}` in t));
      hub.lie.delete(oid);
      const dir = await resolveModelDir("test-org/qwen2-tiny");
      assertEquals(Deno.readFileSync(`${dir}/${shard}`), MODEL_FILES[shard]);
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: unknown repository or revision (404) and a gated repository (401) get one sentence and leave no files", async () => {
  const { hub } = serve();
  hub.addCommit("model", "test-org/gated", MODEL_FILES, { gated: "hf_secret" });
  try {
    await withHub(hub, async (cache) => {
      await rejects(resolveModelDir("test-org/nope"), [
        "No folder test-org/nope exists here",
        "model test-org/nope does not exist",
        hub.url,
        "HF_TOKEN",
      ]);
      await rejects(resolveModelDir("test-org/qwen2-tiny@nope"), ["has no revision 'nope'"]);
      const msg = await rejects(resolveModelDir("test-org/gated"), ["gated or private", "set HF_TOKEN"]);
      assert(!msg.includes("\n"));
      // Refused before any byte: no repository folder in the cache.
      assertEquals(
        [...Deno.readDirSync(cache)].map((e) => e.name).filter((n) => n.startsWith("models--")),
        [],
      );
      await rejects(resolveModelDir("test-org/gated", { token: "wrong" }), ["has no access"]);
      const dir = await resolveModelDir("test-org/gated", { token: "hf_secret" });
      assert(Deno.statSync(`${dir}/config.json`).isFile);
      assert(
        hub.requests.filter((r) => r.path.startsWith("/cdn/")).every((r) => r.auth === undefined),
        "the token left the Hub",
      );
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: HF_HUB_OFFLINE uses the cache with no request, and lists the files it lacks", async () => {
  const { hub, sha } = serve();
  try {
    await withHub(hub, async () => {
      Deno.env.set("HF_HUB_OFFLINE", "1");
      await rejects(resolveModelDir("test-org/qwen2-tiny"), ["HF_HUB_OFFLINE", "no snapshot", "config.json"]);
      assertEquals(hub.requests.length, 0);
      Deno.env.delete("HF_HUB_OFFLINE");
      const dir = await resolveModelDir("test-org/qwen2-tiny");
      const n = hub.requests.length;
      Deno.env.set("HF_HUB_OFFLINE", "1");
      assertEquals(await resolveModelDir("test-org/qwen2-tiny"), dir);
      assertEquals(await resolveModelDir(`test-org/qwen2-tiny@${sha}`), dir);
      Deno.removeSync(`${dir}/model-00002-of-00002.safetensors`);
      await rejects(resolveModelDir("test-org/qwen2-tiny"), [
        "lacks files",
        "model-00002-of-00002.safetensors",
      ]);
      assertEquals(hub.requests.length, n, "offline made a request");
      Deno.env.delete("HF_HUB_OFFLINE");
      assertEquals(await resolveModelDir("test-org/qwen2-tiny"), dir); // online again: the missing shard comes back
      assert(Deno.statSync(`${dir}/model-00002-of-00002.safetensors`).isFile);
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: a dataset by id downloads its parquet files, by split and config, and reads them", async () => {
  const hub = new HubServer();
  hub.addCommit("dataset", "test-org/vqa_rad_closed", {
    "README.md": enc.encode("# vqa"),
    "data/test-00000-of-00001.parquet": PARQUET,
    "data/train-00000-of-00002.parquet": PARQUET,
    "data/train-00001-of-00002.parquet": PARQUET.slice(0, 100),
    "other/test-00000-of-00001.parquet": PARQUET,
  });
  try {
    await withHub(hub, async (cache) => {
      const local = await loadDataset("data/vqa_rad_closed/test-00000-of-00001.parquet");
      const t = await loadDataset("hf://datasets/test-org/vqa_rad_closed", { split: "test", limit: 20 });
      assertEquals(t.numRows(), 20);
      const fields = (r: unknown) => {
        const { question, options, answerLabel, answer, datasetName, images } = r as Record<string, unknown>;
        return { question, options, answerLabel, answer, datasetName, n: (images as unknown[]).length };
      };
      for (const i of [0, 3, 19]) assertEquals(fields(t.object(i)), fields(local.object(i)));
      assertEquals(
        (t.object(0) as { datasetName: string }).datasetName,
        (local.object(0) as { datasetName: string }).datasetName,
      );
      const root = `${cache}/datasets--test-org--vqa_rad_closed`;
      const sha = Deno.readTextFileSync(`${root}/refs/main`);
      assertEquals(Object.keys(tree(`${root}/snapshots/${sha}`)), ["data/test-00000-of-00001.parquet"]);
      const n = hub.requests.length;
      await loadDataset("hf://datasets/test-org/vqa_rad_closed", { split: "test", limit: 1 });
      assertEquals(hub.requests.length, n, "a cached split made a request");
      const train = await hubDatasetFiles("hf://datasets/test-org/vqa_rad_closed", { split: "train" });
      assertEquals(train.files.map((f) => f.slice(f.indexOf("/data/") + 1)), [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
      ]);
      const other = await hubDatasetFiles("hf://datasets/test-org/vqa_rad_closed", { config: "other" });
      assertEquals(other.files.length, 1);
      assert(other.files[0].endsWith("/other/test-00000-of-00001.parquet"));
      await rejects(hubDatasetFiles("hf://datasets/test-org/vqa_rad_closed", { split: "validation" }), [
        "no split 'validation'",
        "test, train",
      ]);
      await rejects(hubDatasetFiles("hf://datasets/test-org/vqa_rad_closed", { config: "x" }), [
        "no config 'x'",
        "default, other",
      ]);
      // Without a split only the listing can tell that every split is here: one request, nothing refetched.
      const m = hub.requests.length;
      const all = await hubDatasetFiles("hf://datasets/test-org/vqa_rad_closed");
      assertEquals(all.files.length, 3);
      assertEquals(hub.requests.slice(m).map((r) => r.path), [
        "/api/datasets/test-org/vqa_rad_closed/revision/main",
      ]);
      const [bench] = await resolveBenchmarks(["hf://datasets/test-org/vqa_rad_closed"], { limit: 3 });
      assertEquals([bench.name, bench.rows.length], ["vqa_rad_closed", 3]);
      const one = await loadDataset(
        "hf://datasets/test-org/vqa_rad_closed/other/test-00000-of-00001.parquet",
        { limit: 2 },
      );
      assertEquals(one.numRows(), 2);
      await rejects(
        snapshotDownload(
          "test-org/vqa_rad_closed",
          { repoType: "dataset", allowPatterns: ["*.md"], colour: 1 } as never,
        ),
        [
          "colour",
        ],
      );
      const readme = await snapshotDownload("test-org/vqa_rad_closed", {
        repoType: "dataset",
        allowPatterns: ["*.md"],
      });
      assertEquals(Deno.readTextFileSync(`${readme}/README.md`), "# vqa");
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: one progress line per file off a terminal, none when quiet", async () => {
  const { hub } = serve();
  const cache = await Deno.makeTempDir({ prefix: "medthink-hub-" });
  const script = `import { snapshotDownload } from "${
    new URL("../lib/hub/download.ts", import.meta.url).href
  }";
    await snapshotDownload("test-org/qwen2-tiny", { allowPatterns: ["*.safetensors", "config.json"] });`;
  let runs = 0;
  const run = async (env: Record<string, string>) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", script],
      env: {
        HF_ENDPOINT: hub.url,
        HF_HUB_CACHE: `${cache}/${++runs}`,
        HF_HUB_OFFLINE: "",
        HF_HUB_DISABLE_PROGRESS_BARS: "",
        ...env,
      },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    return new TextDecoder().decode(out.stderr);
  };
  try {
    const lines = (await run({})).trim().split("\n");
    assertEquals(lines.length, 3, lines.join("\n"));
    const shard = MODEL_FILES["model-00002-of-00002.safetensors"].length;
    assert(
      lines.some((l) =>
        l.startsWith(`model-00002-of-00002.safetensors [####################] `) &&
        l.includes(`/${(shard / 1000).toFixed(1)} KB`)
      ),
      lines.join("\n"),
    );
    assertEquals(await run({ HF_HUB_DISABLE_PROGRESS_BARS: "1" }), "");
  } finally {
    await hub.close();
    await Deno.remove(cache, { recursive: true });
  }
});

Deno.test({
  name: "hub: cli.ts evaluate takes a model id and a benchmark id (hf://datasets/...)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const hub = new HubServer();
    hub.addCommit("model", "test-org/medthink-tiny", folderFiles(await ensureTinyModel()));
    hub.addCommit("dataset", "test-org/medqa", {
      "data/test.jsonl": Deno.readFileSync(new URL("../data/medqa_4opt/test.jsonl", import.meta.url)),
    });
    const tmp = await Deno.makeTempDir({ prefix: "medthink-hub-cli-" });
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../cli.ts", import.meta.url).pathname,
          "evaluate",
          "--model",
          "test-org/medthink-tiny",
          "--benchmarks",
          "hf://datasets/test-org/medqa",
          "--limit",
          "2",
          "--max-new-tokens",
          "2",
          "--out",
          `${tmp}/eval`,
        ],
        env: {
          HF_ENDPOINT: hub.url,
          HF_HUB_CACHE: `${tmp}/cache`,
          HF_HUB_DISABLE_PROGRESS_BARS: "1",
          HF_HUB_OFFLINE: "",
        },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      assert(out.success, text);
      const report = JSON.parse(Deno.readTextFileSync(`${tmp}/eval/report.json`));
      assert(JSON.stringify(report).includes('"medqa"'), JSON.stringify(report).slice(0, 500));
      assert(Deno.statSync(`${tmp}/cache/models--test-org--medthink-tiny/refs/main`).isFile);
      assert(Deno.statSync(`${tmp}/cache/datasets--test-org--medqa/refs/main`).isFile);
    } finally {
      await hub.close();
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

const DEV_FULL = (() => {
  try {
    return Deno.statSync("/dev/full").isCharDevice === true;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "hub: a full disk stops the download with one sentence and leaves no partial file (needs /dev/full)",
  ignore: !DEV_FULL,
}, async () => {
  const { hub, sha } = serve();
  const shard = "model-00001-of-00002.safetensors";
  const oid = sha256(MODEL_FILES[shard]);
  try {
    await withHub(hub, async (cache) => {
      // The partial file is /dev/full: every write fails with ENOSPC, as on a full disk.
      const blobs = `${cache}/models--test-org--qwen2-tiny/blobs`;
      Deno.mkdirSync(blobs, { recursive: true });
      Deno.symlinkSync("/dev/full", `${blobs}/${oid}.incomplete`);
      await rejects(resolveModelDir("test-org/qwen2-tiny"), ["No space left", shard, "HF_HUB_CACHE"]);
      const t = tree(`${cache}/models--test-org--qwen2-tiny`);
      assert(!(`blobs/${oid}.incomplete` in t) && !(`blobs/${oid}` in t), JSON.stringify(t));
      assert(!(`snapshots/${sha}/${shard}` in t));
      assert((await resolveModelDir("test-org/qwen2-tiny")).endsWith(sha)); // room again: it completes
    });
  } finally {
    await hub.close();
  }
});

Deno.test("hub: loadTokenizer by id fetches the tokenizer files alone and uses them", async () => {
  const embedded = await loadTokenizer(); // writes the embedded Qwen2.5 files into the medthink cache
  const files = folderFiles(embedded.dir);
  delete files["medthink.json"];
  const hub = new HubServer();
  hub.addCommit("model", "test-org/qwen-tok", {
    ...files,
    "config.json": MODEL_FILES["config.json"],
    "model.safetensors": enc.encode("weights that the tokenizer never fetches"),
  });
  try {
    await withHub(hub, async () => {
      const tok = await loadTokenizer("test-org/qwen-tok");
      assert(!tok.embedded && tok.dir.includes("/models--test-org--qwen-tok/snapshots/"), tok.dir);
      assertEquals(Object.keys(tree(tok.dir)).sort(), [...Object.keys(files), "config.json"].sort());
      assert(!hub.requests.some((r) => r.path.includes("model.safetensors")));
      assertEquals(tok.encode("<think>fever?</think>"), embedded.encode("<think>fever?</think>"));
    });
  } finally {
    await hub.close();
  }
});
