import { deepStrictEqual as assertEquals, ok as assert, throws as assertThrows } from "node:assert/strict";
import { buildPrompt, buildSftMessages, RECIPE_INSTRUCTION, sftTarget } from "../lib/data/prompt.ts";
import { loadDataset, tableRows } from "../lib/data/dataset.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import type { Row } from "../lib/data/types.ts";

const SHARED = new URL("../", import.meta.url).pathname; // the repository root: fixtures under tests/, data under data/
const CACHE = await Deno.makeTempDir({ prefix: "medthink-prompt-" });
const tok = await loadTokenizer(undefined, { cacheDir: `${CACHE}/tok` });
const CASES = Deno.readTextFileSync(`${SHARED}tests/fixtures/chat_template_cases.jsonl`).split("\n").filter((
  l,
) => l.trim())
  .map((l) => JSON.parse(l));

Deno.test("the recipe instruction keeps its literal backslash-n", () => {
  assert(RECIPE_INSTRUCTION.includes("answer.\\nWrite"));
  assert(!RECIPE_INSTRUCTION.includes("\n"));
});

Deno.test("recipe prompt of the first MedQA row renders exactly as the fixture", async () => {
  const c = CASES.find((x) => x.note.startsWith("recipe prompt for the first MedQA row"));
  const row = tableRows(await loadDataset(`${SHARED}data/medqa_4opt/test.jsonl`, { limit: 1 }))[0];
  const messages = buildPrompt(row);
  assertEquals(messages, c.messages);
  assertEquals(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), c.expected);
});

Deno.test("recipe prompt of the first VQA-RAD closed row (image first) renders exactly as the fixture", async () => {
  const c = CASES.find((x) => x.note.startsWith("recipe prompt for the first VQA-RAD closed row"));
  for (const file of ["test.jsonl", "test-00000-of-00001.parquet"]) {
    const row = tableRows(await loadDataset(`${SHARED}data/vqa_rad_closed/${file}`, { limit: 1 }))[0];
    const messages = buildPrompt(row);
    assertEquals((messages[0].content as any[])[0].type, "image");
    assertEquals((messages[0].content as any[])[0].image, row.images[0]);
    assertEquals(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), c.expected, file);
    // Without the image refs the messages are the fixture's.
    const plain = messages.map((m) => ({
      ...m,
      content: (m.content as any[]).map((p) => (p.type === "image" ? { type: "image" } : p)),
    }));
    assertEquals(plain, c.messages);
  }
});

const ROW: Row = {
  id: "r1",
  question: "Which organ secretes insulin?",
  options: { A: "Liver", B: "Pancreas" },
  answerLabel: "B",
  answer: "Pancreas",
  images: [],
  reasoning: "Beta cells live in the islets.",
  datasetName: "toy",
};

Deno.test("user templates, instruction, system prompt", () => {
  const m = buildPrompt(ROW, {
    template: "{instruction}|{question}|{letters}|{options}|{{x}}",
    instruction: "I",
  });
  assertEquals(m, [{
    role: "user",
    content: [{ type: "text", text: "I|Which organ secretes insulin?|A, B|A. Liver\n\nB. Pancreas|{x}" }],
  }]);
  const f = buildPrompt(ROW, { template: (r, c) => `${r.id}:${c.options}`, systemPrompt: "Be brief." });
  assertEquals(f[0], { role: "system", content: "Be brief." });
  assertEquals((f[1].content as any[])[0].text, "r1:A. Liver\n\nB. Pancreas");
  assertEquals(
    tok.applyChatTemplate(f, { addGenerationPrompt: true }),
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nr1:A. Liver\n\nB. Pancreas<|im_end|>\n<|im_start|>assistant\n",
  );
  assertThrows(() => buildPrompt(ROW, { template: "{answer}" }), /uses \{answer\}, which is not one of/);
  const twoImages = buildPrompt({ ...ROW, images: [{ path: "/a.png" }, { path: "/b.png" }] }, {
    template: "{question}",
  });
  assertEquals((twoImages[0].content as any[]).map((p) => p.type), ["image", "image", "text"]);
  assertEquals(
    buildPrompt({ ...ROW, images: [{ path: "/a.png" }] }, { includeImages: false })[0].content.length,
    1,
  );
});

Deno.test("SFT target and SFT messages as the fixture's SFT case renders them", () => {
  assertEquals(sftTarget(ROW), "<think> Beta cells live in the islets. </think>\n<answer> B </answer>");
  assertThrows(() => sftTarget({ ...ROW, reasoning: undefined }), /Row r1 has no reasoning trace/);
  const c = CASES.find((x) => x.note.startsWith("SFT example"));
  const msgs = buildSftMessages({ ...ROW, reasoning: "r" }, { template: "Q" });
  assertEquals(msgs, c.messages);
  assertEquals(tok.applyChatTemplate(msgs, { addGenerationPrompt: false }), c.expected);
});

Deno.test({ name: "cleanup prompt cache", fn: async () => await Deno.remove(CACHE, { recursive: true }) });
