/**
 * The Hugging Face cache, in huggingface_hub's own layout, so that what `huggingface-cli`, transformers or
 * vLLM downloaded is found here and what medthink downloads is found by them:
 *
 * ```
 * $HF_HUB_CACHE (default $HF_HOME/hub, $HF_HOME default ~/.cache/huggingface)
 * ├── CACHEDIR.TAG
 * └── models--ORG--NAME  (datasets--ORG--NAME)
 *     ├── blobs/<etag>                      file contents, named by the LFS sha256 or the git blob sha1
 *     ├── refs/<branch or tag>              the commit it pointed to when last resolved
 *     └── snapshots/<commit>/<path>         -> ../../blobs/<etag> (relative symlinks)
 * ```
 *
 * @module
 */

import { env as envVar } from "../util/env.ts";

/** An environment variable, or `undefined` when unset, empty or not readable (the toolkit's one rule). */
export { envVar };

function truthy(v: string | undefined): boolean {
  return v !== undefined && ["1", "true", "yes", "on"].includes(v.toLowerCase());
}

/** `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (huggingface_hub's rule). */
export function hfHome(): string {
  const home = envVar("HF_HOME");
  if (home) return home.replace(/\/+$/, "");
  const xdg = envVar("XDG_CACHE_HOME");
  if (xdg) return `${xdg.replace(/\/+$/, "")}/huggingface`;
  const user = envVar("HOME") ?? envVar("USERPROFILE");
  if (!user) throw new Error("Cannot find the Hugging Face cache: set HF_HUB_CACHE or HF_HOME (or HOME).");
  return `${user}/.cache/huggingface`;
}

/**
 * The hub cache folder: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`.
 *
 * @example
 * ```ts ignore
 * import { hubCacheDir } from "./cache.ts";
 * console.log(hubCacheDir()); // e.g. /home/me/.cache/huggingface/hub
 * ```
 */
export function hubCacheDir(): string {
  const dir = envVar("HF_HUB_CACHE") ?? envVar("HUGGINGFACE_HUB_CACHE") ?? `${hfHome()}/hub`;
  return dir.replace(/\/+$/, "");
}

/** Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set: the cache only, no request. */
export function hubOffline(): boolean {
  return truthy(envVar("HF_HUB_OFFLINE") ?? envVar("TRANSFORMERS_OFFLINE"));
}

/** Whether `HF_HUB_DISABLE_PROGRESS_BARS` asks for no progress output. */
export function progressDisabled(): boolean {
  return truthy(envVar("HF_HUB_DISABLE_PROGRESS_BARS"));
}

/** `models--ORG--NAME` / `datasets--ORG--NAME`: the repository's folder name in the cache. */
export function repoFolderName(repoId: string, repoType: "model" | "dataset"): string {
  return [`${repoType}s`, ...repoId.split("/")].join("--");
}

/** A full 40-hex-digit commit hash (a revision that never moves). */
export function isCommitHash(rev: string): boolean {
  return /^[0-9a-f]{40}$/.test(rev);
}

/** One repository's folder in a hub cache. */
export class RepoCache {
  /** `<cache>/models--ORG--NAME`. */
  readonly root: string;
  constructor(readonly cacheDir: string, readonly repoId: string, readonly repoType: "model" | "dataset") {
    this.root = `${cacheDir}/${repoFolderName(repoId, repoType)}`;
  }

  /** The commit a revision names here: itself when a hash, else `refs/<rev>` when cached. */
  commitFor(revision: string): string | undefined {
    if (isCommitHash(revision)) return revision;
    try {
      return Deno.readTextFileSync(`${this.root}/refs/${revision}`).trim() || undefined;
    } catch {
      return undefined;
    }
  }

  /** `snapshots/<commit>`. */
  snapshotDir(commit: string): string {
    return `${this.root}/snapshots/${commit}`;
  }

  /** `blobs/<etag>`. */
  blobPath(etag: string): string {
    return `${this.root}/blobs/${etag}`;
  }

  /** Whether `path` of the snapshot `commit` is there (a symlink whose blob exists, or a plain file). */
  hasFile(commit: string, path: string): boolean {
    try {
      return Deno.statSync(`${this.snapshotDir(commit)}/${path}`).isFile;
    } catch {
      return false;
    }
  }

  /** Record that `revision` (a branch or tag) points to `commit`, atomically; nothing for a hash. */
  writeRef(revision: string, commit: string): void {
    if (revision === commit) return;
    const path = `${this.root}/refs/${revision}`;
    if (this.commitFor(revision) === commit) return;
    Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    const tmp = `${path}.${crypto.randomUUID().slice(0, 8)}.tmp`;
    Deno.writeTextFileSync(tmp, commit); // no newline, as huggingface_hub writes it
    Deno.renameSync(tmp, path);
  }

  /** Point `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative symlink (huggingface_hub's). */
  linkBlob(commit: string, path: string, etag: string): string {
    const dst = `${this.snapshotDir(commit)}/${path}`;
    const folder = dst.slice(0, dst.lastIndexOf("/"));
    Deno.mkdirSync(folder, { recursive: true });
    const depth = path.split("/").length - 1;
    const target = `${"../".repeat(depth + 2)}blobs/${etag}`;
    try {
      Deno.removeSync(dst);
    } catch { /* not there yet */ }
    Deno.symlinkSync(target, dst);
    return dst;
  }
}

const CACHEDIR_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n" +
  "# This file is a cache directory tag created by huggingface_hub.\n" +
  "# For information about cache directory tags, see:\n" +
  "#\thttps://bford.info/cachedir/\n";

/** Write `CACHEDIR.TAG` (backup tools skip the folder), as huggingface_hub does; best effort. */
export function tagCacheDir(cacheDir: string): void {
  try {
    Deno.mkdirSync(cacheDir, { recursive: true });
    Deno.writeTextFileSync(`${cacheDir}/CACHEDIR.TAG`, CACHEDIR_TAG, { createNew: true });
  } catch { /* already tagged, or read-only: the tag is a courtesy */ }
}
