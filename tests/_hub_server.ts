/**
 * A Hugging Face Hub on loopback, faithful to the parts clients use, for tests of lib/hub and of
 * huggingface_hub against the same server:
 * - `GET /api/{models,datasets}/ORG/NAME[/revision/REV]`: `{ id, sha, siblings: [{ rfilename }] }`;
 * - `GET /api/{models,datasets}/ORG/NAME/tree/REV?recursive=true`: `[{ type, oid, size, path, lfs? }]`;
 * - `HEAD|GET /[datasets/]ORG/NAME/resolve/REV/PATH`: small files through a same-host 307 to
 *   `/api/resolve-cache/...` (`ETag` = git blob sha1), LFS files (safetensors, parquet, bin) as a 302 to a CDN-like host (`localhost`, so clients that
 *   stay on the Hub's host for HEAD do not follow it) with `X-Linked-Etag` (the sha256) and `X-Linked-Size`;
 *   every answer carries `X-Repo-Commit`;
 * - the CDN (`/cdn/SHA256`) honours `Range` (206);
 * - 401 `GatedRepo` for a gated repository without its token, 404 `RepoNotFound`, `RevisionNotFound`,
 *   `EntryNotFound`.
 * Faults on demand: `cutOnce` (the body stops halfway, once), `lie` (corrupted bytes). Every request is recorded.
 *
 * @module
 */
import { createHash } from "node:crypto";

/** One recorded request. */
export interface HubRequest {
  method: string;
  path: string;
  range?: string;
  auth?: string;
}

interface Commit {
  sha: string;
  files: Map<string, Uint8Array>;
}

interface Repo {
  type: "model" | "dataset";
  id: string;
  refs: Map<string, string>;
  commits: Map<string, Commit>;
  gated?: string; // the token that opens it
}

/** The git blob sha1 of `bytes` (the Hub's ETag of a small file). */
export function gitSha1(bytes: Uint8Array): string {
  return createHash("sha1").update(`blob ${bytes.length}\0`).update(bytes).digest("hex");
}

/** The sha256 of `bytes` (the Hub's LFS oid). */
export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Whether the Hub stores `path` in LFS (as .gitattributes does for weights and data). */
export function isLfs(path: string): boolean {
  return /\.(safetensors|parquet|bin|pt|pth|pkl)$/.test(path);
}

/** Every file under `dir` as `{ relative path: bytes }`. */
export function folderFiles(dir: string, prefix = ""): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) Object.assign(out, folderFiles(p, `${prefix}${e.name}/`));
    else out[`${prefix}${e.name}`] = Deno.readFileSync(p);
  }
  return out;
}

/** A Hub on 127.0.0.1. */
export class HubServer {
  /** Base URL (`http://127.0.0.1:PORT`): the value of `HF_ENDPOINT`. */
  readonly url: string;
  /** Every request, in order. */
  readonly requests: HubRequest[] = [];
  /** sha256s whose next full CDN transfer stops halfway. */
  readonly cutOnce = new Set<string>();
  /** sha256s whose CDN bytes are corrupted (the server lies about its content). */
  readonly lie = new Set<string>();
  readonly #repos = new Map<string, Repo>();
  readonly #server: Deno.HttpServer;
  readonly #port: number;

  constructor() {
    this.#server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) => this.#handle(req),
    );
    this.#port = (this.#server.addr as Deno.NetAddr).port;
    this.url = `http://127.0.0.1:${this.#port}`;
  }

  /** Add a commit of `files` to repository `id` and point `branch` (default `main`) at it; returns its sha. */
  addCommit(
    type: "model" | "dataset",
    id: string,
    files: Record<string, Uint8Array>,
    options: { branch?: string; gated?: string } = {},
  ): string {
    const key = `${type}:${id}`;
    let repo = this.#repos.get(key);
    if (!repo) {
      repo = { type, id, refs: new Map(), commits: new Map(), gated: options.gated };
      this.#repos.set(key, repo);
    }
    const h = createHash("sha1").update(`${key}\n${repo.commits.size}\n`);
    for (const p of Object.keys(files).sort()) h.update(`${p} ${gitSha1(files[p])}\n`);
    const sha = h.digest("hex");
    repo.commits.set(sha, { sha, files: new Map(Object.entries(files)) });
    repo.refs.set(options.branch ?? "main", sha);
    return sha;
  }

  /** Requests whose path starts with `prefix` (all by default). */
  count(prefix = "/"): number {
    return this.requests.filter((r) => r.path.startsWith(prefix)).length;
  }

  /** Stop the server. */
  async close(): Promise<void> {
    await this.#server.shutdown();
  }

  #error(status: number, code: string, message: string): Response {
    return new Response(JSON.stringify({ error: message }), {
      status,
      headers: { "content-type": "application/json", "x-error-code": code, "x-error-message": message },
    });
  }

  #lookup(type: "model" | "dataset", id: string, rev: string): Repo | Commit | Response {
    const repo = this.#repos.get(`${type}:${id}`);
    if (!repo) return this.#error(404, "RepoNotFound", "Repository not found");
    const sha = repo.refs.get(rev) ?? (repo.commits.has(rev) ? rev : undefined);
    if (!sha) return this.#error(404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    return repo.commits.get(sha)!;
  }

  #handle(req: Request): Response {
    const url = new URL(req.url);
    const path = decodeURIComponent(url.pathname);
    this.requests.push({
      method: req.method,
      path: url.pathname,
      range: req.headers.get("range") ?? undefined,
      auth: req.headers.get("authorization") ?? undefined,
    });
    let m = url.pathname.match(
      /^\/api\/(models|datasets)\/([^/]+\/[^/]+)(?:\/(revision|tree)\/([^/]+))?\/?$/,
    );
    if (m) {
      const type = m[1] === "models" ? "model" : "dataset";
      const found = this.#lookup(type, m[2], decodeURIComponent(m[4] ?? "main"));
      if (found instanceof Response) return found;
      const commit = found as Commit;
      if (m[3] === "tree") {
        return Response.json([...commit.files].map(([p, b]) => ({
          type: "file",
          oid: gitSha1(b),
          size: b.length,
          path: p,
          ...(isLfs(p) ? { lfs: { oid: sha256(b), size: b.length, pointerSize: 134 } } : {}),
        })));
      }
      const repo = this.#repos.get(`${type}:${m[2]}`)!;
      return Response.json({
        _id: commit.sha.slice(0, 24),
        id: m[2],
        sha: commit.sha,
        private: false,
        gated: repo.gated ? "auto" : false,
        disabled: false,
        lastModified: "2026-01-01T00:00:00.000Z",
        tags: [],
        siblings: [...commit.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }
    m = url.pathname.match(/^\/(datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    if (m && (req.method === "GET" || req.method === "HEAD")) {
      const type = m[1] ? "dataset" : "model";
      const found = this.#lookup(type, m[2], decodeURIComponent(m[3]));
      if (found instanceof Response) return found;
      const repo = this.#repos.get(`${type}:${m[2]}`)!;
      if (repo.gated && req.headers.get("authorization") !== `Bearer ${repo.gated}`) {
        return this.#error(
          401,
          "GatedRepo",
          "Access to this repository is restricted: you must be authenticated.",
        );
      }
      const commit = found as Commit;
      const file = path.slice(path.indexOf("/resolve/") + "/resolve/".length).split("/").slice(1).join("/");
      const bytes = commit.files.get(file);
      if (!bytes) return this.#error(404, "EntryNotFound", `${file} does not exist on "${m[3]}"`);
      const common = { "x-repo-commit": commit.sha, "accept-ranges": "bytes" };
      if (isLfs(file)) {
        const oid = sha256(bytes);
        return new Response(null, {
          status: 302,
          headers: {
            ...common,
            location: `http://localhost:${this.#port}/cdn/${oid}?name=${encodeURIComponent(file)}`,
            "x-linked-etag": `"${oid}"`,
            "x-linked-size": String(bytes.length),
            etag: `"${gitSha1(new TextEncoder().encode(`oid sha256:${oid}`))}"`,
          },
        });
      }
      // Small files go through the Hub's resolve cache: a same-host 307 that clients follow.
      return new Response(null, {
        status: 307,
        headers: {
          ...common,
          location: `/api/resolve-cache/${type}s/${m[2]}/${commit.sha}/${
            file.split("/").map(encodeURIComponent).join("/")
          }`,
        },
      });
    }
    m = url.pathname.match(/^\/api\/resolve-cache\/(models|datasets)\/([^/]+\/[^/]+)\/([0-9a-f]{40})\/(.+)$/);
    if (m && (req.method === "GET" || req.method === "HEAD")) {
      const type = m[1] === "models" ? "model" : "dataset";
      const found = this.#lookup(type, m[2], m[3]);
      if (found instanceof Response) return found;
      const commit = found as Commit;
      const bytes = commit.files.get(decodeURIComponent(m[4]));
      if (!bytes) return this.#error(404, "EntryNotFound", `${m[4]} does not exist on "${m[3]}"`);
      return this.#bytes(req, bytes, { "x-repo-commit": commit.sha, etag: `"${gitSha1(bytes)}"` });
    }
    m = url.pathname.match(/^\/cdn\/([0-9a-f]{64})$/);
    if (m) {
      for (const repo of this.#repos.values()) {
        for (const c of repo.commits.values()) {
          for (const b of c.files.values()) {
            if (sha256(b) !== m[1]) continue;
            let bytes = b;
            if (this.lie.has(m[1])) {
              bytes = b.slice();
              bytes[bytes.length >> 1] ^= 0xff;
            }
            return this.#bytes(req, bytes, { etag: `"${m[1]}"` }, this.cutOnce.delete(m[1]));
          }
        }
      }
      return new Response("not found", { status: 404 });
    }
    return this.#error(404, "RepoNotFound", "Repository not found");
  }

  #bytes(req: Request, bytes: Uint8Array, headers: Record<string, string>, cut = false): Response {
    let start = 0;
    let status = 200;
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-$/);
    if (range) {
      start = Number(range[1]);
      if (start >= bytes.length) {
        return new Response(null, { status: 416, headers: { "content-range": `bytes */${bytes.length}` } });
      }
      status = 206;
      headers = { ...headers, "content-range": `bytes ${start}-${bytes.length - 1}/${bytes.length}` };
    }
    const body = bytes.slice(start);
    headers = { ...headers, "content-length": String(body.length), "accept-ranges": "bytes" };
    if (req.method === "HEAD") return new Response(null, { status, headers });
    if (!cut) return new Response(body, { status, headers });
    // Half the bytes, then the connection breaks (the body errors), as a dropped transfer does.
    const half = body.subarray(0, body.length >> 1);
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        controller.enqueue(half);
        await new Promise((r) => setTimeout(r, 20));
        controller.error(new Error("connection reset by the test server"));
      },
    });
    return new Response(stream, { status, headers });
  }
}
