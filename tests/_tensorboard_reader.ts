/**
 * TensorBoard's own event reader (`EventAccumulator`, from the `tensorboard` wheel) for tests: a venv
 * cached under ~/.cache/medthink/venv-tb, created from the offline wheel store when missing
 * (`python3 -m venv V && V/bin/pip install tensorboard`). When it cannot be had, `readerUnavailable`
 * says why and the tests that need it are reported as ignored with that reason.
 */
const HOME = Deno.env.get("HOME") ?? "/tmp";
const VENV = `${Deno.env.get("XDG_CACHE_HOME") ?? `${HOME}/.cache`}/medthink/venv-tb`;
const PY = `${VENV}/bin/python`;

async function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const d = new TextDecoder();
    return { ok: r.success, out: d.decode(r.stdout) + d.decode(r.stderr) };
  } catch (e) {
    return { ok: false, out: (e as Error).message };
  }
}

async function prepare(): Promise<string | null> {
  if ((await run(PY, ["-c", "import tensorboard"])).ok) return null;
  const venv = await run("python3", ["-m", "venv", VENV]);
  if (!venv.ok) return `python3 -m venv failed (${venv.out.trim().split("\n").at(-1)})`;
  const pip = await run(`${VENV}/bin/pip`, ["install", "--retries", "0", "-q", "tensorboard"]);
  if (!pip.ok) {
    return `pip install tensorboard failed: no wheel store? (${pip.out.trim().split("\n").at(-1)})`;
  }
  return (await run(PY, ["-c", "import tensorboard"])).ok ? null : "tensorboard does not import";
}

/** Null when TensorBoard's reader is ready, else why it is not (the tests using it are ignored). */
export const readerUnavailable: string | null = await prepare();

/** What TensorBoard reads from a log folder: steps per scalar tag, and texts per tensor tag. */
export interface TensorBoardContent {
  /** Scalar tag -> [step, value] pairs, in file order. */
  scalars: Record<string, [number, number][]>;
  /** Tensor (text) tag -> [step, text] pairs. */
  texts: Record<string, [number, string][]>;
}

const SCRIPT = `
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
out = {"scalars": {}, "texts": {}}
for t in tags["scalars"]:
    out["scalars"][t] = [[e.step, e.value] for e in acc.Scalars(t)]
for t in tags["tensors"]:
    out["texts"][t] = [[e.step, e.tensor_proto.string_val[0].decode()] for e in acc.Tensors(t)]
print(json.dumps(out))
`;

/** Read `logdir` with TensorBoard's `EventAccumulator`. */
export async function readTensorBoard(logdir: string): Promise<TensorBoardContent> {
  const r = await run(PY, ["-c", SCRIPT, logdir]);
  if (!r.ok) throw new Error(`EventAccumulator failed on ${logdir}: ${r.out}`);
  return JSON.parse(r.out.trim().split("\n").at(-1)!);
}
