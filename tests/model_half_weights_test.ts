// Frozen weights at 2 bytes (loadModel's weightsDtype): the widening is exact for all 65536 codes on
// cpu, wasm, tensorflow and webgpu; the BF16 fixtures loaded as bfloat16 give the float32 path's logits (the weights are
// the same numbers) and float16 within 1e-3 of the golden ones, with the golden greedy tokens; an untied
// head at 2 bytes gives the same logits and greedy tokens slice by slice of its rows as in one piece,
// without a float32 copy of the whole head; LoRA on a half base trains; a BF16 checkpoint loads in about
// half the memory (peak RSS in a child process).
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel, saveModel } from "../lib/model/load.ts";
import { addLora, loraParams } from "../lib/model/lora.ts";
import type { Qwen25VLModel } from "../lib/model/qwen25vl.ts";
import { halfMatMulBTChunked, matMulBT, type Qwen2Model } from "../lib/model/qwen2.ts";
import { setRowMatMul } from "../lib/model/fused.ts";
import { setNativeGemv } from "../lib/model/native_gemv.ts";
import { writeCheckpoint } from "../lib/model/safetensors.ts";
import { f32BitsToBf16, f32BitsToF16, widenHalf } from "../lib/model/weights.ts";
import { valueAndGrads } from "../lib/train/optimizer.ts";
import { backendTest } from "./_backends.ts";
import { loadGolden, QWEN2_TINY } from "./_model_fixtures.ts";
import { assertGoldenGreedy, GOLDEN as VL_GOLDEN, VL_DIR } from "./_vl_fixture.ts";

function bits(x: number): number {
  return new Uint32Array(new Float32Array([x]).buffer)[0];
}

Deno.test("f32 -> bfloat16 / float16 codes round to nearest even, with overflow and subnormals", () => {
  assertEquals(f32BitsToBf16(bits(1)), 0x3f80);
  assertEquals(f32BitsToBf16(bits(-2)), 0xc000);
  assertEquals(f32BitsToBf16(bits(1 + 2 ** -8)), 0x3f80); // tie, to even
  assertEquals(f32BitsToBf16(bits(1 + 3 * 2 ** -8)), 0x3f82); // tie, to even (up)
  assertEquals(f32BitsToBf16(bits(1 + 2 ** -8 + 2 ** -20)), 0x3f81); // above the tie
  assertEquals(f32BitsToBf16(bits(NaN)) & 0x7fc0, 0x7fc0);
  assertEquals(f32BitsToF16(bits(1)), 0x3c00);
  assertEquals(f32BitsToF16(bits(-0.5)), 0xb800);
  assertEquals(f32BitsToF16(bits(65504)), 0x7bff);
  assertEquals(f32BitsToF16(bits(65520)), 0x7c00); // rounds up to infinity
  assertEquals(f32BitsToF16(bits(2 ** -24)), 0x0001); // smallest subnormal
  assertEquals(f32BitsToF16(bits(2 ** -26)), 0x0000); // underflow
  assertEquals(f32BitsToF16(bits(1 + 2 ** -11)), 0x3c00); // tie, to even
  assertEquals(f32BitsToF16(bits(1 + 3 * 2 ** -11)), 0x3c02);
  assertEquals(f32BitsToF16(bits(Infinity)), 0x7c00);
});

function referenceValue(code: number, dtype: "bfloat16" | "float16"): number {
  if (dtype === "bfloat16") return new Float32Array(new Uint32Array([code << 16]).buffer)[0];
  const s = code & 0x8000 ? -1 : 1, e = (code >>> 10) & 0x1f, m = code & 0x3ff;
  if (e === 31) return m ? NaN : s * Infinity;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

// webgpu widens with a WGSL program of bit operations (lib/model/webgpu_fused.ts).
const HALF_BACKENDS = ["cpu", "wasm", "tensorflow", "webgpu"] as const;

function halfBackendsTest(name: string, fn: (backend: typeof HALF_BACKENDS[number]) => Promise<void>): void {
  for (const backend of HALF_BACKENDS) backendTest(name, backend, () => fn(backend));
}

halfBackendsTest("widenHalf: every 16-bit code widens to its exact float32 value", async () => {
  // Codes 0..65535 in order, two per word, the even element in the low half.
  const words = new Int32Array(new Uint16Array(65536).map((_, i) => i).buffer);
  for (const dtype of ["bfloat16", "float16"] as const) {
    const packed = tf.tensor1d(words, "int32");
    const wide = widenHalf({ packed, shape: [256, 256], dtype });
    assertEquals(wide.shape, [256, 256]);
    const got = await wide.data();
    tf.dispose([packed, wide]);
    let bad = 0;
    for (let c = 0; c < 65536; c++) {
      const want = referenceValue(c, dtype);
      // Subnormal bf16 values may be flushed to zero by a backend's float32 arithmetic; they are below
      // 1.2e-38 and never matter to a network.
      const subnormal = dtype === "bfloat16" && ((c >>> 7) & 0xff) === 0;
      if (
        !(Object.is(got[c], want) || (Number.isNaN(want) && Number.isNaN(got[c])) ||
          (subnormal && got[c] === 0))
      ) {
        bad++;
      }
    }
    assertEquals(bad, 0, `${dtype}: ${bad} codes widen wrongly`);
  }
});

async function maxDiff(a: tf.Tensor, b: tf.Tensor | number[][][]): Promise<number> {
  const x = await a.data();
  const y = b instanceof tf.Tensor ? await b.data() : Float32Array.from((b as number[][][]).flat(2));
  let m = 0;
  for (let i = 0; i < y.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

halfBackendsTest(
  "qwen2-tiny: bfloat16 weights give the float32 logits, float16 the golden ones within 1e-3, same greedy tokens",
  async (backend) => {
    const g = loadGolden();
    const full = await loadModel(QWEN2_TINY, { backend });
    const want = full.logits(g.input_ids);
    for (const weightsDtype of ["bfloat16", "float16"] as const) {
      const m = await loadModel(QWEN2_TINY, { backend, weightsDtype }) as Qwen2Model;
      try {
        const names = Object.keys(m.half);
        // Every layer matrix, the embedding (untied: a lookup widens only its rows) and the untied head
        // (its logits are computed slice by slice of its rows).
        assert(names.length === 7 * m.config.numHiddenLayers + 2, `${names.length} weights at 2 bytes`);
        assert("model.embed_tokens.weight" in m.half, "the untied embedding at 2 bytes");
        assert("lm_head.weight" in m.half && !("lm_head.weight" in m.params), "the untied head at 2 bytes");
        const lg = m.logits(g.input_ids);
        const d = await maxDiff(lg, weightsDtype === "bfloat16" ? want : g.logits);
        lg.dispose();
        assert(d < (weightsDtype === "bfloat16" ? 1e-5 : 1e-3), `${weightsDtype} logits differ by ${d}`);
        const out = await m.generate(g.input_ids, { maxNewTokens: 8, temperature: 0, eosTokenIds: [] });
        assertEquals(out.tokens, g.greedy_new_tokens);
      } finally {
        m.dispose();
      }
    }
    want.dispose();
    full.dispose();
  },
);

halfBackendsTest("halfMatMulBTChunked: any slice size gives x widen(W)^T (odd row length too)", async () => {
  for (const [N, K] of [[10, 5], [12, 64]]) {
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 2;
    const codes = new Uint16Array(N * K).map(() => f32BitsToBf16(bits(rnd())));
    const w = {
      packed: tf.tensor1d(new Int32Array(codes.buffer), "int32"),
      shape: [N, K],
      dtype: "bfloat16" as const,
    };
    const x = tf.tensor2d(Float32Array.from({ length: 3 * K }, rnd), [3, K]);
    const want = tf.tidy(() => matMulBT(x, widenHalf(w) as tf.Tensor2D));
    try {
      for (const rows of [1, 2, 3, 4, 7, N - 1, N, N + 5, undefined]) {
        const got = halfMatMulBTChunked(x, w, rows);
        assertEquals(got.shape, [3, N]);
        const d = await maxDiff(got, want);
        got.dispose();
        assert(d <= 1e-6, `[${N}, ${K}] in slices of ${rows} rows: differs by ${d}`);
      }
    } finally {
      tf.dispose([w.packed, x, want]);
    }
  }
});

halfBackendsTest(
  "qwen2-tiny: a bfloat16 head in slices of rows gives the one-piece logits and greedy tokens, never widened whole",
  async (backend) => {
    const g = loadGolden();
    const m = await loadModel(QWEN2_TINY, { backend, weightsDtype: "bfloat16" }) as Qwen2Model;
    try {
      const [V, H] = m.half["lm_head.weight"].shape;
      m.headChunkRows = V; // one piece
      const whole = m.logits(g.input_ids);
      const wholeOut = await m.generate(g.input_ids, { maxNewTokens: 8, temperature: 0, eosTokenIds: [] });
      m.headChunkRows = 7; // 43 slices, the last one shorter
      const sliced = m.logits(g.input_ids);
      const d = await maxDiff(sliced, whole);
      tf.dispose([whole, sliced]);
      assert(d <= 1e-6, `sliced head logits differ from the one-piece ones by ${d}`);
      const out = await m.generate(g.input_ids, { maxNewTokens: 8, temperature: 0, eosTokenIds: [] });
      assertEquals(out.tokens, wholeOut.tokens);
      assertEquals(out.tokens, g.greedy_new_tokens);
      assertEquals(out.logprobs, wholeOut.logprobs);

      // lmHeadWeight (the training losses' head) widens the 2-byte head for its caller: the float32 values.
      const full = await loadModel(QWEN2_TINY, { backend });
      const lw = tf.tidy(() => m.lmHeadWeight().clone());
      const dw = await maxDiff(lw, full.params["lm_head.weight"]);
      tf.dispose(lw);
      full.dispose();
      assert(dw === 0, `lmHeadWeight differs from the float32 head by ${dw}`);

      // Memory of one decoding row's logits: slices of 10 rows never hold more than a fraction of the
      // float32 head (V x H x 4 bytes); the one-piece product holds all of it (the check can fail).
      const h = tf.randomNormal([1, 1, H]);
      const growth = (rows: number) => {
        m.headChunkRows = rows;
        const before = tf.memory().numBytes;
        let out: tf.Tensor | null = null;
        const info = tf.profile(() => {
          out = m.project(h);
        });
        return info.then((p) => {
          (out as tf.Tensor | null)?.dispose();
          return p.peakBytes - before;
        });
      };
      const headBytes = V * H * 4;
      // tf.profile's peak is taken after each engine kernel: the row product (TensorFlow's MatMul called
      // directly) is none, so the batched one runs here; the native loop (native_gemv.ts) widens nothing
      // at all, so it is off here too.
      setRowMatMul(false);
      setNativeGemv(false);
      const slicedPeak = await growth(10), wholePeak = await growth(V);
      setRowMatMul(null);
      setNativeGemv(null);
      // (On webgpu a decode row reads the packed head as stored: nothing is widened either way.)
      if (backend !== "webgpu") {
        assert(wholePeak >= headBytes, `the one-piece product grew memory by only ${wholePeak} B`);
      }
      assert(
        slicedPeak < 0.5 * headBytes,
        `slices of 10 rows grew memory by ${slicedPeak} B of ${headBytes}`,
      );
      h.dispose();
    } finally {
      m.dispose();
    }
  },
);

halfBackendsTest(
  "qwen25vl-tiny: bfloat16 weights (vision tower too) give the float32 logits and greedy tokens",
  async (backend) => {
    const c = VL_GOLDEN.single_image;
    const full = await loadModel(VL_DIR, { backend });
    const half = await loadModel(VL_DIR, { backend, weightsDtype: "bfloat16" }) as Qwen25VLModel;
    const pv = tf.tensor2d(c.pixel_values);
    try {
      assert(Object.keys(half.half).some((n) => n.startsWith("visual.blocks.")), "vision weights at 2 bytes");
      const opts = { attentionMask: c.attention_mask, pixelValues: pv, imageGridThw: c.image_grid_thw };
      const a = full.logits(c.input_ids, opts), b = half.logits(c.input_ids, opts);
      const d = await maxDiff(b, a);
      tf.dispose([a, b]);
      assert(d < 1e-5, `VL logits differ by ${d}`);
      await assertGoldenGreedy(half, { label: "bfloat16" });
    } finally {
      tf.dispose(pv);
      full.dispose();
      half.dispose();
    }
  },
);

for (const backend of ["cpu", "tensorflow", "webgpu"] as const) {
  backendTest(
    "LoRA on a bfloat16 base with checkpointing: the float32 base's adapter gradients",
    backend,
    async () => {
      const g = loadGolden();
      const grads: Record<string, Float32Array>[] = [];
      for (const weightsDtype of ["float32", "bfloat16"] as const) {
        const m = await loadModel(QWEN2_TINY, { backend, weightsDtype }) as Qwen2Model;
        try {
          addLora(m, { r: 2, alpha: 4, seed: 5 });
          for (const ad of Object.values(m.lora)) ad.B.assign(tf.fill(ad.B.shape, 0.01));
          m.gradientCheckpointing = true;
          const ids = tf.tensor2d(g.input_ids, undefined, "int32");
          const { value, grads: gr } = valueAndGrads(
            () => tf.mean(tf.square(m.logits(ids))) as tf.Scalar,
            loraParams(m),
          );
          const got: Record<string, Float32Array> = {};
          for (const [n, t] of Object.entries(gr)) got[n] = await t.data() as Float32Array;
          grads.push(got);
          tf.dispose([ids, value, ...Object.values(gr)]);
        } finally {
          m.dispose();
        }
      }
      assertEquals(Object.keys(grads[1]).sort(), Object.keys(grads[0]).sort());
      let num = 0, den = 0;
      for (const [n, w] of Object.entries(grads[0])) {
        for (let i = 0; i < w.length; i++) {
          num = Math.max(num, Math.abs(grads[1][n][i] - w[i]));
          den = Math.max(den, Math.abs(w[i]));
        }
      }
      assert(den > 0 && num / den < 1e-5, `adapter gradients differ by ${num / den} (relative)`);
    },
  );
}

backendTest("saveModel writes a bfloat16-loaded model back exactly", "cpu", async () => {
  const m = await loadModel(QWEN2_TINY, { backend: "cpu", weightsDtype: "bfloat16" });
  const dir = await Deno.makeTempDir({ prefix: "medthink-half-" });
  try {
    await saveModel(m, dir, { dtype: "bfloat16" });
    const a = await loadModel(dir, { backend: "cpu" }), b = await loadModel(QWEN2_TINY, { backend: "cpu" });
    for (const [n, v] of Object.entries(b.params)) {
      const d = await maxDiff(a.params[n], v);
      assert(d === 0, `${n} differs by ${d} after save -> load`);
    }
    a.dispose();
    b.dispose();
  } finally {
    m.dispose();
    await Deno.remove(dir, { recursive: true });
  }
});

// A Qwen2 checkpoint of 40M parameters (80 MB in BF16, 160 MB as float32), random weights.
async function writeMediumCheckpoint(dir: string): Promise<void> {
  const cfg = {
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_size: 512,
    intermediate_size: 2048,
    num_hidden_layers: 8,
    num_attention_heads: 8,
    num_key_value_heads: 8,
    vocab_size: 1024,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: true,
    torch_dtype: "bfloat16",
  };
  const { expectedParams } = await import("../lib/model/qwen2.ts");
  const { parseConfig } = await import("../lib/model/config.ts");
  const shapes = expectedParams(parseConfig(cfg));
  let seed = 1;
  const tensors = Object.entries(shapes).map(([name, shape]) => ({
    name,
    shape,
    data: () => {
      const out = new Float32Array(shape.reduce((a, d) => a * d, 1));
      for (let i = 0; i < out.length; i++) {
        out[i] = ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 0.04;
      }
      return Promise.resolve(out);
    },
  }));
  await writeCheckpoint(dir, cfg, tensors, { dtype: "BF16", maxShardBytes: 48 << 20 });
}

const CHILD = `
import { loadModel } from "${new URL("../lib/model/load.ts", import.meta.url).href}";
import { useBackend } from "${new URL("../lib/model/backend.ts", import.meta.url).href}";
const [dir, backend, weightsDtype] = Deno.args;
await useBackend(backend);
const before = Deno.memoryUsage().rss;
let peak = before;
const timer = setInterval(() => { peak = Math.max(peak, Deno.memoryUsage().rss); }, 5);
const m = await loadModel(dir, { backend, weightsDtype });
peak = Math.max(peak, Deno.memoryUsage().rss);
clearInterval(timer);
console.log(JSON.stringify({ peakDelta: peak - before, after: Deno.memoryUsage().rss - before }));
m.dispose();
`;

for (const backend of ["cpu", "tensorflow"] as const) {
  backendTest(
    "a BF16 checkpoint loads as bfloat16 in about half the float32 load's peak RSS",
    backend,
    async () => {
      const dir = await Deno.makeTempDir({ prefix: "medthink-half-rss-" });
      try {
        await writeMediumCheckpoint(dir);
        await Deno.writeTextFile(`${dir}/child.ts`, CHILD);
        const measure = async (weightsDtype: string) => {
          const out = await new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", `${dir}/child.ts`, dir, backend, weightsDtype],
            stderr: "null",
          }).output();
          const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!;
          return JSON.parse(line) as { peakDelta: number; after: number };
        };
        const f32 = await measure("float32"), bf16 = await measure("bfloat16");
        const mb = (x: number) => (x / 2 ** 20).toFixed(0);
        console.log(
          `[${backend}] peak RSS growth of the load: float32 ${mb(f32.peakDelta)} MB, bfloat16 ${
            mb(bf16.peakDelta)
          } MB`,
        );
        // The layers are 40M of the 41M parameters: 160 MB as float32 against 80 MB.
        assert(f32.peakDelta > 120 * 2 ** 20, `the float32 load grew RSS by only ${mb(f32.peakDelta)} MB`);
        assert(
          bf16.peakDelta < 0.65 * f32.peakDelta,
          `bfloat16 ${mb(bf16.peakDelta)} MB vs float32 ${mb(f32.peakDelta)} MB`,
        );
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}
