import { deepStrictEqual as assertEquals, ok as assert, rejects } from "node:assert/strict";
import { benchmarkSpec, helpText, parseCommand } from "../cli.ts";
import { loadDataset } from "../lib/data/dataset.ts";
import { readJsonl } from "../lib/data/jsonl_store.ts";
import { readerUnavailable, readTensorBoard } from "./_tensorboard_reader.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const DATA = new URL("../data/", import.meta.url).pathname;

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cli.ts`, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("cli: --help on each command lists its flags", async () => {
  for (const name of ["probe", "filter", "evaluate"]) {
    assertEquals(await parseCommand(name, ["--help"]), null);
    const text = helpText(name);
    assert(text.startsWith(`Usage: deno run -A cli.ts ${name} [--config FILE.yaml]`));
    assert(text.includes("--config FILE.yaml"));
  }
  assert(
    helpText("probe").includes("--max-new-tokens <number>") && helpText("probe").includes("(default: 16)"),
  );
  assert(helpText("filter").includes("--order <string>"));
  assert(helpText("evaluate").includes("--benchmarks <a,b,...>"));
  const r = await cli(["evaluate", "--help"]);
  assertEquals(r.code, 0);
  assert(r.stdout.includes("--compare <string>"));
  const top = await cli([]);
  assertEquals(top.code, 2);
  assert(top.stdout.includes("Commands:"));
});

Deno.test("cli: defaults < YAML config (any key case, command sections) < flags", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/c.yaml`;
    await Deno.writeTextFile(
      file,
      [
        "model: /models/x",
        "max_new_tokens: 64",
        "batch-size: 2",
        "probe:",
        "  num_generations: 8",
        "  data: [a.jsonl, b.jsonl]",
        "evaluate:",
        "  runs: 3",
        "",
      ].join("\n"),
    );
    const c =
      (await parseCommand("probe", ["--config", file, "--num-generations", "4", "--keep-completions"]))!;
    assertEquals(c.model, "/models/x");
    assertEquals(c.maxNewTokens, 64);
    assertEquals(c.batchSize, 2);
    assertEquals(c.numGenerations, 4); // the flag wins over the section
    assertEquals(c.data, ["a.jsonl", "b.jsonl"]);
    assertEquals(c.temperature, 1); // default
    assertEquals(c.keepCompletions, true);
    const e = (await parseCommand("evaluate", ["--config", file, "--benchmarks", "medqa,pubmedqa"]))!;
    assertEquals(e.runs, 3);
    assertEquals(e.benchmarks, ["medqa", "pubmedqa"]);
    assertEquals(e.temperature, 0);
    await Deno.writeTextFile(`${dir}/bad.yaml`, "num_generations: 4\nbogus_key: 1\n");
    await rejects(
      parseCommand("probe", ["--config", `${dir}/bad.yaml`]),
      /bad\.yaml: unknown key 'bogus_key' for probe/,
    );
    await rejects(
      parseCommand("probe", ["--num-generations", "four"]),
      /'--num-generations' of probe must be a number, got 'four'/,
    );
    await rejects(parseCommand("probe", ["--nope"]), /nope/);
    await rejects(parseCommand("serve!", []), /Unknown command 'serve!'/);
    await Deno.writeTextFile(`${dir}/list.yaml`, "- 1\n- 2\n");
    await rejects(parseCommand("probe", ["--config", `${dir}/list.yaml`]), /must be a mapping/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: the shipped example configs parse for their commands", async () => {
  const probe = (await parseCommand("probe", ["--config", `${ROOT}examples/configs/probe.yaml`]))!;
  assertEquals([probe.numGenerations, probe.temperature, probe.topP], [16, 1, 1]);
  const filter = (await parseCommand("filter", ["--config", `${ROOT}examples/configs/probe.yaml`]))!;
  assertEquals([filter.minPass, filter.maxPass, filter.order], [1, 7, "easy-to-hard"]);
  const evaluate = (await parseCommand("evaluate", ["--config", `${ROOT}examples/configs/evaluate.yaml`]))!;
  assertEquals([evaluate.temperature, evaluate.runs], [0, 3]);
});

Deno.test("cli: benchmark arguments name registry entries, files, or name=file", () => {
  assertEquals(benchmarkSpec("medqa"), "medqa");
  assertEquals(benchmarkSpec("data/vqa_rad_closed/test.jsonl"), {
    name: "vqa_rad_closed",
    path: "data/vqa_rad_closed/test.jsonl",
  });
  assertEquals(benchmarkSpec("eval/test-00000-of-00001.parquet"), {
    name: "eval",
    path: "eval/test-00000-of-00001.parquet",
  });
  assertEquals(benchmarkSpec("my_bench.jsonl"), { name: "my_bench", path: "my_bench.jsonl" });
  assertEquals(benchmarkSpec("rad=x/y.jsonl"), { name: "rad", path: "x/y.jsonl" });
});

Deno.test({
  name: "cli: probe -> filter -> evaluate on medthink-tiny, end to end",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "cli_test_" });
    try {
      await Deno.writeTextFile(
        `${dir}/run.yaml`,
        [
          `data: ${DATA}medqa_4opt/test.jsonl`,
          "limit: 6",
          "num_generations: 2",
          "max_new_tokens: 2",
          "batch_size: 6",
          `out: ${dir}/probe/probe.jsonl`,
          "",
        ].join("\n"),
      );
      const p = await cli(["probe", "--config", `${dir}/run.yaml`, "--seed", "3"]);
      assertEquals(p.code, 0, p.stderr);
      assert(p.stdout.includes("probe: 6 of 6 questions done"), p.stdout);
      assertEquals((await readJsonl(`${dir}/probe/probe.jsonl`)).length, 6);
      assert((await Deno.readTextFile(`${dir}/probe/pass_counts.svg`)).includes("pass count (correct of 2)"));
      assert(
        (await Deno.readTextFile(`${dir}/probe/probe.csv`)).startsWith(
          "id,passCount,n,passRate,meanResponseLength",
        ),
      );

      // keep everything (a random model solves nothing) so the written file can be read back
      const f = await cli([
        "filter",
        "--probe",
        `${dir}/probe/probe.jsonl`,
        "--data",
        `${DATA}medqa_4opt/test.jsonl`,
        "--min-pass",
        "0",
        "--max-pass",
        "2",
        "--benchmarks",
        "medqa",
        "--data-dir",
        DATA,
        "--remove-overlap",
        "--out",
        `${dir}/filtered.jsonl`,
      ]);
      // every probed question IS in the MedQA benchmark: all of them are found and removed
      assertEquals(f.code, 0, f.stderr);
      assert(f.stdout.includes("1267 dataset row(s) have no probe result"), f.stdout);
      assert(f.stdout.includes("kept 6 of 6"), f.stdout);
      assert(f.stdout.includes("Overlap with medqa: 6 kept question(s), removed."), f.stdout);
      assertEquals((await readJsonl(`${dir}/filtered.jsonl`)).length, 0);

      const f2 = await cli([
        "filter",
        "--probe",
        `${dir}/probe/probe.jsonl`,
        "--data",
        `${DATA}medqa_4opt/test.jsonl`,
        "--min-pass",
        "0",
        "--max-pass",
        "2",
        "--order",
        "easy-to-hard",
        "--out",
        `${dir}/kept.jsonl`,
      ]);
      assertEquals(f2.code, 0, f2.stderr);
      assert(f2.stdout.includes("kept 6 of 6"), f2.stdout);
      // the kept rows are a dataset again (MedVLThinker columns), with the same ids and answers
      const kept = await loadDataset(`${dir}/kept.jsonl`);
      const original = await loadDataset(`${DATA}medqa_4opt/test.jsonl`, { limit: 6 });
      assertEquals(
        [...Array.from(kept.array("id") as string[])].sort(),
        [...Array.from(original.array("id") as string[])].sort(),
      );
      const o0 = original.object(0) as Record<string, unknown>;
      const k0 = kept.objects().find((r) => (r as Record<string, unknown>).id === o0.id) as Record<
        string,
        unknown
      >;
      assertEquals([k0.question, k0.options, k0.answerLabel], [o0.question, o0.options, o0.answerLabel]);

      const e = await cli([
        "evaluate",
        "--benchmarks",
        "medqa,pubmedqa",
        "--data-dir",
        DATA,
        "--limit",
        "3",
        "--max-new-tokens",
        "2",
        "--out",
        `${dir}/eval`,
        "--model-name",
        "tiny",
        "--reference",
        "Qwen2.5-VL-3B",
      ]);
      assertEquals(e.code, 0, e.stderr);
      const md = await Deno.readTextFile(`${dir}/eval/report.md`);
      assert(md.includes("| medqa | 3 |") && md.includes("| pubmedqa | 3 |"), md);
      assert((await Deno.readTextFile(`${dir}/eval/accuracy.svg`)).includes("published"));
      // every run leaves its resolved settings, and its TensorBoard scalars where the reader is installed
      assert((await Deno.readTextFile(`${dir}/eval/config.yaml`)).includes("modelName: tiny"));
      assert((await Deno.readTextFile(`${dir}/probe/config.yaml`)).includes("seed: 3"));
      if (readerUnavailable === null) {
        const ev = await readTensorBoard(`${dir}/eval/tensorboard`);
        assertEquals(Object.keys(ev.scalars).filter((t) => t.endsWith("/accuracy")).sort(), [
          "eval/medqa/accuracy",
          "eval/pubmedqa/accuracy",
        ]);
        const pr = await readTensorBoard(`${dir}/probe/tensorboard`);
        // one point per pass count 0..n (n = 2), summing to the 6 probed questions
        const counts = pr.scalars["probe/questions_with_pass_count"];
        assertEquals(counts.map(([k]) => k), [0, 1, 2]);
        assertEquals(counts.reduce((t, [, c]) => t + c, 0), 6);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
