// Crash-safe saving (lib/util/atomic.ts): a child process saving over an existing folder is stopped at
// every named step of the save (MEDTHINK_FAULT_AT); the folder then holds the complete old or the
// complete new contents (after the recovery that every load and save runs), and the next save leaves
// no temporary or old siblings behind.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import {
  FAULT_EXIT_CODE,
  recoverInterrupted,
  replaceDirAtomic,
  writeFileAtomic,
} from "../lib/util/atomic.ts";
import { readSafetensors } from "../lib/model/safetensors.ts";

const CHILD = new URL("./_atomic_child.ts", import.meta.url).pathname;

async function save(kind: string, dest: string, version: number, faultAt?: string): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CHILD, kind, dest, String(version)],
    env: { MEDTHINK_FAULT_AT: faultAt ?? "", TF_CPP_MIN_LOG_LEVEL: "2" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code !== 0 && out.code !== FAULT_EXIT_CODE) {
    throw new Error(`child ${kind} ${version} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`);
  }
  return out.code;
}

/** The version a `checkpoint` save wrote, checking that every file of it is complete and consistent. */
async function checkpointVersion(dest: string): Promise<number> {
  const config = JSON.parse(await Deno.readTextFile(`${dest}/config.json`));
  const index = JSON.parse(await Deno.readTextFile(`${dest}/model.safetensors.index.json`));
  const values: number[] = [];
  for (const shard of new Set(Object.values(index.weight_map) as string[])) {
    for (const t of Object.values(await readSafetensors(`${dest}/${shard}`))) values.push(...t.data);
  }
  const v = config.version;
  assertEquals(values.map(Math.abs).sort(), [v, v, v, v, v]);
  return v;
}

async function siblingsOf(dest: string): Promise<string[]> {
  const parent = dest.slice(0, dest.lastIndexOf("/"));
  const base = dest.slice(dest.lastIndexOf("/") + 1);
  const out = [];
  for await (const e of Deno.readDir(parent)) if (e.name.startsWith(`${base}.`)) out.push(e.name);
  return out;
}

const STEPS_OLD = [
  "file:written",
  "safetensors:tensor-written",
  "file:renamed",
  "dir:filled",
  "dir:synced",
  "dir:between-renames",
];
const STEPS_NEW = ["dir:renamed", "dir:removing-old"];

Deno.test("atomic: a save killed at any step leaves the complete old or new folder, cleaned up on the next load/save", async () => {
  const root = await Deno.makeTempDir({ prefix: "atomic_" });
  try {
    for (const step of [...STEPS_OLD, ...STEPS_NEW]) {
      const dest = `${root}/${step.replace(/[^a-z]/g, "_")}`;
      assertEquals(await save("checkpoint", dest, 1), 0);
      await Deno.writeTextFile(`${dest}/tokenizer.json`, "{}"); // a file the save carries over
      assertEquals(
        await save("checkpoint", dest, 2, step),
        FAULT_EXIT_CODE,
        `the hook did not stop at ${step}`,
      );
      const left = await siblingsOf(dest);
      if (step === "dir:between-renames") {
        // the one instant without DEST: the old copy is aside, complete, and the recovery puts it back
        assert(!(await Deno.stat(dest).then(() => true, () => false)));
        assert(left.some((n) => n.includes(".old-")), `${step}: ${left}`);
      }
      await recoverInterrupted(dest);
      const want = STEPS_OLD.includes(step) ? 1 : 2;
      assertEquals(await checkpointVersion(dest), want, step);
      assertEquals(await siblingsOf(dest), [], `${step}: stale siblings left after recovery`);
      assertEquals(await Deno.readTextFile(`${dest}/tokenizer.json`), "{}");
      // and the next save, started over whatever the crash left, completes
      assertEquals(await save("checkpoint", dest, 3), 0);
      assertEquals(await checkpointVersion(dest), 3);
      assertEquals(await siblingsOf(dest), []);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("atomic: saveModel, saveLora and saveCheckpoint killed between the renames keep a loadable old copy", async () => {
  const root = await Deno.makeTempDir({ prefix: "atomic_model_" });
  try {
    for (const kind of ["model", "lora", "trainer"]) {
      const dest = `${root}/${kind}`;
      assertEquals(await save(kind, dest, 1), 0);
      const before = [...Deno.readDirSync(dest)].map((e) => e.name).sort();
      // a trainer checkpoint nests the adapter folder's own swap inside its tmp folder: stop at the outer one
      const at = kind === "trainer" ? "dir:between-renames#2" : "dir:between-renames";
      assertEquals(await save(kind, dest, 2, at), FAULT_EXIT_CODE);
      assert(!(await Deno.stat(dest).then(() => true, () => false)), `${kind}: DEST still there`);
      // the load path recovers by itself: the loaders call recoverInterrupted
      const weights = kind === "model" ? "model.safetensors" : "adapter_model.safetensors";
      await recoverInterrupted(dest);
      assertEquals([...Deno.readDirSync(dest)].map((e) => e.name).sort(), before);
      const t = await readSafetensors(`${dest}/${weights}`);
      const probe = kind === "model"
        ? t["model.norm.weight"]
        : Object.entries(t).find(([k]) => k.includes("lora_B"))![1];
      assert(probe.data.every((x) => x === 1), `${kind}: not the old version`);
      assertEquals(await save(kind, dest, 2), 0);
      const t2 = await readSafetensors(`${dest}/${weights}`);
      const p2 = kind === "model"
        ? t2["model.norm.weight"]
        : Object.entries(t2).find(([k]) => k.includes("lora_B"))![1];
      assert(p2.data.every((x) => x === 2));
      assertEquals(await siblingsOf(dest), []);
    }
    // loadModel recovers a folder left aside on its own
    const { loadModel } = await import("../lib/model/load.ts");
    assertEquals(await save("model", `${root}/model`, 3, "dir:between-renames"), FAULT_EXIT_CODE);
    const m = await loadModel(`${root}/model`, { backend: "cpu" });
    assert((m.params["model.norm.weight"].dataSync() as Float32Array).every((x) => x === 2));
    m.dispose();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("atomic: replaceDirAtomic leaves DEST untouched when filling fails; writeFileAtomic replaces whole files", async () => {
  const root = await Deno.makeTempDir({ prefix: "atomic_unit_" });
  try {
    const dest = `${root}/d`;
    await replaceDirAtomic(dest, async (tmp) => await Deno.writeTextFile(`${tmp}/x`, "1"));
    let failed = false;
    try {
      await replaceDirAtomic(dest, async (tmp) => {
        await Deno.writeTextFile(`${tmp}/x`, "2");
        throw new Error("disk full");
      });
    } catch {
      failed = true;
    }
    assert(failed);
    assertEquals(await Deno.readTextFile(`${dest}/x`), "1");
    assertEquals(await siblingsOf(dest), []);
    // stale siblings of a dead process are removed; those of a live one (this process's parent) are kept
    const ppid = Deno.ppid;
    await Deno.mkdir(`${dest}.tmp-999999999-0abc`);
    await Deno.mkdir(`${dest}.tmp-${ppid}-0abc`);
    await recoverInterrupted(dest);
    assertEquals(await siblingsOf(dest), [`d.tmp-${ppid}-0abc`]);
    await Deno.remove(`${dest}.tmp-${ppid}-0abc`);
    // latestCheckpoint sees a checkpoint that a killed re-save left aside (as a dead process's old copy)
    const { latestCheckpoint } = await import("../lib/train/checkpoint.ts");
    await Deno.mkdir(`${root}/run/checkpoint-3.old-999999999-0abc`, { recursive: true });
    await Deno.writeTextFile(`${root}/run/checkpoint-3.old-999999999-0abc/trainer_state.json`, "{}");
    await Deno.mkdir(`${root}/run/checkpoint-2`);
    await Deno.writeTextFile(`${root}/run/checkpoint-2/trainer_state.json`, "{}");
    assertEquals(await latestCheckpoint(`${root}/run`), `${root}/run/checkpoint-3`);
    await Deno.remove(`${root}/run`, { recursive: true });
    await writeFileAtomic(`${root}/f.json`, "old");
    await Deno.writeTextFile(`${root}/f.json.tmp-999999999-0abc`, "half a write"); // a killed writer's
    await writeFileAtomic(`${root}/f.json`, "new");
    assertEquals(await Deno.readTextFile(`${root}/f.json`), "new");
    assertEquals([...Deno.readDirSync(root)].map((e) => e.name).sort(), ["d", "f.json"]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
