/**
 * Dispatches per decoder layer on the `webgpu` backend, before and after the programs of issue #22
 * (lib/model/webgpu_tiled.ts, lib/model/webgpu_fused.ts), and the wall time of the same passes.
 * bench/gpu_probe.ts runs it as `--mode dispatches` (bench/gpu_device.sh: `PROBE_MODE=dispatches`).
 *
 * A dispatch is one `runWebGPUProgram` call of tfjs-webgpu's backend (every compute program goes through
 * it; reshapes and other metadata-only kernels do not). Per layer = the count of a forward pass through
 * 2 layers minus that through 1 (same weights, `numHiddenLayers` cut), so the embedding, the final norm
 * and the head are not in it. Three passes: a decode step (B rows, one new token over `past` cached
 * ones), a prefill (B x T), and a training step (forward and backward of `sum(hidden²)` through
 * `tf.variableGrads`). Settings:
 *
 * - `tfjs`: tfjs-webgpu's own kernels only (`MEDTHINK_WEBGPU_MATMUL=tfjs MEDTHINK_WEBGPU_FUSED=0`);
 * - `before`: the small-M product only (what main ran before issue #22);
 * - `after`: small-M and tiled products, fused programs (the default now).
 *
 * @module
 */
import { tf } from "../lib/util/deps.ts";
import { decoderForward, type DecoderWeights, ropeCosSin } from "../lib/model/qwen2.ts";
import { emptyCache } from "../lib/model/kv_cache.ts";
import type { CausalLM } from "../lib/model/types.ts";
import { installSmallMatMul, uninstallSmallMatMul } from "../lib/model/webgpu_matmul.ts";
import { setFused } from "../lib/model/fused.ts";

/** The settings compared, each a way to switch the programs. */
export const SETTINGS: Record<string, () => void> = {
  tfjs: () => {
    uninstallSmallMatMul();
    setFused(false);
  },
  before: () => {
    installSmallMatMul({ tiled: false });
    setFused(false);
  },
  after: () => {
    installSmallMatMul({ tiled: true });
    setFused(true);
  },
};

/** Count `runWebGPUProgram` calls while `on` is true. */
class DispatchCounter {
  count = 0;
  on = false;
  constructor() {
    // deno-lint-ignore no-explicit-any
    const backend = tf.backend() as any;
    const run = backend.runWebGPUProgram.bind(backend);
    // deno-lint-ignore no-explicit-any
    backend.runWebGPUProgram = (...args: any[]) => {
      if (this.on) this.count++;
      return run(...args);
    };
  }
  async measure(fn: () => tf.Tensor | tf.Tensor[]): Promise<{ dispatches: number; ms: number }> {
    this.count = 0;
    this.on = true;
    const t0 = performance.now();
    const out = fn();
    this.on = false;
    const outs = Array.isArray(out) ? out : [out];
    for (const o of outs) await o.data(); // one readback at the end, outside the count
    const ms = performance.now() - t0;
    tf.dispose(outs);
    return { dispatches: this.count, ms };
  }
}

/** One row of the result: a pass under a setting. */
export interface DispatchRow {
  setting: string;
  pass: string;
  /** Dispatches of one decoder layer. */
  perLayer: number;
  /** Dispatches of the pass through 2 layers. */
  twoLayers: number;
  /** Wall ms of the 2-layer pass with its readback (the best of `repeats`). */
  ms: number;
}

/**
 * Count and time the passes for every setting on `model`'s weights (any Qwen2 model loaded on webgpu).
 * `say` prints each row as it comes.
 */
export async function countDispatches(
  model: CausalLM,
  opts: { batch?: number; past?: number; tokens?: number; repeats?: number; say?: (s: string) => void } = {},
): Promise<DispatchRow[]> {
  const { batch = 1, past = 64, tokens = 64, repeats = 3, say = console.log } = opts;
  const counter = new DispatchCounter();
  const H = model.config.hiddenSize;
  const weights = (layers: number): DecoderWeights => ({
    config: { ...model.config, numHiddenLayers: layers },
    params: model.params,
    lora: {},
    loraEnabled: false,
  });
  const inputs = (b: number, t: number, offset: number) => {
    const pos = tf.add(tf.tile(tf.reshape(tf.range(0, t, 1, "int32"), [1, t]), [b, 1]), offset);
    const { cos, sin } = ropeCosSin(model.config, pos);
    pos.dispose();
    return {
      inputsEmbeds: tf.randomUniform([b, t, H], -1, 1, "float32", 7) as tf.Tensor3D,
      attentionMask: tf.ones([b, t]) as tf.Tensor2D,
      cos,
      sin,
    };
  };
  const passes: Record<string, (layers: number) => Promise<{ dispatches: number; ms: number }>> = {
    decode: async (layers) => {
      const w = weights(layers);
      const cache = emptyCache(w.config);
      const pre = inputs(batch, past, 0);
      tf.tidy(() => decoderForward(w, { ...pre, cache }));
      await (cache.keys[0] as tf.Tensor).data();
      const step = inputs(batch, 1, past);
      const r = await counter.measure(() => decoderForward(w, { ...step, cache }));
      tf.dispose([...Object.values(pre), ...Object.values(step)]);
      for (const t of [...cache.keys, ...cache.values, cache.mask]) (t as tf.Tensor | undefined)?.dispose();
      return r;
    },
    prefill: async (layers) => {
      const x = inputs(batch, tokens, 0);
      const r = await counter.measure(() => decoderForward(weights(layers), x));
      tf.dispose(Object.values(x));
      return r;
    },
    train: async (layers) => {
      const x = inputs(Math.max(2, batch), Math.max(8, tokens / 2), 0);
      const vars = Object.entries(model.params)
        .filter(([k]) => k.startsWith("model.layers.0.") || (layers > 1 && k.startsWith("model.layers.1.")))
        .map(([, v]) => v);
      const r = await counter.measure(() => {
        const { value, grads } = tf.variableGrads(
          () => tf.sum(tf.square(decoderForward(weights(layers), x))) as tf.Scalar,
          vars,
        );
        return [value, ...Object.values(grads)];
      });
      tf.dispose(Object.values(x));
      return r;
    },
  };
  const rows: DispatchRow[] = [];
  for (const [setting, use] of Object.entries(SETTINGS)) {
    use();
    for (const [pass, run] of Object.entries(passes)) {
      await run(2); // compile the pipelines
      const one = await run(1);
      let two = await run(2);
      for (let i = 1; i < repeats; i++) {
        const again = await run(2);
        if (again.ms < two.ms) two = again;
      }
      const row = {
        setting,
        pass,
        perLayer: two.dispatches - one.dispatches,
        twoLayers: two.dispatches,
        ms: two.ms,
      };
      rows.push(row);
      say(
        `dispatches: ${setting} ${pass} (B ${batch}, past ${past}, T ${tokens}): ${row.perLayer} per layer, ` +
          `${row.twoLayers} for 2 layers, ${row.ms.toFixed(1)} ms`,
      );
    }
  }
  SETTINGS.after(); // the default
  setFused(null);
  return rows;
}
