/**
 * Downloading a repository's snapshot into the Hugging Face cache, as huggingface_hub does: each file's
 * metadata from `HEAD resolve/COMMIT/PATH`, its bytes into `blobs/<etag>.incomplete` (resumed with a Range
 * request after an interruption), checked against the LFS sha256 or the git blob sha1 before it is renamed
 * to `blobs/<etag>`, then linked from `snapshots/<commit>/<path>`. A revision already in the cache with the
 * files asked for is used without any request.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { checkOptionKeys } from "../util/options.ts";
import { isFileSync as fileExists } from "../util/fs.ts";
import {
  fileMetadata,
  hubEndpoint,
  hubError,
  hubHeaders,
  type HubRepo,
  hubToken,
  revisionInfo,
} from "./api.ts";
import { hubCacheDir, hubOffline, isCommitHash, progressDisabled, RepoCache, tagCacheDir } from "./cache.ts";
import { fileProgress, progressMode } from "./progress.ts";

/** Options of {@linkcode snapshotDownload}. */
export interface SnapshotDownloadOptions {
  /** `model` (default) or `dataset`. */
  repoType?: "model" | "dataset";
  /** Branch, tag or commit. Default `main`. */
  revision?: string;
  /** Only files matching one of these globs (`*` spans folders, as in huggingface_hub). Default: all. */
  allowPatterns?: string[];
  /** Cache folder. Default {@linkcode hubCacheDir} (`HF_HUB_CACHE`, `HF_HOME/hub`). */
  cacheDir?: string;
  /** Hub URL. Default `HF_ENDPOINT`, else https://huggingface.co. */
  endpoint?: string;
  /** Access token. Default `HF_TOKEN`, else the one `huggingface-cli login` saved. */
  token?: string;
  /** Use the cache only, never a request. Default `HF_HUB_OFFLINE`. */
  offline?: boolean;
  /** Ask the Hub where a branch points now even when the cache has it. Default false. */
  refresh?: boolean;
  /** No progress output. Default `HF_HUB_DISABLE_PROGRESS_BARS`. */
  quiet?: boolean;
}

const SNAPSHOT_KEYS = [
  "repoType",
  "revision",
  "allowPatterns",
  "cacheDir",
  "endpoint",
  "token",
  "offline",
  "refresh",
  "quiet",
];

/** Glob -> regular expression, with fnmatch's rules (`*` and `?` also match `/`). */
export function globToRegExp(glob: string): RegExp {
  let re = "";
  for (const ch of glob) {
    if (ch === "*") re += ".*";
    else if (ch === "?") re += ".";
    else re += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${re}$`);
}

/** The files of `files` that match one of `patterns` (all when `patterns` is undefined). */
export function filterFiles(files: string[], patterns?: string[]): string[] {
  if (!patterns) return files;
  const res = patterns.map(globToRegExp);
  return files.filter((f) => res.some((r) => r.test(f)));
}

/** How {@linkcode ensureSnapshot} picks files and decides that a cached snapshot is complete. */
export interface SnapshotPlan {
  /** The files to fetch, from the repository's listing. */
  select(files: string[]): string[];
  /**
   * The files a snapshot folder still lacks for this use (empty: complete, no request needed). `offline`:
   * the cache is all there is, so judge by what it holds.
   */
  missing(dir: string, offline?: boolean): string[];
  /** Checked after the listing: an error sentence when the repository cannot serve this use. */
  check?(selected: string[], all: string[]): string | undefined;
}

/** Where a snapshot came from. */
export interface Snapshot {
  /** `snapshots/<commit>` in the cache. */
  dir: string;
  /** The commit. */
  commit: string;
  /** Files downloaded now (empty when the cache had everything). */
  downloaded: string[];
}

function describe(repo: HubRepo, revision: string): string {
  return `${repo.repoType} ${repo.repoId} at '${revision}'`;
}

/**
 * Make sure the cache has what `plan` asks of `repoId` at `revision` and return the snapshot folder:
 * from the cache alone when it already has it (or when offline), else from the Hub.
 */
export async function ensureSnapshot(
  repoId: string,
  plan: SnapshotPlan,
  options: SnapshotDownloadOptions = {},
): Promise<Snapshot> {
  const repo: HubRepo = {
    repoId,
    repoType: options.repoType ?? "model",
    endpoint: options.endpoint ?? hubEndpoint(),
    token: options.token ?? hubToken(),
  };
  const revision = options.revision ?? "main";
  const cacheDir = options.cacheDir ?? hubCacheDir();
  const rc = new RepoCache(cacheDir, repoId, repo.repoType);
  const offline = options.offline ?? hubOffline();
  const cached = rc.commitFor(revision);
  if (cached && (offline || !options.refresh || isCommitHash(revision))) {
    const dir = rc.snapshotDir(cached);
    const missing = plan.missing(dir, offline);
    if (!missing.length) return { dir, commit: cached, downloaded: [] };
    if (offline) {
      throw new Error(
        `HF_HUB_OFFLINE is set and the cache (${cacheDir}) lacks files of the ${describe(repo, revision)}: ` +
          `${missing.join(", ")}; download them once with network access (unset HF_HUB_OFFLINE).`,
      );
    }
  } else if (offline) {
    throw new Error(
      `HF_HUB_OFFLINE is set and the cache (${cacheDir}) has no snapshot of the ${describe(repo, revision)}` +
        ` (needed: ${
          plan.missing(`${rc.root}/snapshots/-`, true).join(", ")
        }); download it once with network access.`,
    );
  }

  const info = await revisionInfo(repo, revision);
  const selected = plan.select(info.files);
  const problem = plan.check?.(selected, info.files);
  if (problem) throw new Error(problem);
  tagCacheDir(cacheDir);
  const downloaded: string[] = [];
  const mode = progressMode(options.quiet ?? progressDisabled());
  for (const path of selected) {
    if (rc.hasFile(info.sha, path)) continue;
    const meta = await fileMetadata(repo, info.sha, path);
    if (!fileExists(rc.blobPath(meta.etag))) {
      // huggingface_hub's lock file for this blob, so that two downloaders (medthink or Python) never
      // append to the same .incomplete file.
      const lockPath = `${cacheDir}/.locks/${rc.root.slice(cacheDir.length + 1)}/${meta.etag}.lock`;
      Deno.mkdirSync(lockPath.slice(0, lockPath.lastIndexOf("/")), { recursive: true });
      const lock = await Deno.open(lockPath, { create: true, write: true });
      try {
        await lock.lock(true);
        if (!fileExists(rc.blobPath(meta.etag))) {
          await downloadBlob(rc, repo, path, meta, mode);
          downloaded.push(path);
        }
      } finally {
        lock.close(); // closing releases the lock
      }
    }
    rc.linkBlob(info.sha, path, meta.etag);
  }
  rc.writeRef(revision, info.sha);
  const dir = rc.snapshotDir(info.sha);
  const missing = plan.missing(dir);
  if (missing.length) {
    throw new Error(`The ${describe(repo, revision)} lacks ${missing.join(", ")} on ${repo.endpoint}.`);
  }
  return { dir, commit: info.sha, downloaded };
}

function isDiskFull(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return err?.code === "ENOSPC" || /no space left/i.test(String(err?.message));
}

async function downloadBlob(
  rc: RepoCache,
  repo: HubRepo,
  path: string,
  meta: { etag: string; size?: number; location: string },
  mode: "tty" | "lines" | "quiet",
): Promise<void> {
  const blob = rc.blobPath(meta.etag);
  const part = `${blob}.incomplete`;
  Deno.mkdirSync(blob.slice(0, blob.lastIndexOf("/")), { recursive: true });
  let have = 0;
  try {
    have = Deno.statSync(part).size;
  } catch { /* a fresh download */ }
  if (meta.size !== undefined && have > meta.size) {
    Deno.removeSync(part);
    have = 0;
  }
  // The token goes to the Hub only, never to the CDN host an LFS redirect points at (signed URLs).
  const sameHost = new URL(meta.location).host === new URL(repo.endpoint ?? hubEndpoint()).host;
  const headers: Record<string, string> = sameHost ? hubHeaders(repo.token) : {};
  if (meta.size === undefined || have < meta.size) {
    headers["accept-encoding"] = "identity"; // byte offsets must be the file's, for Range and for the size
    if (have > 0) headers.range = `bytes=${have}-`;
    let res: Response;
    try {
      res = await fetch(meta.location, { headers });
    } catch (e) {
      throw new Error(
        `Cannot reach ${new URL(meta.location).origin} for ${path} of ${repo.repoId} (${
          (e as Error).message
        }): ` +
          "check the network and run again (the download resumes).",
      );
    }
    if (res.status === 416) {
      // The partial file is not a prefix the server recognises: start over.
      await res.body?.cancel();
      Deno.removeSync(part);
      return await downloadBlob(rc, repo, path, meta, mode);
    }
    if (!res.ok) throw await hubError(res, repo, path, "(download)");
    if (have > 0 && res.status === 200) have = 0; // the server ignored the Range: a whole file follows
    const file = await Deno.open(part, { create: true, write: true, truncate: have === 0, append: have > 0 });
    const progress = fileProgress(path, meta.size, have, mode);
    let ok = false;
    try {
      for await (const chunk of res.body!) {
        let off = 0;
        while (off < chunk.length) off += await file.write(chunk.subarray(off));
        have += chunk.length;
        progress.update(have);
      }
      ok = true;
    } catch (e) {
      if (isDiskFull(e)) {
        file.close();
        Deno.removeSync(part);
        throw new Error(
          `No space left on the device while writing ${path} of ${repo.repoId} (${meta.size ?? "?"} bytes) ` +
            `into ${rc.cacheDir}: free space or point HF_HUB_CACHE at a larger disk.`,
        );
      }
      throw new Error(
        `The download of ${path} of ${repo.repoId} was interrupted after ${have}` +
          `${meta.size !== undefined ? ` of ${meta.size}` : ""} bytes (${(e as Error).message}): ` +
          "run again to resume from there.",
      );
    } finally {
      progress.close(ok);
      try {
        file.close();
      } catch { /* closed above */ }
    }
  }
  if (meta.size !== undefined && have !== meta.size) {
    throw new Error(
      `The download of ${path} of ${repo.repoId} stopped at ${have} of ${meta.size} bytes: run again to resume.`,
    );
  }
  const problem = await verifyBlob(part, meta.etag);
  if (problem) {
    Deno.removeSync(part);
    throw new Error(
      `The download of ${path} of ${repo.repoId} does not match its checksum (${problem}): it was not ` +
        "admitted to the cache; run again, and if it repeats the server or a proxy is corrupting the file.",
    );
  }
  Deno.renameSync(part, blob);
}

/** Check a file against its etag: an LFS sha256 (64 hex digits) or a git blob sha1 (40). */
async function verifyBlob(file: string, etag: string): Promise<string | undefined> {
  const kind = /^[0-9a-f]{64}$/.test(etag) ? "sha256" : /^[0-9a-f]{40}$/.test(etag) ? "sha1" : undefined;
  if (!kind) return undefined; // an etag that is no content hash cannot be checked
  const hash = createHash(kind);
  if (kind === "sha1") hash.update(`blob ${Deno.statSync(file).size}\0`);
  const f = await Deno.open(file, { read: true });
  try {
    for await (const chunk of f.readable) hash.update(chunk);
  } catch (e) {
    throw new Error(`Cannot read back ${file} to check it (${(e as Error).message}).`);
  }
  const got = hash.digest("hex");
  return got === etag ? undefined : `${kind} expected ${etag}, got ${got}`;
}

/**
 * Download a repository (or the files matching `allowPatterns`) into the Hugging Face cache and return
 * its snapshot folder, `<cache>/models--ORG--NAME/snapshots/<commit>`, as huggingface_hub's
 * `snapshot_download` does. A revision the cache already has (with files for every pattern) is returned
 * without a request; `HF_HUB_OFFLINE=1` never makes one.
 *
 * @example
 * ```ts ignore
 * import { snapshotDownload } from "./download.ts";
 * const dir = await snapshotDownload("Qwen/Qwen2.5-VL-3B-Instruct", {
 *   allowPatterns: ["config.json", "*.safetensors", "*.json"],
 * });
 * ```
 */
export async function snapshotDownload(
  repoId: string,
  options: SnapshotDownloadOptions = {},
): Promise<string> {
  checkOptionKeys(options, SNAPSHOT_KEYS, "snapshotDownload options");
  const patterns = options.allowPatterns;
  const plan: SnapshotPlan = {
    select: (files) => filterFiles(files, patterns),
    // Without the listing, a cached snapshot counts as complete when every pattern matches a file in it.
    missing(dir) {
      const have = listFiles(dir);
      if (!have.length) return patterns ?? ["(any file)"];
      return (patterns ?? []).filter((p) => !filterFiles(have, [p]).length);
    },
  };
  return (await ensureSnapshot(repoId, plan, options)).dir;
}

/** Files under `dir` (relative paths; symlinks whose blob is missing are left out). */
export function listFiles(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = `${dir}/${e.name}`;
    const rel = prefix + e.name;
    let st: Deno.FileInfo;
    try {
      st = Deno.statSync(p);
    } catch {
      continue;
    }
    if (st.isDirectory) out.push(...listFiles(p, `${rel}/`));
    else if (st.isFile) out.push(rel);
  }
  return out.sort();
}
