/**
 * `cli.ts sft | grpo | distill` end to end on medthink-tiny and the built-in lab task (`--max-steps 2`),
 * flags over the file, `--resume`, the run's config.yaml repeating its settings, validation with the
 * best model kept, and the TensorBoard event files read back with TensorBoard's own reader.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { parseCommand } from "../cli.ts";
import { readJsonl } from "../lib/data/jsonl_store.ts";
import { YAML } from "../lib/util/deps.ts";
import { readerUnavailable, readTensorBoard } from "./_tensorboard_reader.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const TMP = await Deno.makeTempDir({ prefix: "cli_train_test_" });
// Removed by the last test (the runs' folders are shared by the TensorBoard checks).
const runs: Record<string, string> = {};

async function cli(args: string[], cwd = ROOT): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cli.ts`, ...args],
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

const TINY_SFT = [
  "--lab-train",
  "8",
  "--batch-size",
  "2",
  "--micro-batch-size",
  "2",
  "--max-length",
  "160",
  "--quiet",
];

Deno.test({
  name:
    "cli sft: flags over the file, config.yaml repeats the run, --resume continues, a used folder is refused",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = runs.sft = `${TMP}/sft`;
    await Deno.writeTextFile(
      `${TMP}/sft.yaml`,
      "sft:\n  learning_rate: 0.5\n  max_steps: 2\n  warmup-ratio: 0\n",
    );
    // first session: stop after one of the two updates (a checkpoint is written)
    const a = await cli([
      "sft",
      "--config",
      `${TMP}/sft.yaml`,
      "--learning-rate",
      "0.001",
      "--stop-after-steps",
      "1",
      "--output-dir",
      out,
      ...TINY_SFT,
    ]);
    assertEquals(a.code, 0, a.stderr);
    const written = YAML.parse(await Deno.readTextFile(`${out}/config.yaml`)).sft;
    assertEquals([written.learningRate, written.maxSteps, written.warmupRatio], [0.001, 2, 0]); // the flag won
    assertEquals(JSON.parse(await Deno.readTextFile(`${out}/run.json`)).medthink, "0.1.0");
    // the run's own config.yaml gives back exactly the settings it ran with
    const again = await parseCommand("sft", ["--config", `${out}/config.yaml`]);
    const first = await parseCommand("sft", [
      "--config",
      `${TMP}/sft.yaml`,
      "--learning-rate",
      "0.001",
      "--stop-after-steps",
      "1",
      "--output-dir",
      out,
      ...TINY_SFT,
    ]);
    assertEquals(again, first);

    // the folder holds checkpoint-1: starting over there is refused, --resume continues to update 2
    const refused = await cli(["sft", "--config", `${out}/config.yaml`, "--no-quiet"]);
    assertEquals(refused.code, 1);
    assert(refused.stderr.includes("already holds checkpoint-1; pass --resume"), refused.stderr);
    // (validated every 2 updates on 3 held-out questions: the last update's line carries eval_accuracy)
    const b = await cli([
      "sft",
      "--config",
      `${out}/config.yaml`,
      "--resume",
      "--stop-after-steps",
      "2",
      "--eval-data",
      "lab_task",
      "--lab-test",
      "3",
      "--eval-every",
      "2",
      "--eval-max-new-tokens",
      "2",
    ]);
    assertEquals(b.code, 0, b.stderr);
    assert(b.stdout.includes("sft: 2 of 2 updates"), b.stdout);
    const log = await readJsonl<{ step: number; loss: number; eval_n?: number }>(`${out}/metrics.jsonl`);
    assertEquals(log.map((r) => [r.step, r.eval_n]), [[1, undefined], [2, 3]]);
    assertEquals(
      (await readJsonl<{ step: number }>(`${out}/eval.jsonl`)).map((e) => e.step),
      [2],
    );
  },
});

Deno.test({
  name: "cli grpo: validation every step, the best model kept by the named metric, samples logged",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = runs.grpo = `${TMP}/grpo`;
    const r = await cli([
      "grpo",
      "--max-steps",
      "3",
      "--prompts-per-step",
      "2",
      "--mini-batch-prompts",
      "2",
      "--num-generations",
      "2",
      "--micro-batch-size",
      "4",
      "--max-new-tokens",
      "6",
      "--eval-data",
      "lab_task",
      "--lab-test",
      "3",
      "--eval-every",
      "1",
      "--eval-max-new-tokens",
      "4",
      "--save-best",
      // a random tiny model answers nothing right (eval_accuracy stays 0): rank by a metric that moves
      "--best-metric",
      "entropy",
      "--save-steps",
      "1",
      "--quiet",
      "--output-dir",
      out,
    ]);
    assertEquals(r.code, 0, r.stderr);
    const evals = await readJsonl<{ step: number; eval_accuracy: number; eval_n: number }>(
      `${out}/eval.jsonl`,
    );
    assertEquals(evals.map((e) => [e.step, e.eval_n]), [[1, 3], [2, 3], [3, 3]]);
    const metrics = await readJsonl<{ step: number; entropy: number }>(`${out}/metrics.jsonl`);
    // each evaluation's metrics joined its step's metrics.jsonl line
    assert(metrics.every((m) => (m as Record<string, unknown>).eval_n === 3), JSON.stringify(metrics[0]));
    const top = metrics.reduce((a, b) => (b.entropy > a.entropy ? b : a));
    const best = JSON.parse(await Deno.readTextFile(`${out}/best.json`));
    assertEquals([best.metric, best.step, best.value, best.mode], ["entropy", top.step, top.entropy, "max"]);
    assert((await Deno.stat(`${out}/best/model.safetensors`)).size > 0);
    assertEquals(
      (await readJsonl<{ step: number }>(`${out}/completions.jsonl`)).map((c) => c.step),
      [1, 1, 2, 2, 3, 3],
    );
  },
});

Deno.test({
  name: "cli distill: per-question records and the traces file; a rerun resumes without sampling again",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const out = `${TMP}/distill`;
    const args = [
      "distill",
      "--limit",
      "3",
      "--num-generations",
      "2",
      "--max-new-tokens",
      "4",
      "--batch-size",
      "3",
      "--out",
      out,
    ];
    const a = await cli(args);
    assertEquals(a.code, 0, a.stderr);
    assert(a.stdout.includes("distill: 3 of 3 questions done"), a.stdout);
    const recs = await readJsonl<{ id: string; attempts: number }>(`${out}/distill.jsonl`);
    assertEquals(recs.length, 3);
    // a random model solves nothing: every question used both samples and none has a trace
    assert(recs.every((r) => r.attempts === 2), JSON.stringify(recs));
    assertEquals(await Deno.readTextFile(`${out}/traces.jsonl`), "");
    const b = await cli(args); // resumed: no teacher sample drawn again
    assertEquals(b.code, 0, b.stderr);
    assert(b.stdout.includes("0 teacher samples drawn"), b.stdout);
  },
});

Deno.test({
  name: "cli: unknown flags and keys are refused naming them; --help lists every command",
  fn: async () => {
    await Deno.writeTextFile(`${TMP}/bad.yaml`, "grpo:\n  num_generation: 4\n");
    const bad = await cli(["grpo", "--config", `${TMP}/bad.yaml`]);
    assertEquals(bad.code, 1);
    assert(bad.stderr.includes("unknown key 'num_generation' (section 'grpo:') for grpo"), bad.stderr);
    assert(bad.stderr.includes("did you mean 'numGenerations'"), bad.stderr);
    const flag = await cli(["sft", "--lr", "1"]);
    assertEquals(flag.code, 1);
    assert(flag.stderr.includes("Unknown option '--lr'"), flag.stderr);
    const help = await cli(["--help"]);
    for (const c of ["probe", "filter", "sft", "grpo", "distill", "evaluate", "serve"]) {
      assert(help.stdout.includes(`\n  ${c} `), `${c} missing from --help`);
    }
    const sftHelp = await cli(["sft", "--help"]);
    assert(sftHelp.stdout.includes("--eval-every <number>") && sftHelp.stdout.includes("--resume"));
  },
});

Deno.test({
  name: "cli: installed as `medthink`, it runs from any folder",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const root = `${TMP}/install`;
    const inst = await new Deno.Command(Deno.execPath(), {
      args: [
        "install",
        "-g",
        "-A",
        "-f",
        "-n",
        "medthink",
        "--root",
        root,
        "--config",
        `${ROOT}deno.json`,
        `${ROOT}cli.ts`,
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(inst.success, new TextDecoder().decode(inst.stderr));
    const elsewhere = await Deno.makeTempDir({ dir: TMP });
    const r = await new Deno.Command(`${root}/bin/medthink`, {
      args: ["grpo", "--help"],
      cwd: elsewhere,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(r.success, new TextDecoder().decode(r.stderr));
    assert(new TextDecoder().decode(r.stdout).includes("--num-generations <number>"));
  },
});

Deno.test({
  name: `cli: SFT and GRPO event files read back by TensorBoard match the JSONL metrics${
    readerUnavailable ? ` (ignored: ${readerUnavailable})` : ""
  }`,
  ignore: readerUnavailable !== null,
  fn: async () => {
    // SFT: metrics.jsonl (one line per update) vs train/<key> scalars
    const sft = await readTensorBoard(`${runs.sft}/tensorboard`);
    const log = await readJsonl<Record<string, number>>(`${runs.sft}/metrics.jsonl`);
    for (const key of ["loss", "learning_rate", "grad_norm", "num_tokens"]) {
      assertEquals(sft.scalars[`train/${key}`].map(([s]) => s), log.map((r) => r.step), key);
      // float32 in the event file
      sft.scalars[`train/${key}`].forEach(([, v], i) =>
        assert(Math.abs(v - log[i][key]) <= 1e-6 * Math.abs(log[i][key]) + 1e-12)
      );
    }
    // GRPO: every numeric key of metrics.jsonl is a scalar with the same steps; evaluations; samples
    const grpo = await readTensorBoard(`${runs.grpo}/tensorboard`);
    const metrics = await readJsonl<Record<string, unknown>>(`${runs.grpo}/metrics.jsonl`);
    // (the validation metrics joined each line: they are scalars under eval/, checked below)
    const keys = Object.keys(metrics[0]).filter((k) =>
      k !== "step" && !k.startsWith("eval_") && typeof metrics[0][k] === "number"
    );
    assert(keys.includes("reward") && keys.includes("kl") && keys.includes("reward/medvlthinker/mean"));
    for (const key of keys) {
      const steps = metrics.filter((m) => typeof m[key] === "number").map((m) => m.step);
      assertEquals(grpo.scalars[`train/${key}`]?.map(([s]) => s), steps, key);
    }
    const evals = await readJsonl<{ step: number; eval_accuracy: number }>(`${runs.grpo}/eval.jsonl`);
    assertEquals(grpo.scalars["eval/eval_accuracy"].map(([s]) => s), evals.map((e) => e.step));
    const texts = await readTensorBoard(`${runs.grpo}/tensorboard/text`);
    assertEquals(texts.texts["samples/completion_0"].map(([s]) => s), [1, 2, 3]);
  },
});

Deno.test({
  name: "cli train tests: clean up",
  fn: async () => {
    await Deno.remove(TMP, { recursive: true });
  },
});
