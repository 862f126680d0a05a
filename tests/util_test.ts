// The shared helpers of lib/util: one cache-root rule (read by the tiny models, the embedded tokenizer and
// scripts/setup_tensorflow.ts), one env(), one padding helper, one mean/std, one table-to-rows.
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert/strict";
import { cacheRoot } from "../lib/util/cache.ts";
import { env } from "../lib/util/env.ts";
import { padRows } from "../lib/util/padding.ts";
import { mean, std } from "../lib/util/math.ts";
import { tableRows } from "../lib/util/table.ts";
import { defaultModelDir } from "../lib/model/tiny.ts";
import { defaultTokenizerCacheDir } from "../lib/data/tokenizer.ts";
import { arquero as aq } from "../lib/util/deps.ts";

function withEnv(vars: Record<string, string | undefined>, f: () => void): void {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  try {
    for (const [k, v] of Object.entries(vars)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    f();
  } finally {
    for (const [k, v] of Object.entries(saved)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  }
}

Deno.test("cacheRoot: MEDTHINK_CACHE, else XDG_CACHE_HOME/medthink, else ~/.cache/medthink; every reader agrees", () => {
  withEnv({ MEDTHINK_CACHE: "/m", XDG_CACHE_HOME: "/x", HOME: "/h" }, () => assertEquals(cacheRoot(), "/m"));
  withEnv({ MEDTHINK_CACHE: undefined, XDG_CACHE_HOME: "/x/", HOME: "/h" }, () => {
    assertEquals(cacheRoot(), "/x/medthink");
    assertEquals(defaultModelDir(), "/x/medthink/medthink-tiny");
    assertEquals(defaultTokenizerCacheDir(), "/x/medthink/tokenizer-qwen2.5");
  });
  withEnv({ MEDTHINK_CACHE: undefined, XDG_CACHE_HOME: undefined, HOME: "/h" }, () => {
    assertEquals(cacheRoot(), "/h/.cache/medthink");
  });
  withEnv(
    { MEDTHINK_CACHE: undefined, XDG_CACHE_HOME: undefined, HOME: undefined, USERPROFILE: undefined },
    () => {
      throws(() => cacheRoot(), /set MEDTHINK_CACHE/);
    },
  );
});

Deno.test("scripts/setup_tensorflow.ts takes its cache folder from the library's rule", async () => {
  const text = await Deno.readTextFile(new URL("../scripts/setup_tensorflow.ts", import.meta.url));
  assert(text.includes('from "../lib/util/cache.ts"') && /return cacheRoot\(\);/.test(text));
  assert(!/MEDTHINK_CACHE"\)/.test(text), "setup_tensorflow.ts reads MEDTHINK_CACHE itself again");
});

Deno.test("env: unset and empty read as undefined", () => {
  withEnv({ MEDTHINK_UTIL_TEST: "" }, () => assertEquals(env("MEDTHINK_UTIL_TEST"), undefined));
  withEnv({ MEDTHINK_UTIL_TEST: "x" }, () => assertEquals(env("MEDTHINK_UTIL_TEST"), "x"));
});

Deno.test("padRows: left and right padding with the mask; a minimum width", () => {
  assertEquals(padRows([[1, 2, 3], [4]], 0), { ids: [[1, 2, 3], [0, 0, 4]], mask: [[1, 1, 1], [0, 0, 1]] });
  assertEquals(padRows([[1, 2, 3], [4]], 9, { side: "right" }), {
    ids: [[1, 2, 3], [4, 9, 9]],
    mask: [[1, 1, 1], [1, 0, 0]],
  });
  assertEquals(padRows([[]], 7, { side: "right", minWidth: 1 }).ids, [[7]]);
});

Deno.test("mean and the unbiased std (torch.std's default)", () => {
  assertEquals(mean([1, 2, 3, 4]), 2.5);
  assert(Number.isNaN(mean([])));
  // torch.tensor([1., 2., 3., 4.]).std() = 1.2909944487358056
  assert(Math.abs(std([1, 2, 3, 4]) - 1.2909944487358056) < 1e-15);
  assertEquals(std([3]), 0);
});

Deno.test("tableRows: an arquero table or an array; anything else is an error naming it", () => {
  assertEquals(tableRows(aq.from([{ id: "a" }])), [{ id: "a" }]);
  const rows = [{ id: 1 }];
  assert(tableRows(rows) === rows);
  // deno-lint-ignore no-explicit-any
  throws(
    () => tableRows(42 as any, "The sft dataset"),
    /The sft dataset must be an arquero table or an array/,
  );
});
