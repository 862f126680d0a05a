import {
  deepStrictEqual as assertEquals,
  ok as assert,
  rejects as assertRejects,
  strictEqual as assertStrictEquals,
} from "node:assert/strict";
import { BadRowError, loadDataset, loadReport, tableRows } from "../lib/data/dataset.ts";
import { decodeImage, decodeRowImages, sniffImageFormat } from "../lib/data/images.ts";

const DATA = new URL("../data/", import.meta.url).pathname.replace(/\/$/, "");
const SAMPLE_JPEG = `${DATA}/vqa_rad_closed/images/5e684d0681c86c3a.jpg`;

// ---------------------------------------------------------------------------------------------
// The bundled data files

Deno.test("every file in data/ loads with its README row count", async () => {
  const medqa = await loadDataset(`${DATA}/medqa_4opt/test.jsonl`);
  assertEquals(medqa.numRows(), 1273);
  assertEquals(loadReport(medqa)?.formats[`${DATA}/medqa_4opt/test.jsonl`], "medagents");
  const pubmed = await loadDataset(`${DATA}/pubmedqa/ori_pqal.json`);
  assertEquals(pubmed.numRows(), 1000);
  assertEquals(loadReport(pubmed)?.formats[`${DATA}/pubmedqa/ori_pqal.json`], "pubmedqa");
  const vqa = await loadDataset(`${DATA}/vqa_rad_closed/test.jsonl`);
  assertEquals(vqa.numRows(), 251);
  const pq = await loadDataset(`${DATA}/vqa_rad_closed/test-00000-of-00001.parquet`);
  assertEquals(pq.numRows(), 60);
  for (const t of [medqa, pubmed, vqa, pq]) {
    assertEquals(loadReport(t)?.skipped, 0);
    for (const c of ["id", "question", "options", "answerLabel", "answer", "images", "datasetName"]) {
      assert(t.columnNames().includes(c), c);
    }
    const ids = new Set(t.array("id") as string[]);
    assertEquals(ids.size, t.numRows());
  }
  // A folder: its parquet shard (the JSONL beside it is the same data).
  assertEquals((await loadDataset(`${DATA}/vqa_rad_closed`)).numRows(), 60);
  assertEquals((await loadDataset(`${DATA}/vqa_rad_closed`, { split: "test" })).numRows(), 60);
  // Several files at once.
  const both = await loadDataset([`${DATA}/medqa_4opt/test.jsonl`, `${DATA}/pubmedqa/ori_pqal.json`]);
  assertEquals(both.numRows(), 2273);
  assertEquals(new Set(both.array("datasetName") as string[]), new Set(["medqa_4opt", "pubmedqa"]));
});

Deno.test("canonical rows: MedQA (medagents), PubMedQA, VQA-RAD (MedVLThinker schema)", async () => {
  const medqa = tableRows(await loadDataset(`${DATA}/medqa_4opt/test.jsonl`, { limit: 2 }));
  assertEquals(medqa.length, 2);
  assertEquals(medqa[0].id, "medqa_4opt-0");
  assertEquals(Object.keys(medqa[0].options), ["A", "B", "C", "D"]);
  assertEquals(medqa[0].answerLabel, "B");
  assertEquals(medqa[0].answer, "Tell the attending that he cannot fail to disclose this mistake");
  assertEquals(medqa[0].images, []);

  const pubmed = tableRows(await loadDataset(`${DATA}/pubmedqa/ori_pqal.json`));
  // File order is kept (PMIDs are integer-like keys, which JavaScript objects would reorder).
  assertEquals(pubmed[0].id, "21645374");
  assertEquals(pubmed[0].options, { A: "Yes", B: "No", C: "Maybe" });
  assert(pubmed[0].question.startsWith("Do mitochondria play a role in remodelling lace plant leaves"));
  assert(pubmed[0].question.includes("\n\nContext:\nBACKGROUND: Programmed cell death (PCD)"));
  const raw = JSON.parse(Deno.readTextFileSync(`${DATA}/pubmedqa/ori_pqal.json`));
  const decisions: Record<string, string> = { yes: "A", no: "B", maybe: "C" };
  for (const r of pubmed) assertEquals(r.answerLabel, decisions[raw[r.id].final_decision], r.id);
  const counts = { A: 0, B: 0, C: 0 } as Record<string, number>;
  for (const r of pubmed) counts[r.answerLabel]++;
  assertEquals(counts.A + counts.B + counts.C, 1000);
  assert(counts.C > 0 && counts.B > 0 && counts.A > 0);
  const noCtx = tableRows(
    await loadDataset(`${DATA}/pubmedqa/ori_pqal.json`, { includeContexts: false, limit: 1 }),
  );
  assertEquals(noCtx[0].question, raw["21645374"].QUESTION);

  const vqa = tableRows(await loadDataset(`${DATA}/vqa_rad_closed/test.jsonl`));
  assertEquals(vqa[0].id, "vqarad_closed-0");
  assertEquals(vqa[0].datasetName, "vqarad_closed");
  assertEquals(vqa[0].hash, "123070ab6660c1b9");
  assertEquals(vqa[0].options, { A: "Yes", B: "No" });
  assertEquals(vqa[0].images, [{ path: SAMPLE_JPEG, file: `${DATA}/vqa_rad_closed/test.jsonl`, row: 1 }]);
  assertEquals(new Set(vqa.flatMap((r) => r.images.map((i) => i.path))).size, 135);
});

Deno.test("the parquet file's images decode to the same pixels as the JPEG files beside it", async () => {
  const pq = tableRows(await loadDataset(`${DATA}/vqa_rad_closed/test-00000-of-00001.parquet`));
  const jl = tableRows(await loadDataset(`${DATA}/vqa_rad_closed/test.jsonl`, { limit: 60 }));
  assertEquals(pq.length, 60);
  for (let i = 0; i < 60; i++) {
    assertEquals(pq[i].id, jl[i].id);
    assertEquals(pq[i].question, jl[i].question);
    assertEquals(pq[i].answerLabel, jl[i].answerLabel);
    assertEquals(pq[i].hash, jl[i].hash);
    assertEquals(pq[i].images.length, 1);
    assert(pq[i].images[0].bytes instanceof Uint8Array);
    const [a] = await decodeRowImages(pq[i]);
    const [b] = await decodeRowImages(jl[i]);
    assertEquals([a.width, a.height, a.channels], [b.width, b.height, b.channels]);
    assert(
      a.data.length === b.data.length && a.data.every((v: number, k: number) => v === b.data[k]),
      `row ${i}`,
    );
  }
});

// ---------------------------------------------------------------------------------------------
// Bad rows, one test per case, in a temporary dataset folder

async function tempDataset(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "medthink-data-" });
  Deno.mkdirSync(`${dir}/images`);
  Deno.copyFileSync(SAMPLE_JPEG, `${dir}/images/ok.jpg`);
  return dir;
}

function jsonl(rows: unknown[]): string {
  return rows.map((r) => typeof r === "string" ? r : JSON.stringify(r)).join("\n") + "\n";
}

function good(i: number, extra: Record<string, unknown> = {}) {
  return {
    images: ["images/ok.jpg"],
    question: `question ${i}?`,
    options: JSON.stringify({ A: "Yes", B: "No" }),
    answer_label: "A",
    answer: "Yes",
    dataset_name: "toy",
    dataset_index: i,
    ...extra,
  };
}

/** Loads `bad` as row 2 between two good rows: expects the error, then the skip. */
async function checkBadRow(bad: unknown, reason: string, message: RegExp, setup?: (dir: string) => void) {
  const dir = await tempDataset();
  try {
    setup?.(dir);
    const file = `${dir}/train.jsonl`;
    Deno.writeTextFileSync(file, jsonl([good(0), bad, good(2)]));
    const err = await loadDataset(file).then(() => null, (e) => e);
    assert(err instanceof BadRowError, `expected a BadRowError, got ${err}`);
    assertEquals([err.file, err.row, err.reason], [file, 2, reason]);
    assert(err.message.startsWith(`${file} row 2: `), err.message);
    assert(message.test(err.message), err.message);
    // One sentence.
    assertEquals(err.message.split(/\.\s/).length, 1, err.message);
    const table = await loadDataset(file, { onBadRow: "skip" });
    assertEquals(table.numRows(), 2);
    assertEquals(table.array("id"), ["toy-0", "toy-2"]);
    const report = loadReport(table)!;
    assertEquals(report.skipped, 1);
    assertEquals(report.skippedByReason, { [reason]: 1 });
    assertEquals(report.skippedRows[0].row, 2);
    assertEquals(report.skippedRows[0].message, err.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("bad row: answer label not among the options", async () => {
  await checkBadRow(
    good(1, { answer_label: "E" }),
    "bad_label",
    /answer label "E" is not among the options \(A, B\)/,
  );
});

Deno.test("bad row: empty question", async () => {
  await checkBadRow(good(1, { question: "   " }), "empty_question", /the question is empty/);
});

Deno.test("bad row: missing image file", async () => {
  await checkBadRow(
    good(1, { images: ["images/nope.jpg"] }),
    "missing_image",
    /the image images\/nope\.jpg does not exist/,
  );
});

Deno.test("bad row: undecodable image (not an image)", async () => {
  await checkBadRow(
    good(1, { images: ["images/ok.jpg", "images/garbage.jpg"] }),
    "undecodable_image",
    /the image images\/garbage\.jpg is not a known image format/,
    (dir) => Deno.writeTextFileSync(`${dir}/images/garbage.jpg`, "this is not a JPEG"),
  );
});

Deno.test("bad row: undecodable image bytes (JPEG header, broken body) with checkImages decode", async () => {
  const dir = await tempDataset();
  try {
    const broken = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 5, 6, 7, 8]);
    Deno.writeFileSync(`${dir}/images/broken.jpg`, broken);
    const file = `${dir}/d.jsonl`;
    Deno.writeTextFileSync(file, jsonl([good(0), good(1, { images: ["images/broken.jpg"] })]));
    // The header check passes; full decoding at load time catches it.
    assertEquals((await loadDataset(file)).numRows(), 2);
    await assertRejects(
      () => loadDataset(file, { checkImages: "decode" }),
      (e: Error) =>
        e instanceof BadRowError && e.reason === "undecodable_image" && e.message.includes(`${file} row 2:`),
    );
    // Lazily, decodeImage names the file, row and image.
    const row = tableRows(await loadDataset(file))[1];
    await assertRejects(() => decodeImage(row.images[0]), (e: Error) => {
      assert(
        e.message.includes(`${file} row 2: the image ${dir}/images/broken.jpg cannot be decoded`),
        e.message,
      );
      return true;
    });
    await assertRejects(
      () => decodeImage(new TextEncoder().encode("plain text"), { file: "x.parquet", row: 7 }),
      /x\.parquet row 7: the image \(embedded bytes\) is not a JPEG, PNG/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad row: image path escaping the dataset folder (.., absolute, symlink)", async () => {
  await checkBadRow(
    good(1, { images: ["../outside.jpg"] }),
    "image_outside_folder",
    /the image path \.\.\/outside\.jpg leaves the dataset folder/,
  );
  await checkBadRow(
    good(1, { images: ["/etc/passwd"] }),
    "image_outside_folder",
    /\/etc\/passwd leaves the dataset folder/,
  );
  await checkBadRow(
    good(1, { images: ["images/link.jpg"] }),
    "image_outside_folder",
    /images\/link\.jpg leads outside the dataset folder/,
    (dir) => Deno.symlinkSync(SAMPLE_JPEG, `${dir}/images/link.jpg`),
  );
});

Deno.test("bad row: unparseable JSONL line, duplicate id, options that are not an object", async () => {
  await checkBadRow("{not json", "bad_record", /the line is not valid JSON/);
  const dir = await tempDataset();
  try {
    const file = `${dir}/ids.jsonl`;
    Deno.writeTextFileSync(file, jsonl([good(0, { id: "x" }), good(1, { id: "x" })]));
    await assertRejects(() => loadDataset(file), /row 2: the id "x" was already used by an earlier row/);
    Deno.writeTextFileSync(file, jsonl([good(0, { options: "not json" })]));
    await assertRejects(() => loadDataset(file), /row 1: its options are not a JSON object/);
    // Derived ids (dataset_name + dataset_index) that repeat get a stable suffix instead.
    Deno.writeTextFileSync(file, jsonl([good(0), good(0), good(0)]));
    assertEquals((await loadDataset(file)).array("id"), ["toy-0", "toy-0~2", "toy-0~3"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Other layouts

Deno.test("closed VQA: yes/no answers become options A Yes / B No; other answers are bad rows", async () => {
  const dir = await tempDataset();
  try {
    const file = `${dir}/slake.jsonl`;
    Deno.writeTextFileSync(
      file,
      jsonl([
        { qid: 11, image: "images/ok.jpg", question: "Is this a CT?", answer: "Yes" },
        { qid: 12, image: "images/ok.jpg", question: "Is the liver normal?", answer: "no " },
        { qid: 13, image: "images/ok.jpg", question: "Which organ?", answer: "liver" },
      ]),
    );
    await assertRejects(
      () => loadDataset(file),
      /slake\.jsonl row 3: the answer label "liver" is not among the options \(A, B\)/,
    );
    const t = await loadDataset(file, { onBadRow: "skip" });
    assertEquals(loadReport(t)?.formats[file], "closed_vqa");
    const rows = tableRows(t);
    assertEquals(rows.map((r) => [r.id, r.answerLabel, r.answer]), [["11", "A", "Yes"], ["12", "B", "No"]]);
    assertEquals(rows[0].options, { A: "Yes", B: "No" });
    assertEquals(rows[0].images[0].path, `${dir}/images/ok.jpg`);
    assertEquals(rows[0].datasetName, dir.split("/").pop());
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CSV and JSON arrays with a columns mapping; several images per row; label from the answer text", async () => {
  const dir = await tempDataset();
  try {
    Deno.copyFileSync(SAMPLE_JPEG, `${dir}/images/two.jpg`);
    const csv = `${dir}/exam.csv`;
    Deno.writeTextFileSync(
      csv,
      [
        "qid,stem,a,b,c,d,key,pics,why",
        '007,"Which organ, of these, secretes insulin?",Liver,Pancreas,Spleen,,B,"[""images/ok.jpg"",""images/two.jpg""]",beta cells',
        "008,Largest organ?,Skin,Liver,Lung,Brain,a,,",
      ].join("\n"),
    );
    const columns = {
      id: "qid",
      question: "stem",
      options: ["a", "b", "c", "d"],
      answerLabel: "key",
      images: "pics",
      reasoning: "why",
    };
    const t = await loadDataset(csv, { columns, datasetName: "exam" });
    const rows = tableRows(t);
    assertEquals(rows[0].id, "007");
    assertEquals(rows[0].question, "Which organ, of these, secretes insulin?");
    assertEquals(rows[0].options, { A: "Liver", B: "Pancreas", C: "Spleen" });
    assertEquals([rows[0].answerLabel, rows[0].answer, rows[0].reasoning], ["B", "Pancreas", "beta cells"]);
    assertEquals(rows[0].images.map((i) => i.path), [`${dir}/images/ok.jpg`, `${dir}/images/two.jpg`]);
    assertEquals((await decodeRowImages(rows[0])).length, 2);
    assertEquals([rows[1].answerLabel, rows[1].images, rows[1].datasetName], ["A", [], "exam"]);

    const json = `${dir}/exam.json`;
    Deno.writeTextFileSync(
      json,
      JSON.stringify([
        { q: "Pick the vowel", choices: ["b", "e", "k"], correct: "e" },
        { q: "Pick the even", choices: ["3", "4"], correct: "4" },
      ]),
    );
    const j = tableRows(
      await loadDataset(json, { columns: { question: "q", options: "choices", answer: "correct" } }),
    );
    assertEquals(j.map((r) => [r.options, r.answerLabel]), [[{ A: "b", B: "e", C: "k" }, "B"], [{
      A: "3",
      B: "4",
    }, "B"]]);
    assertEquals(j[0].id, `${dir.split("/").pop()}-exam-1`);
    // Without a mapping, an unknown layout is a clear error.
    await assertRejects(
      () => loadDataset(json),
      /exam\.json has columns \(q, choices, correct\) of no known layout/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("MedVLThinker schema in JSON with inline {bytes, path} images; folders with splits", async () => {
  const dir = await tempDataset();
  try {
    const bytes = Array.from(Deno.readFileSync(SAMPLE_JPEG).subarray(0, 64));
    Deno.mkdirSync(`${dir}/data`);
    Deno.writeTextFileSync(
      `${dir}/data/train-00000-of-00001.jsonl`,
      jsonl([good(0), good(1, { images: [{ bytes: null, path: "images/ok.jpg" }], reasoning: "r" })]),
    );
    Deno.writeTextFileSync(`${dir}/data/test-00000-of-00001.jsonl`, jsonl([good(5, { images: [] })]));
    const train = tableRows(await loadDataset(dir, { split: "train" }));
    assertEquals(train.map((r) => r.id), ["toy-0", "toy-1"]);
    // Relative to the file's folder first, then to the dataset folder that was given.
    assertEquals(train[1].images[0].path, `${dir}/images/ok.jpg`);
    assertEquals(train[1].reasoning, "r");
    assertEquals((await loadDataset(dir, { split: "test" })).numRows(), 1);
    assertEquals((await loadDataset(dir)).numRows(), 3);
    await assertRejects(() => loadDataset(dir, { split: "validation" }), /holds no 'validation' data files/);
    // Inline bytes, as Hugging Face parquet stores them (here: an array of byte values in JSON).
    Deno.writeTextFileSync(
      `${dir}/inline.json`,
      JSON.stringify([good(0, { images: [{ bytes, path: "x.jpg" }] })]),
    );
    const inline = tableRows(await loadDataset(`${dir}/inline.json`))[0];
    assertEquals(inline.images[0].name, "x.jpg");
    assertEquals(sniffImageFormat(inline.images[0].bytes!), "jpeg");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("PubMedQA in the Hugging Face pubmed_qa layout (JSONL, context struct)", async () => {
  const dir = await tempDataset();
  try {
    const file = `${dir}/pqa.jsonl`;
    Deno.writeTextFileSync(
      file,
      jsonl([
        {
          pubid: 1,
          question: "Does X help?",
          context: { contexts: ["c1", "c2"], labels: ["AIM", "RESULTS"] },
          final_decision: "no",
        },
        {
          pubid: 2,
          question: "Does Y help?",
          context: { contexts: ["d"], labels: [] },
          final_decision: "perhaps",
        },
      ]),
    );
    await assertRejects(
      () => loadDataset(file),
      /pqa\.jsonl row 2: the answer label "perhaps" is not among the options \(A, B, C\)/,
    );
    const rows = tableRows(await loadDataset(file, { onBadRow: "skip" }));
    assertEquals(rows.map((r) => [r.id, r.answerLabel, r.answer, r.datasetName]), [[
      "1",
      "B",
      "No",
      "pubmedqa",
    ]]);
    assertEquals(rows[0].question, "Does X help?\n\nContext:\nAIM: c1\nRESULTS: c2");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("paths that do not exist and unknown formats are clear errors", async () => {
  await assertRejects(
    () => loadDataset("/nonexistent/data.jsonl"),
    /The dataset path \/nonexistent\/data\.jsonl does not exist/,
  );
  await assertRejects(() => loadDataset("https://example.org/data.jsonl"), /does not exist/);
  const dir = await tempDataset();
  try {
    Deno.writeTextFileSync(`${dir}/notes.txt`, "x");
    await assertRejects(
      () => loadDataset(`${dir}/notes.txt`),
      /notes\.txt is not a \.jsonl, \.json, \.csv, \.tsv or \.parquet file/,
    );
    await assertRejects(
      () => loadDataset(`${DATA}/medqa_4opt/test.jsonl`, { onBadRow: "ignore" as "skip" }),
      /onBadRow must be "error" or "skip"/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  assertStrictEquals(
    sniffImageFormat(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
    "png",
  );
});

Deno.test("loadDataset: an unknown option key is an error naming it and the key meant", async () => {
  await assertRejects(
    // deno-lint-ignore no-explicit-any
    loadDataset("data/medqa_4opt/test.jsonl", { limt: 3 } as any),
    /Unknown key 'limt' in loadDataset options: did you mean 'limit'\?/,
  );
});
