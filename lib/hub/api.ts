/**
 * The Hub's HTTP API, the parts a download needs: the revision listing
 * (`api/models/ID/revision/REV`, `api/datasets/ID/revision/REV`: the commit `sha` and the `siblings`)
 * and a file's metadata (`HEAD /ID/resolve/REV/PATH`: `X-Repo-Commit`, `X-Linked-Etag` / `ETag`,
 * `X-Linked-Size`, the LFS redirect's `Location`).
 *
 * @module
 */
import { envVar, hfHome } from "./cache.ts";

/** `HF_ENDPOINT`, default `https://huggingface.co`. */
export function hubEndpoint(): string {
  return (envVar("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, "");
}

/** `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else the token `huggingface-cli login` saved (`HF_TOKEN_PATH`). */
export function hubToken(): string | undefined {
  const t = envVar("HF_TOKEN") ?? envVar("HUGGING_FACE_HUB_TOKEN");
  if (t) return t.trim();
  try {
    return Deno.readTextFileSync(envVar("HF_TOKEN_PATH") ?? `${hfHome()}/token`).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Request headers: the token as `Authorization: Bearer`, when there is one. */
export function hubHeaders(token = hubToken()): Record<string, string> {
  const h: Record<string, string> = { "user-agent": "medthink; deno" };
  if (token) h.authorization = `Bearer ${token}`;
  return h;
}

/** A repository on the Hub and where requests go. */
export interface HubRepo {
  /** `org/name`. */
  repoId: string;
  /** `model` or `dataset`. */
  repoType: "model" | "dataset";
  /** Base URL (default {@linkcode hubEndpoint}). */
  endpoint?: string;
  /** Token (default {@linkcode hubToken}). */
  token?: string;
}

/** One sentence for a failed Hub request: what was asked, why it failed, what to do. */
export async function hubError(res: Response, repo: HubRepo, what: string, revision: string): Promise<Error> {
  await res.body?.cancel();
  const code = res.headers.get("x-error-code") ?? "";
  const name = `${repo.repoType === "dataset" ? "dataset" : "model"} ${repo.repoId}`;
  const where = repo.endpoint ?? hubEndpoint();
  if (code === "RevisionNotFound") {
    return new Error(
      `The ${name} has no revision '${revision}' on ${where}: name an existing branch, tag or commit.`,
    );
  }
  if (code === "EntryNotFound") {
    return new Error(`The ${name} at '${revision}' has no file ${what} on ${where}.`);
  }
  if (res.status === 401 || res.status === 403 || code === "GatedRepo") {
    const has = (repo.token ?? hubToken()) !== undefined;
    return new Error(
      `The ${name} is gated or private (HTTP ${res.status} for ${what}): ` +
        (has
          ? "the token in HF_TOKEN has no access to it; accept its terms on the Hub or use a token that has access."
          : "set HF_TOKEN to a token that has access (accept the repository's terms on the Hub first)."),
    );
  }
  if (res.status === 404) {
    return new Error(
      `The ${name} does not exist on ${where} (or it is private: set HF_TOKEN): check the id.`,
    );
  }
  return new Error(
    `The Hub (${where}) answered HTTP ${res.status} for ${what} of the ${name}; try again later.`,
  );
}

/** What `api/{models,datasets}/ID/revision/REV` says. */
export interface RevisionInfo {
  /** The commit the revision resolves to. */
  sha: string;
  /** Every file of the repository at that commit. */
  files: string[];
}

function repoUrl(repo: HubRepo): string {
  return `${repo.endpoint ?? hubEndpoint()}/${repo.repoType === "dataset" ? "datasets/" : ""}${repo.repoId}`;
}

async function request(url: string, init: RequestInit, repo: HubRepo): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (e) {
    throw new Error(
      `Cannot reach the Hub at ${repo.endpoint ?? hubEndpoint()} (${(e as Error).message}): ` +
        "check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only.",
    );
  }
}

/**
 * The commit a revision resolves to and the repository's files there.
 *
 * @example
 * ```ts ignore
 * import { revisionInfo } from "./api.ts";
 * const { sha, files } = await revisionInfo({ repoId: "Qwen/Qwen2.5-VL-3B-Instruct", repoType: "model" }, "main");
 * ```
 */
export async function revisionInfo(repo: HubRepo, revision: string): Promise<RevisionInfo> {
  const url = `${repo.endpoint ?? hubEndpoint()}/api/${repo.repoType}s/${repo.repoId}/revision/` +
    encodeURIComponent(revision);
  const res = await request(url, { headers: hubHeaders(repo.token) }, repo);
  if (!res.ok) throw await hubError(res, repo, "the file listing", revision);
  const body = await res.json() as { sha?: string; siblings?: { rfilename: string }[] };
  if (typeof body.sha !== "string" || !Array.isArray(body.siblings)) {
    throw new Error(`The Hub's listing of ${repo.repoId} at '${revision}' (${url}) has no sha or siblings.`);
  }
  return { sha: body.sha, files: body.siblings.map((s) => s.rfilename) };
}

/** What `HEAD .../resolve/REV/PATH` says of one file. */
export interface FileMetadata {
  /** The commit (`X-Repo-Commit`). */
  commit: string;
  /** The blob's name in the cache: the LFS sha256 (`X-Linked-Etag`) or the git blob sha1 (`ETag`). */
  etag: string;
  /** Bytes (`X-Linked-Size`, else `Content-Length`), when the server says. */
  size?: number;
  /** Where to GET it: the LFS redirect's target, else the resolve URL. */
  location: string;
}

/** The `resolve` URL of one file. */
export function resolveUrl(repo: HubRepo, revision: string, path: string): string {
  return `${repoUrl(repo)}/resolve/${encodeURIComponent(revision)}/${
    path.split("/").map(encodeURIComponent).join("/")
  }`;
}

/** HEAD one file without following the LFS redirect (its headers carry the metadata, as on the Hub). */
export async function fileMetadata(repo: HubRepo, revision: string, path: string): Promise<FileMetadata> {
  let url = resolveUrl(repo, revision, path);
  for (let hop = 0; hop < 5; hop++) {
    const res = await request(url, {
      method: "HEAD",
      redirect: "manual",
      headers: { ...hubHeaders(repo.token), "accept-encoding": "identity" },
    }, repo);
    await res.body?.cancel();
    const location = res.headers.get("location");
    const isRedirect = res.status >= 300 && res.status < 400 && location;
    if (!res.ok && !isRedirect) throw await hubError(res, repo, path, revision);
    const etag = (res.headers.get("x-linked-etag") ?? res.headers.get("etag"))?.replace(/^W\//, "").replace(
      /"/g,
      "",
    );
    const commit = res.headers.get("x-repo-commit");
    const target = isRedirect ? new URL(location!, url).href : url;
    // A redirect that stays on the Hub's host (a renamed repository, the resolve cache) is followed, as
    // huggingface_hub does; one to another host (the LFS CDN) carries the metadata itself.
    if (isRedirect && new URL(target).hostname === new URL(url).hostname) {
      url = target;
      continue;
    }
    if (!etag || !commit) {
      throw new Error(`The Hub's answer for ${path} of ${repo.repoId} (${url}) lacks ETag or X-Repo-Commit.`);
    }
    const sizeText = res.headers.get("x-linked-size") ??
      (isRedirect ? null : res.headers.get("content-length"));
    return { commit, etag, size: sizeText === null ? undefined : Number(sizeText), location: target };
  }
  throw new Error(`Too many redirects resolving ${path} of ${repo.repoId}.`);
}
