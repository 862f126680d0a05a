// Examples and notebooks are written against the public API only: their imports are `mod.ts`, Node
// built-ins, and (for examples) the examples' own helpers; never a library file or a private `_` file of
// another folder, and no third-party package pinned a second time.
import { ok as assert } from "node:assert/strict";

const ROOT = new URL("..", import.meta.url).pathname;

/** The module specifiers of `import ... from "x"`, `import "x"`, `export ... from "x"` and `import("x")`. */
function specifiers(code: string): string[] {
  const out: string[] = [];
  for (const m of code.matchAll(/(?:^|[\s;])(?:import|export)\b[^"'`;]*?from\s*["']([^"']+)["']/g)) {
    out.push(m[1]);
  }
  for (const m of code.matchAll(/(?:^|[\s;])import\s*["']([^"']+)["']/g)) out.push(m[1]);
  for (const m of code.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g)) out.push(m[1]);
  return out;
}

function allowed(spec: string, inExamples: boolean): boolean {
  if (spec.startsWith("node:")) return true;
  if (spec === "../mod.ts") return true;
  // an example may use the examples' own helpers (same folder, so `_common.ts` stays private to it)
  return inExamples && /^\.\/[\w]+\.ts$/.test(spec);
}

Deno.test("the import scanner sees every import form", () => {
  const code =
    `import { a } from "../lib/x.ts";\nimport "npm:y";\nexport { b } from "./_c.ts";\nawait import("../mod.ts");`;
  assert(specifiers(code).join() === "../lib/x.ts,./_c.ts,npm:y,../mod.ts");
  assert(!allowed("../lib/x.ts", true) && !allowed("npm:arquero@8.0.3", false) && !allowed("./_c.ts", false));
});

// Examples being rewritten on the public API, with who does it; an entry must be removed as soon as its
// example is clean (the test fails on a stale entry), so the list only ever shrinks.
const BEING_REWRITTEN: Record<string, string> = {};

Deno.test("examples import only mod.ts, node: built-ins and their own helpers", async () => {
  const bad: string[] = [];
  let files = 0;
  for await (const e of Deno.readDir(`${ROOT}examples`)) {
    if (!e.isFile || !e.name.endsWith(".ts")) continue;
    files++;
    const code = await Deno.readTextFile(`${ROOT}examples/${e.name}`);
    const outside = specifiers(code).filter((s) => !allowed(s, true));
    if (e.name in BEING_REWRITTEN) {
      assert(outside.length > 0, `examples/${e.name} is clean now: remove it from BEING_REWRITTEN`);
      continue;
    }
    for (const s of outside) bad.push(`examples/${e.name}: ${s}`);
  }
  assert(files >= 5, `only ${files} examples found`);
  assert(bad.length === 0, `imports outside the public API (use mod.ts):\n${bad.join("\n")}`);
});

Deno.test("notebooks import only mod.ts and node: built-ins", async () => {
  const bad: string[] = [];
  let files = 0;
  for await (const e of Deno.readDir(`${ROOT}notebooks`)) {
    if (!e.name.endsWith(".ipynb")) continue;
    files++;
    const nb = JSON.parse(await Deno.readTextFile(`${ROOT}notebooks/${e.name}`));
    for (const cell of nb.cells) {
      if (cell.cell_type !== "code") continue;
      const code = Array.isArray(cell.source) ? cell.source.join("") : String(cell.source);
      for (const s of specifiers(code)) if (!allowed(s, false)) bad.push(`notebooks/${e.name}: ${s}`);
    }
  }
  assert(files >= 4, `only ${files} notebooks found`);
  assert(bad.length === 0, `imports outside the public API (use mod.ts):\n${bad.join("\n")}`);
});
