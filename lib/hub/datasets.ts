/**
 * Datasets by id: `hf://datasets/ORG/NAME[@rev]` fetches the repository's parquet files (the Hub's layouts
 * `data/SPLIT-00000-of-00001.parquet`, `CONFIG/SPLIT-*.parquet`, `CONFIG/SPLIT/*.parquet`), restricted
 * to a config and a split; `hf://datasets/ORG/NAME[@rev]/PATH` fetches one file.
 *
 * @module
 */
import { ensureSnapshot, type SnapshotDownloadOptions, type SnapshotPlan } from "./download.ts";
import { formatHubRef, parseHubRef } from "./resolve.ts";

const DATA_FILE = /\.(parquet|jsonl|json|csv|tsv)$/;

/** Options of {@linkcode hubDatasetFiles}. */
export type HubDatasetOptions = Omit<SnapshotDownloadOptions, "repoType" | "revision" | "allowPatterns"> & {
  /** Only this split: files `SPLIT.ext`, `SPLIT-*.ext`, or in a folder `SPLIT/`. */
  split?: string;
  /** Only this config (the top folder; `default` is `data/`). Needed when the repository has several. */
  config?: string;
};

function configOf(path: string): string {
  const top = path.includes("/") ? path.slice(0, path.indexOf("/")) : "";
  return top === "data" || top === "" ? "default" : top;
}

function splitMatches(path: string, split: string): boolean {
  const parts = path.split("/");
  const name = parts[parts.length - 1].replace(DATA_FILE, "");
  return name === split || name.startsWith(`${split}-`) || name.startsWith(`${split}_`) ||
    parts.slice(0, -1).includes(split);
}

/** Of a dataset repository's files, the parquet files of one config and split (see {@linkcode HubDatasetOptions}). */
export function selectDatasetFiles(files: string[], ref: string, split?: string, config?: string): string[] {
  let data = files.filter((f) => f.endsWith(".parquet"));
  if (!data.length) data = files.filter((f) => DATA_FILE.test(f) && !f.startsWith("."));
  if (!data.length) throw new Error(`The dataset ${ref} has no data files (.parquet, .jsonl, .json, .csv).`);
  const configs = [...new Set(data.map(configOf))].sort();
  if (config !== undefined) {
    if (!configs.includes(config)) {
      throw new Error(`The dataset ${ref} has no config '${config}' (configs: ${configs.join(", ")}).`);
    }
  } else if (configs.length > 1) {
    if (!configs.includes("default")) {
      throw new Error(
        `The dataset ${ref} has several configs (${configs.join(", ")}): choose one with config.`,
      );
    }
    config = "default";
  } else config = configs[0];
  data = data.filter((f) => configOf(f) === config);
  if (split !== undefined) {
    const kept = data.filter((f) => splitMatches(f, split));
    if (!kept.length) {
      const splits = [
        ...new Set(data.map((f) => f.split("/").pop()!.replace(DATA_FILE, "").replace(/[-_].*$/, ""))),
      ];
      throw new Error(
        `The dataset ${ref} has no split '${split}' in config '${config}' (splits: ${splits.join(", ")}).`,
      );
    }
    data = kept;
  }
  return data.sort();
}

/** Shards `NAME-00000-of-00003.parquet` name their count: the ones missing from `have`. */
function missingShards(have: string[]): string[] {
  const out: string[] = [];
  for (const f of have) {
    const m = f.match(/^(.*)-(\d{5})-of-(\d{5})(\.\w+)$/);
    if (!m) continue;
    for (let i = 0; i < Number(m[3]); i++) {
      const name = `${m[1]}-${String(i).padStart(5, "0")}-of-${m[3]}${m[4]}`;
      if (!have.includes(name) && !out.includes(name)) out.push(name);
    }
  }
  return out;
}

function existing(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      const p = `${dir}/${e.name}`;
      try {
        const st = Deno.statSync(p);
        if (st.isDirectory) out.push(...existing(p, `${prefix}${e.name}/`));
        else if (st.isFile) out.push(`${prefix}${e.name}`);
      } catch { /* a link to a missing blob */ }
    }
  } catch { /* no snapshot */ }
  return out;
}

/** What {@linkcode hubDatasetFiles} returns. */
export interface HubDatasetFiles {
  /** Local paths of the data files (in the cache's snapshot folder), sorted. */
  files: string[];
  /** The repository's name (`NAME` of `ORG/NAME`), the default `datasetName` of its rows. */
  name: string;
  /** The snapshot folder. */
  dir: string;
}

/**
 * The local data files of a Hub dataset reference, downloaded into the Hugging Face cache when missing.
 *
 * @example
 * ```ts ignore
 * import { hubDatasetFiles } from "./datasets.ts";
 * const { files } = await hubDatasetFiles("hf://datasets/UCSC-VLAA/MedVLThinker-Eval", { split: "test" });
 * ```
 */
export async function hubDatasetFiles(
  ref: string,
  options: HubDatasetOptions = {},
): Promise<HubDatasetFiles> {
  const parsed = parseHubRef(ref);
  if (!parsed || parsed.repoType !== "dataset") {
    throw new Error(
      `'${ref}' is not a Hub dataset reference: write hf://datasets/org/name[@revision][/path].`,
    );
  }
  const { split, config, ...rest } = options;
  const label = formatHubRef({ ...parsed, path: undefined });
  let chosen: string[] | undefined;
  const plan: SnapshotPlan = parsed.path
    ? {
      select(files) {
        if (!files.includes(parsed.path!)) {
          throw new Error(`The dataset ${label} has no file ${parsed.path}.`);
        }
        return [parsed.path!];
      },
      missing: (dir) => existing(dir).includes(parsed.path!) ? [] : [parsed.path!],
    }
    : {
      select: (files) => (chosen = selectDatasetFiles(files, label, split, config)),
      missing(dir, offline) {
        const have = existing(dir);
        if (chosen) return chosen.filter((f) => !have.includes(f));
        // Without a split, only the listing tells whether every split is here (one request; cached files
        // are not fetched again); offline, what the cache holds is the dataset.
        if (split === undefined && !offline) return ["(the repository's file listing)"];
        // From the cache alone: the selection among what is there, complete by its shard counts.
        try {
          const sel = selectDatasetFiles(have, label, split, config);
          return missingShards(sel);
        } catch {
          return [`${config ? `${config}/` : "data/"}${split ?? "*"}-*.parquet`];
        }
      },
    };
  const snap = await ensureSnapshot(parsed.repoId, plan, {
    ...rest,
    repoType: "dataset",
    revision: parsed.revision,
  });
  const files = parsed.path
    ? [parsed.path]
    : chosen ?? selectDatasetFiles(existing(snap.dir), label, split, config);
  return {
    files: files.map((f) => `${snap.dir}/${f}`),
    name: parsed.repoId.split("/")[1],
    dir: snap.dir,
  };
}
