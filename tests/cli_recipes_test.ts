/**
 * Every recipe file (recipes/*.yaml, recipes/tiny/*.yaml) validates against the settings of the commands
 * it has sections for (unknown keys fail), says what it reproduces and what number it should reach, and
 * the paper's runs carry the published settings.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { parseCommand } from "../cli.ts";
import { COMMANDS } from "../lib/cli/main.ts";
import { YAML } from "../lib/util/deps.ts";

const RECIPES = new URL("../recipes/", import.meta.url).pathname;

async function recipeFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) out.push(...await recipeFiles(`${dir}${e.name}/`));
    else if (e.name.endsWith(".yaml")) out.push(`${dir}${e.name}`);
  }
  return out.sort();
}

const files = await recipeFiles(RECIPES);

Deno.test("recipes: every file validates against its commands and says what it reproduces", async () => {
  assert(files.length >= 13, `only ${files.length} recipe files`);
  for (const file of files) {
    const text = await Deno.readTextFile(file);
    const doc = YAML.parse(text) as Record<string, unknown>;
    const sections = Object.keys(doc).filter((k) => k in COMMANDS);
    assert(sections.length > 0, `${file} has no command section`);
    assert(/^# Reproduces:/m.test(text), `${file} does not say what it reproduces`);
    assert(/^# (Published|Expected)/m.test(text), `${file} names no published or expected result`);
    for (const name of sections) {
      const config = await parseCommand(name, ["--config", file]);
      assert(config !== null, `${file}: ${name}`);
    }
  }
});

Deno.test("recipes: a misplaced or misspelt key in a recipe is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const grpo = await Deno.readTextFile(`${RECIPES}grpo_qwen25vl_3b.yaml`);
    await Deno.writeTextFile(`${dir}/typo.yaml`, grpo.replace("  numGenerations: 8", "  numGeneration: 8"));
    await assertRejectsWith(
      parseCommand("grpo", ["--config", `${dir}/typo.yaml`]),
      /unknown key 'numGeneration'/,
    );
    // evaluate's keys in a probe section are not probe's settings
    await Deno.writeTextFile(`${dir}/misplaced.yaml`, "probe:\n  runs: 3\n  bootstrapSamples: 100\n");
    await assertRejectsWith(
      parseCommand("probe", ["--config", `${dir}/misplaced.yaml`]),
      /unknown key 'runs' \(section 'probe:'\) for probe/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function assertRejectsWith(p: Promise<unknown>, re: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert(re.test((e as Error).message), (e as Error).message);
    return;
  }
  throw new Error(`expected an error matching ${re}`);
}

Deno.test("recipes: the paper's runs carry the published settings", async () => {
  for (const size of ["3b", "7b"]) {
    const g = (await parseCommand("grpo", ["--config", `${RECIPES}grpo_qwen25vl_${size}.yaml`]))!;
    assertEquals(
      [
        g.numGenerations,
        g.learningRate,
        g.beta,
        g.klClamp,
        g.promptsPerStep,
        g.miniBatchPrompts,
        g.maxNewTokens,
      ],
      [8, 1e-6, 0.01, 10, 256, 128, 4096],
    );
    assertEquals([g.temperature, g.topP, g.lossType, g.epsilonLow, g.epsilonHigh], [1, 1, "dapo", 0.2, 0.2]);
    assertEquals([g.weightDecay, g.maxGradNorm, g.lrSchedulerType, g.evalEvery], [0.01, 1, "constant", 50]);
    const s = (await parseCommand("sft", ["--config", `${RECIPES}sft_qwen25vl_${size}.yaml`]))!;
    assertEquals(
      [s.learningRate, s.lrSchedulerType, s.warmupRatio, s.betas, s.weightDecay, s.batchSize],
      [1e-5, "cosine", 0.05, [0.9, 0.95], 1e-4, 16],
    );
    const p = (await parseCommand("probe", ["--config", `${RECIPES}probe_qwen25vl_${size}.yaml`]))!;
    assertEquals([p.numGenerations, p.temperature, p.topP, p.maxNewTokens], [16, 1, 1, 4096]);
    const f = (await parseCommand("filter", ["--config", `${RECIPES}probe_qwen25vl_${size}.yaml`]))!;
    assertEquals([f.minPass, f.maxPass, f.order], [1, 7, "easy-to-hard"]);
    const e = (await parseCommand("evaluate", ["--config", `${RECIPES}evaluate_qwen25vl_${size}.yaml`]))!;
    assertEquals([e.temperature, e.runs, e.maxNewTokens, e.benchmarks], [0, 3, 4096, ["medvlthinker_eval"]]);
  }
});
