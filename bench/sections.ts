/**
 * Named sections of `bench/RESULTS.md` written by benchmarks other than `deno task bench` (e.g.
 * `bench/vision.ts`): each sits between `<!-- section:NAME -->` and `<!-- /section:NAME -->`. Writing one
 * replaces only that block (or appends it); `bench/run.ts` carries every block over when it rewrites the
 * report, so neither side clobbers the other's rows.
 *
 * @module
 */

const BLOCK = /<!-- section:([\w-]+) -->[\s\S]*?<!-- \/section:\1 -->\n?/g;

function block(name: string, markdown: string): string {
  // Blank lines around the body: deno fmt leaves the block as written.
  return `<!-- section:${name} -->\n\n${markdown.trim()}\n\n<!-- /section:${name} -->\n`;
}

async function readOrEmpty(file: string): Promise<string> {
  try {
    return await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  }
}

/**
 * Write (or replace) the section `name` of the Markdown file `file`, leaving the rest as it is.
 *
 * @example
 * ```ts ignore
 * await writeSection("bench/RESULTS.md", "vision-tower", "## Vision tower\n\n| ... |");
 * ```
 */
export async function writeSection(file: string, name: string, markdown: string): Promise<void> {
  if (!/^[\w-]+$/.test(name)) throw new Error(`Section name '${name}' must be letters, digits, _ or -.`);
  const text = await readOrEmpty(file);
  const re = new RegExp(`<!-- section:${name} -->[\\s\\S]*?<!-- /section:${name} -->\\n?`);
  const next = re.test(text)
    ? text.replace(re, () => block(name, markdown))
    : `${text.replace(/\n*$/, "")}${text ? "\n\n" : ""}${block(name, markdown)}`;
  await Deno.writeTextFile(file, next);
}

/** Every named section of `file` (blocks with their markers, blank-line separated; "" when none or no file). */
export async function keptSections(file: string): Promise<string> {
  const blocks = (await readOrEmpty(file)).match(BLOCK) ?? [];
  return blocks.map((b) => b.trimEnd() + "\n").join("\n");
}
