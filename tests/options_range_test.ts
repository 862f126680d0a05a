// No option silently ignored (#16 item 5): out-of-range generation options are errors naming the option
// and its flag, in the library (model.generate, the engines) and so in the CLI; empty dataset files are
// errors naming the file.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { checkGenerationOptions } from "../lib/model/generation_options.ts";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { localEngine } from "../lib/engine/local.ts";
import { readRecords } from "../lib/data/readers.ts";

const ROOT = new URL("../", import.meta.url).pathname;

async function message(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    return (e as Error).message;
  }
  return "";
}

const BAD: [Record<string, unknown>, string][] = [
  [{ temperature: -1 }, "temperature (--temperature)"],
  [{ temperature: Infinity }, "temperature"],
  [{ temperature: NaN }, "temperature"],
  [{ topP: 0 }, "topP (--top-p)"],
  [{ topP: 1.5 }, "topP"],
  [{ topK: -2 }, "topK (--top-k)"],
  [{ topK: 1.5 }, "topK"],
  [{ maxNewTokens: -5 }, "maxNewTokens (--max-new-tokens)"],
  [{ maxNewTokens: 0 }, "maxNewTokens"],
  [{ maxNewTokens: 2.5 }, "maxNewTokens"],
  [{ numSamples: 0 }, "numSamples"],
  [{ temperature: "1" }, "temperature"],
];

Deno.test("generation options: each out-of-range value names its option, in generate and the engine", async () => {
  checkGenerationOptions({ temperature: 0, topP: 1, topK: 0, maxNewTokens: 1, numSamples: 2, seed: 7 }, "x");
  for (const [opts, words] of BAD) {
    const m = await message(() => checkGenerationOptions(opts as never, "probe options"));
    assert(m.includes(words) && m.startsWith("probe options"), `${JSON.stringify(opts)}: ${m}`);
  }
  const model = await loadModel("medthink-tiny");
  try {
    const ok = { temperature: 1, topP: 1, topK: 0, maxNewTokens: 2 };
    for (const [opts, words] of BAD) {
      const m = await message(() => model.generate([[1, 2, 3]], { ...ok, ...opts } as never));
      assert(m.includes(words), `generate ${JSON.stringify(opts)}: ${m}`);
    }
    const engine = localEngine(model, await loadTokenizer(model.dir));
    const m = await message(() =>
      engine.complete([{ promptIds: [1, 2], seeds: [1] }], { ...ok, temperature: -1 })
    );
    assert(m.includes("temperature (--temperature)"), m);
    // a misspelt key is an error naming the intended one, not a silent default
    const typo = await message(() => model.generate([[1, 2, 3]], { ...ok, temprature: 0 } as never));
    assert(typo.includes("temprature") && typo.includes("'temperature'"), typo);
    // the valid values still generate
    assertEquals((await model.generate([[1, 2, 3]], { ...ok, temperature: 0 })).tokens[0].length, 2);
  } finally {
    model.dispose();
  }
});

Deno.test("cli probe: --temperature=-1 and --max-new-tokens=-5 exit non-zero naming the flag", async () => {
  for (
    const [flag, words] of [["--temperature=-1", "--temperature"], [
      "--max-new-tokens=-5",
      "--max-new-tokens",
    ]]
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        `${ROOT}cli.ts`,
        "probe",
        "--data",
        `${ROOT}data/medqa_4opt/test.jsonl`,
        "--limit",
        "1",
        "--num-generations",
        "1",
        flag,
        "--out",
        await Deno.makeTempFile({ suffix: ".jsonl" }),
        "--overwrite",
      ],
      env: { TF_CPP_MIN_LOG_LEVEL: "2" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 1, err);
    assert(err.includes(words), err);
  }
});

Deno.test("readers: an empty CSV, TSV, JSONL or JSON file is an error naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (
      const [name, text, words] of [
        ["a.csv", "", "is empty"],
        ["b.jsonl", "\n \n", "is empty"],
        ["c.csv", "id,question\n", "only a header line"],
        ["d.tsv", "", "is empty"],
        ["e.json", "[]", "holds no rows"],
      ]
    ) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
      const m = await message(() => readRecords(`${dir}/${name}`));
      assert(m.includes(`${dir}/${name}`) && m.includes(words), m);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples: --resume is accepted only by the examples that implement it", async () => {
  for (
    const [example, ok] of [["sft_text.ts", false], ["grpo_text.ts", false], [
      "probe_filter.ts",
      true,
    ]] as const
  ) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}examples/${example}`, "--resume", "--help"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    if (ok) assertEquals(out.code, 0, err);
    else {
      assertEquals(out.code, 2, `${example}: ${err}`);
      assert(err.includes("'--resume'"), err);
    }
  }
});
