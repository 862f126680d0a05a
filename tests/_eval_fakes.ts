/**
 * Fakes for probe / evaluate tests: a character-level tokenizer and a "model" whose completion for
 * an output row is a pure function of that row's seed, so expected pass counts can be computed
 * independently from `sampleSeed`.
 *
 * @module
 */
import type { CausalLM, GenerateOptions, GenerateResult, ModelConfig } from "../lib/model/types.ts";
import type { ChatMessage, EncodedBatch } from "../lib/data/tokenizer.ts";
import type { Row } from "../lib/data/types.ts";

export const PAD = 0;
export const EOS = 1;

/** Character-level tokenizer: id = char code (+2 so 0/1 stay special). */
export const charTokenizer = {
  applyChatTemplate(messages: ChatMessage[], _options?: { addGenerationPrompt?: boolean }): string {
    return messages.map((m) =>
      typeof m.content === "string"
        ? m.content
        : m.content.map((p) => (p.type === "text" ? p.text : "<img>")).join("")
    ).join("\n") + "\nassistant:";
  },
  encodeBatch(texts: string[], _options?: { padding?: "left" | "right" }): EncodedBatch {
    const rows = texts.map((t) => [...t].map((c) => c.charCodeAt(0) + 2));
    const w = Math.max(...rows.map((r) => r.length));
    return {
      inputIds: rows.map((r) => [...new Array(w - r.length).fill(PAD), ...r]),
      attentionMask: rows.map((r) => [...new Array(w - r.length).fill(0), ...r.map(() => 1)]),
    };
  },
  decode(ids: number[], options: { skipSpecialTokens?: boolean } = {}): string {
    return ids.map((
      i,
    ) => (i <= 1
      ? (options.skipSpecialTokens ? "" : i === EOS ? "<eos>" : "<pad>")
      : String.fromCharCode(i - 2))
    )
      .join("");
  },
};

/** The completion text the fake model writes for a seed. */
export type Writer = (seed: number, prompt: string) => string;

/** Seed % 4 picks the letter; every third seed answers without tags (lenient-only correct). */
export const defaultWriter: Writer = (seed) => {
  const letter = "ABCD"[seed % 4];
  return seed % 3 === 0 ? `The answer is ${letter}` : `<think>hmm</think>\n<answer>${letter}</answer>`;
};

/** A fake text model plus a log of what it was asked. */
export interface FakeModel extends CausalLM {
  calls: { prompts: string[]; seeds: number[]; numSamples: number; temperature?: number }[];
  /** Throw on this call (1-based) to simulate a crash. */
  failOnCall?: number;
}

export function fakeModel(writer: Writer = defaultWriter, config: Partial<ModelConfig> = {}): FakeModel {
  const model: FakeModel = {
    config: {
      modelType: "fake",
      vocabSize: 70000,
      hiddenSize: 1,
      intermediateSize: 1,
      numHiddenLayers: 1,
      numAttentionHeads: 1,
      numKeyValueHeads: 1,
      headDim: 1,
      rmsNormEps: 1e-6,
      ropeTheta: 1e4,
      tieWordEmbeddings: true,
      maxPositionEmbeddings: 1 << 20,
      eosTokenIds: [EOS],
      dtype: "float32",
      raw: {},
      ...config,
    },
    dir: "fake-model",
    backend: "none",
    params: {},
    lora: {},
    loraEnabled: false,
    calls: [],
    hidden() {
      throw new Error("fake model: no forward");
    },
    lmHeadWeight() {
      throw new Error("fake model: no head");
    },
    logits() {
      throw new Error("fake model: no forward");
    },
    generate(inputIds: number[][] | unknown, options: GenerateOptions = {}): Promise<GenerateResult> {
      const ids = inputIds as number[][];
      const n = options.numSamples ?? 1;
      const seeds = options.seeds!;
      const prompts = ids.map((r) => charTokenizer.decode(r, { skipSpecialTokens: true }));
      model.calls.push({ prompts, seeds: [...seeds], numSamples: n, temperature: options.temperature });
      if (model.failOnCall === model.calls.length) throw new Error("fake model: simulated crash");
      if (seeds.length !== ids.length * n) throw new Error("fake model: one seed per output row expected");
      const max = options.maxNewTokens ?? 32;
      const tokens: number[][] = [], logprobs: number[][] = [], finishReasons: ("stop" | "length")[] = [];
      for (let i = 0; i < ids.length; i++) {
        for (let j = 0; j < n; j++) {
          const text = writer(seeds[i * n + j], prompts[i]);
          const t = [...[...text].map((c) => c.charCodeAt(0) + 2), EOS];
          const cut = t.slice(0, max);
          tokens.push(cut);
          logprobs.push(cut.map(() => -1));
          finishReasons.push(cut.length === t.length ? "stop" : "length");
        }
      }
      return Promise.resolve({ tokens, logprobs, finishReasons });
    },
    dispose() {},
  } as FakeModel;
  return model;
}

/** MedQA-like rows. */
export function fakeRows(count: number, prefix = "q"): Row[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `${prefix}${i}`,
    question: `Question number ${i}?`,
    options: { A: "alpha", B: "beta", C: "gamma", D: "delta" },
    answerLabel: "ABCD"[i % 4],
    answer: ["alpha", "beta", "gamma", "delta"][i % 4],
    images: [],
    datasetName: prefix,
  }));
}
