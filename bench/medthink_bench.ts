/**
 * medthink side of `deno task bench`: the same work as bench/pytorch_bench.py and
 * bench/trl_grpo_bench.py, through the toolkit's public functions (`loadModel`, `model.logits`,
 * `model.generate`, `sftLoss` + `adamw`, `grpo`).
 *
 * One workload per process, so that each one's peak RSS (VmHWM) is its own. The last line of stdout
 * is `RESULT {json}`; bench/run.ts parses it.
 *
 *   deno run -A bench/medthink_bench.ts --model DIR --workload prefill --runs 3 [--backend auto]
 *   workloads: load | prefill | decode (--batch N) | sft (--chunk N | --no-chunk) | grpo
 *
 * @module
 */
import { parseArgs } from "node:util";
import { tf } from "../lib/util/deps.ts";
import { useBackend } from "../lib/model/backend.ts";
import { loadModel } from "../lib/model/load.ts";
import { checkWeightsDtype } from "../lib/model/qwen2.ts";
import { nativeGemvReason } from "../lib/model/native_gemv.ts";
import type { CausalLM, GenerateOptions, GenerateResult } from "../lib/model/types.ts";
import { sftLoss } from "../lib/train/losses.ts";
import { adamw, clipScale, valueAndGrads } from "../lib/train/optimizer.ts";
import { grpo, type GrpoStepMetrics, type GrpoTokenizer } from "../lib/train/grpo.ts";
import type { Row } from "../lib/data/types.ts";

/** The benchmark's deterministic token ids (mirrors token_ids() in the Python scripts). */
export function tokenIds(batch: number, length: number, salt: number): number[][] {
  const out: number[][] = [];
  for (let b = 0; b < batch; b++) {
    const row: number[] = [];
    // Exact in doubles: every term stays far below 2^53.
    for (let t = 0; t < length; t++) row.push(((salt * 1000003 + b * 7919 + t * 104729) % 150000) + 100);
    out.push(row);
  }
  return out;
}

/** Peak resident set size of this process in MiB (Linux VmHWM), or NaN elsewhere. */
export function peakRssMb(): number {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+)\s+kB/);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function now(): number {
  return performance.now() / 1000;
}

/** Wait for every queued kernel (webgpu is asynchronous) by reading a few values of `t`. */
async function settle(t: tf.Tensor): Promise<void> {
  const few = tf.tidy(() => t.reshape([-1]).slice([t.size - Math.min(8, t.size)], [Math.min(8, t.size)]));
  await few.data();
  few.dispose();
}

interface Args {
  model: string;
  workload: string;
  runs: number;
  batch: number;
  tokens: number;
  prompt: number;
  newTokens: number;
  backend: string;
  chunk?: number;
  noChunk: boolean;
  prompts: number;
  generations: number;
  promptLen: number;
  maxNew: number;
  micro: number;
  beta: number;
  adamw?: string;
  /** `--weights-dtype bfloat16|float16`: the frozen matrices kept at 2 bytes (decode only). */
  weightsDtype?: "float32" | "bfloat16" | "float16";
}

async function benchLoad(a: Args): Promise<Record<string, unknown>> {
  const times: number[] = [];
  let params = 0;
  for (let i = 0; i < a.runs; i++) {
    const t0 = now();
    const model = await loadModel(a.model, { backend: a.backend });
    times.push(now() - t0);
    params = Object.values(model.params).reduce((s, v) => s + v.size, 0);
    model.dispose();
  }
  return { times, seconds: median(times), params };
}

async function benchPrefill(a: Args): Promise<Record<string, unknown>> {
  const model = await loadModel(a.model, { backend: a.backend });
  const ids = tokenIds(1, a.tokens, 1);
  const warm = model.logits(ids.map((r) => r.slice(0, 16)));
  await settle(warm);
  warm.dispose();
  const times: number[] = [];
  for (let i = 0; i < a.runs; i++) {
    const t0 = now();
    // Full logits [1, T, V], as PyTorch's model(ids).logits.
    const logits = model.logits(ids);
    await settle(logits);
    times.push(now() - t0);
    logits.dispose();
  }
  const t = median(times);
  return { times, seconds: t, tokens: a.tokens, tok_s: a.tokens / t };
}

async function benchDecode(a: Args): Promise<Record<string, unknown>> {
  const model = await loadModel(a.model, { backend: a.backend, weightsDtype: a.weightsDtype });
  const ids = tokenIds(a.batch, a.prompt, 2);
  // No stop ids: every row makes exactly the tokens asked for.
  const gen = (input: number[][], n: number): Promise<GenerateResult> =>
    model.generate(input, { maxNewTokens: n, temperature: 0, eosTokenIds: [] } as GenerateOptions);
  await gen(ids.map((r) => r.slice(0, 8)), 2); // warm-up (small)
  // generate(1 + new) - generate(1) = `new` decode steps: the prompt's time (prefill and the first token,
  // which comes from the prefill's logits) cancels out. The public API has no per-step clock.
  const prefill: number[] = [];
  for (let i = 0; i < Math.max(1, Math.min(2, a.runs)); i++) {
    const t0 = now();
    await gen(ids, 1);
    prefill.push(now() - t0);
  }
  const totals: number[] = [];
  for (let i = 0; i < a.runs; i++) {
    const t0 = now();
    const out = await gen(ids, a.newTokens + 1);
    totals.push(now() - t0);
    if (out.tokens[0].length !== a.newTokens + 1) {
      throw new Error(`decode: row 0 made ${out.tokens[0].length} tokens, expected ${a.newTokens + 1}.`);
    }
  }
  const p = median(prefill);
  const times = totals.map((t) => t - p);
  const t = median(times);
  return {
    times,
    seconds: t,
    prefill_times: prefill,
    total_times: totals,
    batch: a.batch,
    new_tokens: a.newTokens,
    tok_s: (a.batch * a.newTokens) / t,
    weights_dtype: a.weightsDtype ?? "float32",
    native_gemv: nativeGemvReason() || "on",
  };
}

async function benchSft(a: Args): Promise<Record<string, unknown>> {
  const model = await loadModel(a.model, { backend: a.backend });
  const ids = tokenIds(a.batch, a.tokens, 3);
  const mask = ids.map((r) => r.map(() => 1));
  // --no-chunk: the whole [B*T, V] logits at once (one chunk), the memory a naive loss needs.
  const chunkSize = a.noChunk ? a.batch * a.tokens : a.chunk;
  // --adamw host|tensor: force AdamW's path (default: the optimizer's own choice for the backend).
  const hostMoments = a.adamw === undefined ? undefined : a.adamw === "host";
  const opt = adamw({ params: model.params, lr: 1e-5, betas: [0.9, 0.95], weightDecay: 1e-4, hostMoments });
  const times: number[] = [];
  const losses: number[] = [];
  const split: Record<string, number>[] = [];
  for (let i = 0; i < a.runs; i++) {
    const t0 = now();
    const { value, grads } = valueAndGrads(
      () => sftLoss(model, { inputIds: ids, attentionMask: mask, labels: ids, chunkSize }),
      model.params,
    );
    const loss = (await value.data())[0];
    const t1 = now();
    const { scale } = await clipScale(grads, 1.0);
    opt.step(grads, { gradScale: scale });
    tf.dispose(Object.values(grads));
    value.dispose();
    const probe = Object.values(model.params)[0];
    await settle(probe);
    const t2 = now();
    times.push(t2 - t0);
    split.push({ forward_backward: t1 - t0, clip_and_adamw: t2 - t1 });
    losses.push(loss);
  }
  const s = median(times);
  return {
    times,
    seconds: s,
    tokens: a.batch * a.tokens,
    tok_s: (a.batch * a.tokens) / s,
    losses,
    split,
    chunk_size: chunkSize ?? "default",
    adamw: a.adamw ?? "default",
    live_tensors: tf.memory().numTensors,
  };
}

/** Token `i` is the word `t<i>` (the same tokenizer trl_grpo_bench.py builds). */
const wordTokenizer: GrpoTokenizer = {
  encode: (text: string) => text.trim().split(/\s+/).map((w) => Number(w.slice(1))),
  decode: (ids: number[]) => ids.map((i) => `t${i}`).join(" "),
  padTokenId: 151643,
};

/**
 * The model, with timestamps: generation is `generate`'s time, and the log-prob phase runs from the end
 * of generation to the first forward pass under a gradient tape (the loss's), which starts the update.
 */
function clockedModel(model: CausalLM, clock: { gen: number; genEnd: number; firstGrad: number }): CausalLM {
  // deno-lint-ignore no-explicit-any
  const engine = tf.engine() as any;
  const w = {
    get config() {
      return model.config;
    },
    get dir() {
      return model.dir;
    },
    get backend() {
      return model.backend;
    },
    get params() {
      return model.params;
    },
    get lora() {
      return model.lora;
    },
    set lora(v) {
      model.lora = v;
    },
    get loraEnabled() {
      return model.loraEnabled;
    },
    set loraEnabled(v) {
      model.loraEnabled = v;
    },
    hidden(...args: Parameters<CausalLM["hidden"]>) {
      if (engine.state.gradientDepth > 0 && !clock.firstGrad) {
        clock.firstGrad = now();
        // On stderr as it happens: a run killed later (out of memory) still tells how far it got.
        console.error(
          `[phase] log-prob done after ${(clock.firstGrad - clock.genEnd).toFixed(1)} s; update starts`,
        );
      }
      return model.hidden(...args);
    },
    lmHeadWeight: () => model.lmHeadWeight(),
    logits: (...args: Parameters<CausalLM["logits"]>) => model.logits(...args),
    async generate(...args: Parameters<CausalLM["generate"]>) {
      const t0 = now();
      const out = await model.generate(...args);
      clock.genEnd = now();
      clock.gen += clock.genEnd - t0;
      console.error(
        `[phase] generation done in ${(clock.genEnd - t0).toFixed(1)} s; peak RSS ${
          (peakRssMb() / 1024).toFixed(2)
        } GiB`,
      );
      return out;
    },
    dispose: () => model.dispose(),
  };
  return w as CausalLM;
}

async function benchGrpo(a: Args): Promise<Record<string, unknown>> {
  const model = await loadModel(a.model, { backend: a.backend });
  const rows = tokenIds(a.prompts, a.promptLen, 4).map((ids, i) => ({
    id: `p${i}`,
    question: ids.map((t) => `t${t}`).join(" "),
    options: {},
    answerLabel: "A",
    answer: "",
    images: [],
  })) as Row[];
  const clock = { gen: 0, genEnd: 0, firstGrad: 0 };
  let metrics: GrpoStepMetrics | undefined;
  const t0 = now();
  await grpo(clockedModel(model, clock), rows, {
    tokenizer: wordTokenizer,
    promptText: (row) => row.question,
    // Any non-constant reward (speed does not depend on the values).
    rewards: [["hash", (c: string) => (c.length * 2654435761 % 997) / 997]],
    maxSteps: 1,
    numGenerations: a.generations,
    promptsPerStep: a.prompts,
    miniBatchPrompts: a.prompts,
    microBatchSize: a.micro,
    maxNewTokens: a.maxNew,
    temperature: 1,
    topP: 1,
    beta: a.beta,
    lossType: "dapo",
    epsilonLow: 0.2,
    epsilonHigh: 0.2,
    learningRate: 1e-6,
    weightDecay: 0.01,
    maxGradNorm: 1,
    // TRL skips the old-log-prob pass when generation and update are aligned (one iteration): so do we.
    recomputeOldLogps: false,
    shuffle: false,
    progress: false,
    onStep: (m) => {
      metrics = m;
    },
  });
  const total = now() - t0;
  const logprob = clock.firstGrad ? clock.firstGrad - clock.genEnd : 0;
  return {
    seconds: total,
    generation_s: clock.gen,
    logprob_s: logprob,
    update_s: total - clock.gen - logprob,
    generated_tokens: metrics ? metrics.completion_length * a.prompts * a.generations : NaN,
    completions: a.prompts * a.generations,
    micro: a.micro,
    metrics,
  };
}

function cpuModel(): string {
  try {
    const m = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/);
    return m ? m[1].trim() : "unknown";
  } catch {
    return "unknown";
  }
}

/** Runs one workload and prints `RESULT {json}` (also called by bench/gpu_device.ts and bench/gpu_probe.ts). */
export async function main(args: string[] = Deno.args): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" },
      workload: { type: "string" },
      runs: { type: "string", default: "3" },
      batch: { type: "string", default: "1" },
      tokens: { type: "string", default: "512" },
      prompt: { type: "string", default: "64" },
      "new-tokens": { type: "string", default: "64" },
      backend: { type: "string", default: Deno.env.get("MEDTHINK_BACKEND") ?? "auto" },
      chunk: { type: "string" },
      "no-chunk": { type: "boolean", default: false },
      prompts: { type: "string", default: "8" },
      generations: { type: "string", default: "8" },
      "prompt-len": { type: "string", default: "64" },
      "max-new": { type: "string", default: "128" },
      micro: { type: "string", default: "8" },
      beta: { type: "string", default: "0.01" },
      adamw: { type: "string" },
      "weights-dtype": { type: "string" },
    },
  });
  if (!values.model || !values.workload) {
    throw new Error("medthink_bench.ts needs --model DIR and --workload load|prefill|decode|sft|grpo.");
  }
  const a: Args = {
    model: values.model,
    workload: values.workload,
    runs: Number(values.runs),
    batch: Number(values.batch),
    tokens: Number(values.tokens),
    prompt: Number(values.prompt),
    newTokens: Number(values["new-tokens"]),
    backend: values.backend!,
    chunk: values.chunk ? Number(values.chunk) : undefined,
    noChunk: values["no-chunk"]!,
    prompts: Number(values.prompts),
    generations: Number(values.generations),
    promptLen: Number(values["prompt-len"]),
    maxNew: Number(values["max-new"]),
    micro: Number(values.micro),
    beta: Number(values.beta),
    adamw: values.adamw,
    weightsDtype: checkWeightsDtype(values["weights-dtype"]),
  };
  const backend = await useBackend(a.backend);
  const fns: Record<string, (a: Args) => Promise<Record<string, unknown>>> = {
    load: benchLoad,
    prefill: benchPrefill,
    decode: benchDecode,
    sft: benchSft,
    grpo: benchGrpo,
  };
  const fn = fns[a.workload];
  if (!fn) throw new Error(`Unknown --workload '${a.workload}': choose load, prefill, decode, sft or grpo.`);
  const result = await fn(a);
  Object.assign(result, {
    workload: a.workload,
    peak_rss_mb: peakRssMb(),
    backend,
    tf_threads: Deno.env.get("TF_NUM_INTRAOP_THREADS") ?? null,
    deno: Deno.version.deno,
    cpu: cpuModel(),
  });
  console.log("RESULT " + JSON.stringify(result));
}

if (import.meta.main) await main();
