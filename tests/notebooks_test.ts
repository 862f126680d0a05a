// The notebooks as committed: Deno-kernel notebooks, without stale outputs, importing the public API;
// and the display bundle they show charts with. (Executing them is .ci/notebooks.sh's job: minutes.)
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { displayInline, lossCurve } from "../lib/eval/plot.ts";

const DIR = new URL("../notebooks/", import.meta.url).pathname;
const EXPECTED = ["01_data_and_probe.ipynb", "02_filter_and_sft.ipynb", "03_grpo.ipynb", "04_evaluate.ipynb"];

interface Cell {
  cell_type: string;
  source: string[] | string;
  outputs?: unknown[];
  execution_count?: number | null;
}

async function notebook(name: string): Promise<{ cells: Cell[]; metadata: Record<string, any> }> {
  return JSON.parse(await Deno.readTextFile(`${DIR}${name}`));
}

Deno.test("the four notebooks exist, run on the Deno kernel and carry no outputs", async () => {
  const names: string[] = [];
  for await (const e of Deno.readDir(DIR)) if (e.name.endsWith(".ipynb")) names.push(e.name);
  for (const name of EXPECTED) assert(names.includes(name), `notebooks/${name} is missing`);
  for (const name of names) {
    const nb = await notebook(name);
    assertEquals(nb.metadata.kernelspec?.name, "deno", `${name}: kernelspec`);
    const code = nb.cells.filter((c) => c.cell_type === "code");
    assert(code.length >= 4, `${name} has only ${code.length} code cells`);
    for (const [i, c] of code.entries()) {
      assertEquals(c.outputs ?? [], [], `${name}: code cell ${i} has committed outputs`);
      assertEquals(c.execution_count ?? null, null, `${name}: code cell ${i} has an execution count`);
    }
    const text = code.map((c) => (Array.isArray(c.source) ? c.source.join("") : c.source)).join("\n");
    assert(text.includes(`from "../mod.ts"`), `${name} does not import the public API (../mod.ts)`);
  }
});

Deno.test("displayInline offers the same SVG as image/svg+xml and as inline HTML", () => {
  const svg = lossCurve([{ step: 1, loss: 2 }, { step: 2, loss: 1 }]);
  const bundle = displayInline(svg)[Symbol.for("Jupyter.display")]();
  assertEquals(Object.keys(bundle).sort(), ["image/svg+xml", "text/html"]);
  assert(bundle["image/svg+xml"].startsWith("<svg") && bundle["text/html"] === svg);
});
