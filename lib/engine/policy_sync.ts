/**
 * Remote rollouts for `grpo()`: the trainer keeps the weights, a server samples. Before a generation
 * round that follows an optimizer update, the new policy goes to every server:
 *
 * - with LoRA adapters: the adapter is saved in PEFT format to a folder the servers can read, then
 *   vLLM / `medthink serve` get `POST /v1/load_lora_adapter {lora_name, lora_path, load_inplace: true}`
 *   (vLLM needs `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and `--enable-lora`), SGLang gets
 *   `POST /unload_lora_adapter` then `POST /load_lora_adapter`; rollouts then ask for `model: lora_name`;
 * - with full fine-tuning: a Hub-layout checkpoint is saved and SGLang / `medthink serve` get
 *   `POST /update_weights_from_disk {model_path}` (vLLM's OpenAI server has no such route).
 *
 * @module
 */
import type { CausalLM } from "../model/types.ts";
import { saveLora } from "../model/lora.ts";
import { saveModel } from "../model/load.ts";
import type { CompletionEngine } from "./types.ts";
import {
  apiBaseUrl,
  type OpenAIEngine,
  openaiEngine,
  type OpenAIEngineOptions,
  type ServerProtocol,
} from "./openai.ts";

/** What `grpo({ remote })` needs: an engine to sample from and a way to push the policy to it. */
export interface RemotePolicy {
  /** Samples rollouts (prompt token ids in, token ids and log-probs out). */
  readonly engine: CompletionEngine;
  /** Put the model's current weights on the servers; returns the model name rollouts must request. */
  sync(model: CausalLM, version: number): Promise<string>;
}

/** Options of {@linkcode remotePolicy}. */
export interface RemotePolicyOptions extends OpenAIEngineOptions {
  /** A folder the servers can read (shared storage on a cluster), where adapters / checkpoints are written. */
  dir: string;
  /** The adapter's name on the servers. Default `policy`. */
  loraName?: string;
  /** Versions kept on disk (older folders are removed). Default 2. */
  keep?: number;
}

async function post(
  url: string,
  body: unknown,
  apiKey: string | undefined,
): Promise<{ status: number; text: string }> {
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: r.status, text: await r.text() };
}

/**
 * Remote rollouts over OpenAI-compatible servers with weight sync after each update.
 *
 * @example
 * ```ts ignore
 * const remote = remotePolicy({ baseUrls: ["http://gpu1:8000"], protocol: "vllm", model: "Qwen/Qwen2.5-VL-3B-Instruct", dir: "/shared/policy" });
 * await grpo(model, rows, { ...MEDVLTHINKER_GRPO, tokenizer, prompt, rewards, remote });
 * ```
 */
export function remotePolicy(options: RemotePolicyOptions): RemotePolicy & { engine: OpenAIEngine } {
  const engine = openaiEngine(options);
  const protocol: ServerProtocol = options.protocol ?? "vllm";
  const loraName = options.loraName ?? "policy";
  const keep = options.keep ?? 2;
  const roots = engine.baseUrls.map((u) => apiBaseUrl(u).replace(/\/v1$/, ""));
  let apiKey: string | undefined = options.apiKey || undefined;
  try {
    apiKey ||= Deno.env.get(options.apiKeyEnv ?? "OPENAI_API_KEY") || undefined;
  } catch {
    apiKey = undefined;
  }
  const written: string[] = [];

  async function call(path: string, body: unknown, okStatuses: number[] = []): Promise<void> {
    await Promise.all(roots.map(async (root) => {
      const r = await post(`${root}${path}`, body, apiKey);
      if (r.status >= 300 && !okStatuses.includes(r.status)) {
        throw new Error(`POST ${root}${path} failed with HTTP ${r.status}: ${r.text.slice(0, 300)}`);
      }
    }));
  }

  async function prune(): Promise<void> {
    while (written.length > keep) {
      const old = written.shift()!;
      await Deno.remove(old, { recursive: true }).catch(() => {});
    }
  }

  return {
    engine,
    async sync(model, version) {
      const lora = Object.keys(model.lora ?? {}).length > 0 && model.loraEnabled;
      if (lora) {
        const path = `${options.dir}/${loraName}-v${version}`;
        await saveLora(model, path);
        written.push(path);
        if (protocol === "sglang") {
          await call("/unload_lora_adapter", { lora_name: loraName }, [400, 404]);
          await call("/load_lora_adapter", { lora_name: loraName, lora_path: path });
        } else {
          await call("/v1/load_lora_adapter", { lora_name: loraName, lora_path: path, load_inplace: true });
        }
        await prune();
        return loraName;
      }
      if (protocol === "vllm") {
        throw new Error(
          `Remote rollouts with full fine-tuning need a server with POST /update_weights_from_disk (SGLang or ` +
            `medthink serve); vLLM's OpenAI server has none: train LoRA adapters or use protocol sglang.`,
        );
      }
      const path = `${options.dir}/full-v${version}`;
      await saveModel(model, path);
      written.push(path);
      await call("/update_weights_from_disk", { model_path: path });
      await prune();
      return await engine.modelName();
    },
  };
}
