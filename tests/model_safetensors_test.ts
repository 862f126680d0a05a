// The safetensors reader and writer: dtype conversions, alignment, integer tensors, headers.
import {
  decodeTensorBytes,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
} from "../lib/model/safetensors.ts";
import { check, checkEqual, checkRejects } from "./_model_fixtures.ts";

const SPECIAL = new Float32Array([0, -0, 1, -2, 0.5, 65504, 1e-7, 3.14159, -1e30, Infinity, -Infinity]);

Deno.test("safetensors: F32 / BF16 / F16 round trips (round to nearest even)", async () => {
  const dir = await Deno.makeTempDir();
  for (const dtype of ["F32", "BF16", "F16"] as const) {
    const file = `${dir}/${dtype}.safetensors`;
    await writeSafetensors(file, {
      a: { shape: [11], data: SPECIAL },
      b: { shape: [2, 1], data: new Float32Array([7, 8]) },
    }, { dtype });
    const h = await readSafetensorsHeader(file);
    check(h.dataStart % 8 === 0, "data section 8-aligned");
    checkEqual(h.tensors.a.shape, [11]);
    const t = await readSafetensors(file);
    const got = Array.from(t.a.data);
    checkEqual(t.a.dtype, dtype);
    checkEqual(Array.from(t.b.data), [7, 8]);
    if (dtype === "F32") checkEqual(got, Array.from(SPECIAL));
    if (dtype === "BF16") {
      // 3.14159 -> 3.140625 (bf16 nearest), 1 / 0.5 / -2 exact, 65504 -> 65536
      checkEqual([got[2], got[3], got[4], got[5], got[7], got[9], got[10]], [
        1,
        -2,
        0.5,
        65536,
        3.140625,
        Infinity,
        -Infinity,
      ]);
    }
    if (dtype === "F16") {
      // 65504 is f16's max; 1e-7 is a subnormal (nearest 2^-24 multiple); -1e30 overflows to -inf
      checkEqual([got[2], got[3], got[5], got[6], got[7], got[8]], [
        1,
        -2,
        65504,
        2 ** -24 * 2,
        3.140625,
        -Infinity,
      ]);
      check(Object.is(got[1], -0), "negative zero kept");
    }
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("safetensors: decoding of every stored dtype, unaligned offsets", () => {
  const bytes = (arr: ArrayBufferView) => {
    const u = new Uint8Array(arr.byteLength + 1); // force an odd byte offset
    u.set(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength), 1);
    return u.subarray(1);
  };
  checkEqual(Array.from(decodeTensorBytes(bytes(new Float32Array([1.5, -2])), "F32")), [1.5, -2]);
  checkEqual(Array.from(decodeTensorBytes(bytes(new Uint16Array([0x3fc0, 0xc000])), "BF16")), [1.5, -2]);
  checkEqual(Array.from(decodeTensorBytes(bytes(new Uint16Array([0x3e00, 0xc000, 0x0001, 0x7c00])), "F16")), [
    1.5,
    -2,
    2 ** -24,
    Infinity,
  ]);
  checkEqual(Array.from(decodeTensorBytes(bytes(new Float64Array([0.25])), "F64")), [0.25]);
  checkEqual(Array.from(decodeTensorBytes(bytes(new BigInt64Array([5n, -3n])), "I64")), [5, -3]);
  checkEqual(Array.from(decodeTensorBytes(bytes(new Int32Array([7, -9])), "I32")), [7, -9]);
  checkEqual(Array.from(decodeTensorBytes(new Uint8Array([1, 0, 255]), "U8")), [1, 0, 255]);
  const i64 = decodeTensorBytes(bytes(new BigInt64Array([1n])), "I64");
  check(i64 instanceof Int32Array, "integers decode to Int32Array");
});

Deno.test("safetensors: header problems are one sentence naming file and tensor", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/x.safetensors`;
  const header = JSON.stringify({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } });
  const enc = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + enc.length + 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(enc.length), true);
  out.set(enc, 8);
  await Deno.writeFile(file, out);
  await checkRejects(() => readSafetensorsHeader(file), [file, "tensor w", "[3]"]);
  await Deno.writeFile(file, new Uint8Array(5));
  await checkRejects(() => readSafetensorsHeader(file), [file, "truncated"]);
  await Deno.remove(dir, { recursive: true });
});
