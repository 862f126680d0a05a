import { deepStrictEqual as assertEquals, ok as assert, strictEqual } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { uploadNow } from "../lib/model/backend.ts";
import { BACKENDS, backendTest } from "./_backends.ts";

// uploadNow moves a JS-made tensor to the GPU through queue.writeBuffer (tfjs-webgpu's own first-use
// upload took 84 s for the 0.5B model on an H200): the data must read back exactly, ops and variables
// built on it must see it, and disposing must return the buffer to tfjs's pool.
for (const b of BACKENDS) {
  backendTest("uploadNow: values, ops and variables see the same data; nothing leaks", b, async () => {
    const before = tf.memory().numTensors;
    const values = new Float32Array(4099).map((_, i) => Math.sin(i) * 1e3 + i / 7);
    const t = uploadNow(tf.tensor(values, [4099]));
    if (b === "webgpu") {
      // deno-lint-ignore no-explicit-any
      const data = (tf.backend() as any).tensorMap.get(t.dataId);
      assert(data.resource != null, "on webgpu the tensor's buffer exists right after uploadNow");
      strictEqual(data.values, null, "and its JS copy is dropped");
    }
    assertEquals(Array.from(await t.data()), Array.from(values));
    const v = tf.variable(t, true);
    const doubled = v.mul(2);
    assertEquals(Array.from(await doubled.data()), Array.from(values, (x) => Math.fround(x * 2)));
    const ints = uploadNow(tf.tensor([3, -1, 7], [3], "int32"));
    assertEquals(Array.from(await ints.data()), [3, -1, 7]);
    // Empty and scalar tensors: an empty write would crash Deno's WebGPU, so they stay as they are.
    const empty = uploadNow(tf.tensor(new Float32Array(0), [0, 4]));
    const scalar = uploadNow(tf.scalar(-0.75));
    assertEquals(Array.from(await empty.data()), []);
    assertEquals(Array.from(await scalar.data()), [-0.75]);
    // Already on the device (an op's output): nothing to do, same values.
    assertEquals(Array.from(await uploadNow(doubled).data()), Array.from(await doubled.data()));
    tf.dispose([t, v, doubled, ints, empty, scalar]);
    strictEqual(tf.memory().numTensors, before);
  });
}
