/**
 * Crash-safe saving: replace a whole folder or one file so that, after a kill at any instant, the
 * destination holds either the complete old contents or the complete new ones, never nothing and
 * never a mix.
 *
 * The folder scheme is a directory swap in which a sibling's *name* says whether it is complete, so
 * no marker file has to be written into (and later hidden from) the saved folder:
 *
 * 1. the new contents are written to `DEST.tmp-<pid>-<rand>` and every file in it is fsynced;
 * 2. `DEST` (if any) is renamed to `DEST.old-<pid>-<rand>`;
 * 3. the tmp folder is renamed to `DEST`; the parent folder is fsynced;
 * 4. the old folder is removed.
 *
 * A rename of a folder is atomic on one file system, so at every instant: `DEST`, when present, is
 * complete (it only ever appears by a rename of a fully written, synced folder); a `DEST.old-*` is
 * complete (it only ever appears by renaming a complete `DEST`) until step 4 starts deleting it, which
 * happens only once the new `DEST` is in place; a `DEST.tmp-*` is never trusted. The one window
 * without `DEST` is between steps 2 and 3, and there exactly one complete `DEST.old-*` exists, so
 * {@linkcode recoverInterrupted} (run by every save and by the loaders) renames it back. Siblings
 * that belong to a process still alive on this host are left alone (another save in progress).
 *
 * A fault-injection hook makes the crash tests possible: with `MEDTHINK_FAULT_AT=<step>` set, the
 * process exits (code 86) at that named step of a save (`<step>#N`: its N-th hit), as a kill would stop
 * it there.
 *
 * @module
 */

/** Exit code of a process stopped by the `MEDTHINK_FAULT_AT` hook (tests tell it from a real failure). */
export const FAULT_EXIT_CODE = 86;

const faultHits = new Map<string, number>();

/**
 * The fault-injection hook: exits the process (code {@linkcode FAULT_EXIT_CODE}) when the environment
 * variable `MEDTHINK_FAULT_AT` names `step`, either as `step` (its first hit) or `step#N` (its N-th
 * hit, for saves that nest, e.g. a checkpoint whose adapter folder is itself written crash-safely).
 * Only crash tests set it.
 *
 * @example
 * ```ts
 * import { faultPoint } from "./atomic.ts";
 * faultPoint("never-set-in-this-example"); // returns: the variable does not name this step
 * ```
 */
export function faultPoint(step: string): void {
  let at: string | undefined;
  try {
    at = Deno.env.get("MEDTHINK_FAULT_AT");
  } catch {
    return; // no env permission: no hook
  }
  if (!at) return;
  const [name, nth] = at.split("#");
  if (name !== step) return;
  const hit = (faultHits.get(step) ?? 0) + 1;
  faultHits.set(step, hit);
  if (hit === Number(nth ?? 1)) Deno.exit(FAULT_EXIT_CODE);
}

/**
 * Whether process `pid` is alive on this host (Linux: `/proc/<pid>`; elsewhere every pid counts as
 * alive, the safe answer for lock and temporary-file takeover).
 *
 * @example
 * ```ts
 * import { pidAlive } from "./atomic.ts";
 * console.assert(pidAlive(Deno.pid));
 * ```
 */
export function pidAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  if (Deno.build.os !== "linux") return true;
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

function splitPath(path: string): { parent: string; base: string } {
  const clean = path.replace(/\/+$/, "") || "/";
  const i = clean.lastIndexOf("/");
  if (i < 0) return { parent: ".", base: clean };
  return { parent: clean.slice(0, i) || "/", base: clean.slice(i + 1) };
}

function tag(): string {
  return `${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
}

async function existsPath(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** fsync an open-able path (a file, or a folder on systems that allow it); errors are ignored where a platform cannot. */
async function syncPath(path: string): Promise<void> {
  let f: Deno.FsFile | undefined;
  try {
    f = await Deno.open(path, { read: true });
    await f.sync();
  } catch {
    // folders cannot be opened for fsync on every platform; the rename order still holds
  } finally {
    f?.close();
  }
}

/** fsync every file under `dir` (recursively), then the folders themselves. */
async function syncTree(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) await syncTree(p);
    else if (e.isFile) await syncPath(p);
  }
  await syncPath(dir);
}

/** `DEST.tmp-<pid>-<rand>` / `DEST.old-<pid>-<rand>` siblings of `base` in `parent`. */
async function siblings(
  parent: string,
  base: string,
): Promise<{ name: string; kind: "tmp" | "old"; pid: number; mtime: number }[]> {
  const out = [];
  const re = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(tmp|old)-(\\d+)-[0-9a-f]+$`);
  try {
    for await (const e of Deno.readDir(parent)) {
      const m = re.exec(e.name);
      if (!m) continue;
      let mtime = 0;
      try {
        mtime = (await Deno.lstat(`${parent}/${e.name}`)).mtime?.getTime() ?? 0;
      } catch { /* gone meanwhile */ }
      out.push({ name: e.name, kind: m[1] as "tmp" | "old", pid: Number(m[2]), mtime });
    }
  } catch {
    // a parent that is missing or cannot be listed (a Hub id, a read-only mount) has nothing to recover
    return [];
  }
  return out;
}

/**
 * Finish or undo a save of `path` (a folder or a file) that a crash interrupted: when `path` is
 * missing and a complete `path.old-*` exists (a kill between the two renames), rename it back; then
 * remove the stale `path.tmp-*` and `path.old-*` siblings of dead processes. Returns true when it
 * restored an old copy. Savers and loaders call it first; calling it on a clean path does nothing.
 *
 * @example
 * ```ts
 * import { recoverInterrupted } from "./atomic.ts";
 * const dir = await Deno.makeTempDir();
 * await Deno.mkdir(`${dir}/ckpt.old-999999999-abcdef01`); // as a kill between the renames leaves it
 * console.assert(await recoverInterrupted(`${dir}/ckpt`));
 * console.assert((await Deno.stat(`${dir}/ckpt`)).isDirectory);
 * ```
 */
export async function recoverInterrupted(path: string): Promise<boolean> {
  const { parent, base } = splitPath(path);
  const dest = `${parent}/${base}`;
  const found = (await siblings(parent, base)).filter((s) => s.pid === Deno.pid || !pidAlive(s.pid));
  let restored = false;
  if (!(await existsPath(dest))) {
    // at most one complete old copy can exist without DEST (see the module notes); take the newest
    const old = found.filter((s) => s.kind === "old").sort((a, b) => b.mtime - a.mtime)[0];
    if (old) {
      await Deno.rename(`${parent}/${old.name}`, dest);
      await syncPath(parent);
      restored = true;
    }
  }
  for (const s of found) {
    if (restored && s.kind === "old" && !(await existsPath(`${parent}/${s.name}`))) continue;
    await Deno.remove(`${parent}/${s.name}`, { recursive: true }).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
  return restored;
}

/**
 * Replace the folder `dest` with the contents that `fill` writes into the empty temporary folder it is
 * given, crash-safely (see the module notes). `fill` may read the current `dest` (to carry files
 * over). On an error the temporary folder is removed and `dest` is untouched.
 *
 * @example
 * ```ts
 * import { replaceDirAtomic } from "./atomic.ts";
 * const dir = await Deno.makeTempDir();
 * await replaceDirAtomic(`${dir}/out`, async (tmp) => {
 *   await Deno.writeTextFile(`${tmp}/a.txt`, "new");
 * });
 * console.assert(await Deno.readTextFile(`${dir}/out/a.txt`) === "new");
 * ```
 */
export async function replaceDirAtomic(dest: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const { parent, base } = splitPath(dest);
  const clean = `${parent}/${base}`;
  await Deno.mkdir(parent, { recursive: true });
  await recoverInterrupted(clean);
  const t = tag();
  const tmp = `${clean}.tmp-${t}`;
  const old = `${clean}.old-${t}`;
  await Deno.mkdir(tmp);
  let moved = false;
  try {
    await fill(tmp);
    faultPoint("dir:filled");
    await syncTree(tmp);
    faultPoint("dir:synced");
    if (await existsPath(clean)) {
      await Deno.rename(clean, old);
      moved = true;
    }
    faultPoint("dir:between-renames");
    await Deno.rename(tmp, clean);
    await syncPath(parent);
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
    if (moved && !(await existsPath(clean))) await Deno.rename(old, clean).catch(() => {});
    throw e;
  }
  faultPoint("dir:renamed");
  if (moved) await removeOld(old);
}

async function removeOld(old: string): Promise<void> {
  // remove the files one by one with a fault point inside, so the tests can stop a half-done delete
  for await (const e of Deno.readDir(old)) {
    await Deno.remove(`${old}/${e.name}`, { recursive: true });
    faultPoint("dir:removing-old");
  }
  await Deno.remove(old, { recursive: true });
}

/**
 * Write `data` to `path` crash-safely: to `path.tmp-<pid>-<rand>`, fsynced, then renamed over `path`
 * (the parent folder fsynced after), so `path` always holds the complete old or new bytes. Temporary
 * files that killed writers left beside `path` are removed first.
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic.ts";
 * const dir = await Deno.makeTempDir();
 * await writeFileAtomic(`${dir}/state.json`, '{"step": 3}\n');
 * console.assert((await Deno.readTextFile(`${dir}/state.json`)).includes("3"));
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | string | ((f: Deno.FsFile) => Promise<void>),
): Promise<void> {
  const { parent, base } = splitPath(path);
  const clean = `${parent}/${base}`;
  await recoverInterrupted(clean); // a temporary file a killed writer left beside it
  const tmp = `${clean}.tmp-${tag()}`;
  const f = await Deno.open(tmp, { write: true, createNew: true });
  try {
    if (typeof data === "function") await data(f);
    else {
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      let done = 0;
      while (done < bytes.length) done += await f.write(bytes.subarray(done));
    }
    faultPoint("file:written");
    await f.sync();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  try {
    await Deno.rename(tmp, clean);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  faultPoint("file:renamed");
  await syncPath(parent);
}
