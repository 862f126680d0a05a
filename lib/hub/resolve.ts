/**
 * Reading a Hugging Face Hub reference: `org/name`, `org/name@revision`, `hf://org/name`,
 * `hf://datasets/org/name[@revision][/path/in/repo]`. A path that exists on disk is never a reference.
 *
 * @module
 */

/** A repository on the Hub, at a revision, optionally one file of it. */
export interface HubRef {
  /** `model` or `dataset`. */
  repoType: "model" | "dataset";
  /** `org/name`. */
  repoId: string;
  /** Branch, tag or commit; default `main`. */
  revision: string;
  /** One file inside the repository (only `hf://datasets/ID/PATH` names one). */
  path?: string;
}

// The Hub's rule for names: letters, digits, `-`, `_`, `.`; no leading or trailing `-`/`.`, no `--`/`..`.
const NAME = String.raw`[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?`;
const REPO_ID = new RegExp(`^${NAME}/${NAME}$`);

/** Whether `id` has the shape of a Hub repository id (`org/name`). */
export function isRepoId(id: string): boolean {
  return REPO_ID.test(id) && !id.includes("--") && !id.includes("..");
}

function existsLocally(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function splitRevision(text: string, ref: string): [string, string] {
  const at = text.indexOf("@");
  if (at < 0) return [text, "main"];
  const rev = decodeURIComponent(text.slice(at + 1));
  if (!rev) {
    throw new Error(`The Hub reference '${ref}' has an empty revision after '@': write org/name@main.`);
  }
  return [text.slice(0, at), rev];
}

/**
 * Parse a Hub reference, or return `undefined` when `ref` is not one (a path that exists locally, or text
 * of another shape). Models: `org/name`, `org/name@rev`, `hf://org/name[@rev]`. Datasets:
 * `hf://datasets/org/name[@rev][/path]`.
 *
 * @example
 * ```ts
 * import { parseHubRef } from "./resolve.ts";
 * const r = parseHubRef("Qwen/Qwen2.5-VL-3B-Instruct@main")!;
 * console.assert(r.repoId === "Qwen/Qwen2.5-VL-3B-Instruct" && r.revision === "main");
 * const d = parseHubRef("hf://datasets/UCSC-VLAA/MedVLThinker-Eval/data/test-00000-of-00001.parquet")!;
 * console.assert(d.repoType === "dataset" && d.path === "data/test-00000-of-00001.parquet");
 * ```
 */
export function parseHubRef(ref: string): HubRef | undefined {
  if (existsLocally(ref)) return undefined;
  if (ref.startsWith("hf://")) {
    let rest = ref.slice("hf://".length);
    let repoType: HubRef["repoType"] = "model";
    if (rest.startsWith("datasets/")) [repoType, rest] = ["dataset", rest.slice("datasets/".length)];
    else if (rest.startsWith("models/")) rest = rest.slice("models/".length);
    const parts = rest.split("/");
    if (parts.length < 2) {
      throw new Error(`The Hub reference '${ref}' names no repository: write hf://datasets/org/name.`);
    }
    const [name, revision] = splitRevision(parts[1], ref);
    const repoId = `${parts[0]}/${name}`;
    if (!isRepoId(repoId)) throw new Error(`'${repoId}' in '${ref}' is not a Hub repository id (org/name).`);
    const path = parts.slice(2).join("/");
    if (path.split("/").some((p) => p === ".." || p === ".")) {
      throw new Error(`The path '${path}' in '${ref}' must stay inside the repository.`);
    }
    return { repoType, repoId, revision, ...(path ? { path } : {}) };
  }
  const [repoId, revision] = splitRevision(ref, ref);
  return isRepoId(repoId) ? { repoType: "model", repoId, revision } : undefined;
}

/** `ref` written back: `org/name@rev` (models) or `hf://datasets/org/name@rev/path`. */
export function formatHubRef(ref: HubRef): string {
  const rev = ref.revision === "main" ? "" : `@${ref.revision}`;
  if (ref.repoType === "model" && !ref.path) return `${ref.repoId}${rev}`;
  return `hf://${ref.repoType}s/${ref.repoId}${rev}${ref.path ? `/${ref.path}` : ""}`;
}
