/**
 * Models by id: the files a checkpoint needs (config, safetensors and their index, tokenizer, chat
 * template, generation and image-processor configs) fetched into the Hugging Face cache. Pickled weights
 * (`*.bin`, `*.pt`, `*.pth`, `*.pkl`) are never fetched: unpickling can run code, and safetensors say the same.
 *
 * @module
 */
import { ensureSnapshot, listFiles, type SnapshotDownloadOptions, type SnapshotPlan } from "./download.ts";
import { formatHubRef, parseHubRef } from "./resolve.ts";

/** The tokenizer's files (any that the repository has). */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "vocab.json",
  "merges.txt",
  "special_tokens_map.json",
  "added_tokens.json",
  "chat_template.json",
  "chat_template.jinja",
  "generation_config.json",
];

/** Every top-level file a model needs besides its weights. */
export const MODEL_FILES = ["config.json", ...TOKENIZER_FILES, "preprocessor_config.json"];

const PICKLE = /\.(bin|pt|pth|pkl|pickle|ckpt)$/;

/** Of a repository's files, those `loadModel` needs (`weights` true) or `loadTokenizer` needs. */
export function modelFiles(files: string[], weights = true): string[] {
  const keep = new Set(weights ? MODEL_FILES : ["config.json", ...TOKENIZER_FILES]);
  return files.filter((f) =>
    !f.includes("/") && !PICKLE.test(f) &&
    (keep.has(f) || (weights && (f.endsWith(".safetensors") || f.endsWith(".safetensors.index.json"))))
  );
}

function has(dir: string, f: string): boolean {
  try {
    return Deno.statSync(`${dir}/${f}`).isFile;
  } catch {
    return false;
  }
}

/** The weight files a snapshot folder lacks: the shards its index names, else `model.safetensors`. */
export function missingWeights(dir: string): string[] {
  const index = "model.safetensors.index.json";
  if (has(dir, index)) {
    const map =
      (JSON.parse(Deno.readTextFileSync(`${dir}/${index}`)) as { weight_map?: Record<string, string> })
        .weight_map ?? {};
    return [...new Set(Object.values(map))].filter((f) => !has(dir, f)).sort();
  }
  return has(dir, "model.safetensors")
    ? []
    : ["model.safetensors (or model.safetensors.index.json and its shards)"];
}

function modelPlan(ref: string, weights: boolean): SnapshotPlan {
  let listed: string[] | undefined;
  return {
    select: (files) => (listed = modelFiles(files, weights)),
    missing(dir) {
      const need = has(dir, "config.json") ? [] : ["config.json"];
      if (weights) return [...need, ...missingWeights(dir)];
      // The tokenizer, from the cache alone: its two files unless the snapshot has a tokenizer file. After
      // the listing: the tokenizer files the repository has (none: loadTokenizer uses its embedded default).
      if (listed) return [...need, ...listed.filter((f) => !has(dir, f))];
      const tok = listFiles(dir).some((f) => TOKENIZER_FILES.includes(f));
      return tok ? need : [...need, "tokenizer.json", "tokenizer_config.json"];
    },
    check(selected, all) {
      if (!weights) return undefined;
      if (!selected.some((f) => f.endsWith(".safetensors"))) {
        const pickles = all.filter((f) => PICKLE.test(f));
        return `The model ${ref} has no safetensors weights` +
          (pickles.length
            ? ` (only ${pickles.slice(0, 3).join(", ")}, pickles that medthink never loads)`
            : "") +
          ": use a repository (or a revision, e.g. refs/pr/N) that has model.safetensors.";
      }
      if (!selected.includes("config.json")) return `The model ${ref} has no config.json.`;
      return undefined;
    },
  };
}

/** Options of {@linkcode resolveModelDir}. */
export type ResolveModelOptions = Omit<SnapshotDownloadOptions, "repoType" | "revision" | "allowPatterns"> & {
  /** `model` (default: config, weights, tokenizer, processor) or `tokenizer` (config and tokenizer only). */
  purpose?: "model" | "tokenizer";
};

/**
 * A model folder for `dirOrId`: the folder itself when it exists (or is not an id), else the snapshot of
 * the Hub model `org/name[@revision]` in the Hugging Face cache, downloaded when missing.
 *
 * @example
 * ```ts ignore
 * import { resolveModelDir } from "./models.ts";
 * const dir = await resolveModelDir("Qwen/Qwen2.5-VL-3B-Instruct@main");
 * // ~/.cache/huggingface/hub/models--Qwen--Qwen2.5-VL-3B-Instruct/snapshots/<commit>
 * ```
 */
export async function resolveModelDir(dirOrId: string, options: ResolveModelOptions = {}): Promise<string> {
  const ref = parseHubRef(dirOrId);
  if (!ref) return dirOrId;
  if (ref.repoType !== "model" || ref.path) {
    throw new Error(
      `'${dirOrId}' names a ${ref.repoType} file, not a model: write org/name or org/name@revision.`,
    );
  }
  const { purpose, ...rest } = options;
  try {
    const snap = await ensureSnapshot(ref.repoId, modelPlan(formatHubRef(ref), purpose !== "tokenizer"), {
      ...rest,
      repoType: "model",
      revision: ref.revision,
    });
    return snap.dir;
  } catch (e) {
    // `org/name` may have been meant as a relative folder: say that none exists before the Hub's answer.
    const msg = (e as Error).message;
    if (!dirOrId.startsWith("hf://") && /does not exist on|Cannot reach the Hub/.test(msg)) {
      throw new Error(
        `No folder ${dirOrId} exists here, and as a Hub id: ${msg[0].toLowerCase()}${msg.slice(1)}`,
      );
    }
    throw e;
  }
}
