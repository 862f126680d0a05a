// Users import the module from a URL, without this project's deno.json (no import map, no
// nodeModulesDir): everything reachable from mod.ts must resolve by full specifiers. This test
// imports mod.ts by file URL from a temporary folder that has no deno.json and runs a generation.
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";

Deno.test("mod.ts imported by file URL from a folder without deno.json runs a generation", async () => {
  const dir = await Deno.makeTempDir({ prefix: "medthink-url-import-" });
  try {
    const modUrl = new URL("../mod.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/main.ts`,
      `import { loadModel, loadTokenizer } from "${modUrl}";
const model = await loadModel("medthink-tiny", { backend: "wasm" });
const tok = await loadTokenizer();
const { inputIds, attentionMask } = tok.encodeBatch(["Which organ secretes insulin?"]);
const out = await model.generate(inputIds, { attentionMask, maxNewTokens: 3, temperature: 0 });
console.log("RESULT " + JSON.stringify({ n: out.tokens[0].length, reason: out.finishReasons[0] }));
model.dispose();
`,
    );
    const cmd = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    });
    const res = await cmd.output();
    const stdout = new TextDecoder().decode(res.stdout);
    const stderr = new TextDecoder().decode(res.stderr);
    assert(res.success, `the URL import failed:\n${stderr.slice(-3000)}`);
    const line = stdout.split("\n").find((l) => l.startsWith("RESULT "));
    assert(line, `no result printed:\n${stdout}\n${stderr.slice(-2000)}`);
    const got = JSON.parse(line.slice(7));
    assertEquals(got.n > 0, true);
    assert(got.reason === "stop" || got.reason === "length");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
