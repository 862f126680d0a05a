/**
 * Many-input ops that stay correct on every backend: tfjs-backend-webgpu 4.22 silently returns wrong
 * values from `concat` and `addN` with 8 or more inputs (measured under Deno on Mesa's Vulkan: one
 * storage buffer per input, and the 8-buffer limit is exceeded). These combine at most 6 at a time.
 *
 * @module
 */
import { tf } from "../util/deps.ts";

const GROUP = 6;

/** `tf.concat(parts, axis)` in groups of at most 6 (tidy: the intermediate pieces are freed). */
export function concatMany<T extends tf.Tensor>(parts: T[], axis = 0): T {
  if (parts.length === 1) return parts[0].clone() as T;
  return tf.tidy(() => {
    let level: tf.Tensor[] = parts;
    while (level.length > 1) {
      const next: tf.Tensor[] = [];
      for (let i = 0; i < level.length; i += GROUP) {
        const g = level.slice(i, i + GROUP);
        next.push(g.length === 1 ? g[0] : tf.concat(g, axis));
      }
      level = next;
    }
    return level[0] as T;
  });
}

/** `tf.addN(xs)` in groups of at most 6. */
export function addMany<T extends tf.Tensor>(xs: T[]): T {
  if (xs.length === 1) return xs[0].clone() as T;
  return tf.tidy(() => {
    let level: tf.Tensor[] = xs;
    while (level.length > 1) {
      const next: tf.Tensor[] = [];
      for (let i = 0; i < level.length; i += GROUP) {
        const g = level.slice(i, i + GROUP);
        next.push(g.length === 1 ? g[0] : tf.addN(g));
      }
      level = next;
    }
    return level[0] as T;
  });
}

// deno-lint-ignore no-explicit-any
type AnyTensor = any;

/**
 * `tf.variableGrads`' gradients of `f` with respect to `vars` (same order; null where a variable does not
 * reach the result), with the memory of a PyTorch backward: tfjs-core keeps every intermediate gradient and
 * every tensor saved for the backward alive until the whole backward pass ends (one `tidy`), so its peak is
 * all activations PLUS all intermediate gradients of the graph (about twice PyTorch's for a full
 * fine-tune). This walks the same tape the same way (tfjs-core 4.22's `Engine.gradients`, whose internals it
 * uses) but frees each node's output gradient and saved tensors as soon as that node has been
 * back-propagated: a tensor's gradient is complete when its producer is reached, as every consumer comes
 * later on the tape. Inside another gradient computation (higher-order gradients) it defers to
 * `tf.variableGrads`.
 *
 * `addTo` (aligned with `vars`): running sums to add the gradients to (gradient accumulation); each is
 * disposed and replaced by its new sum in the result as soon as that variable's gradient is complete.
 */
export function leanVariableGrads(
  f: () => tf.Scalar,
  vars: tf.Variable[],
  addTo?: (tf.Tensor | null | undefined)[],
): { value: tf.Scalar; grads: (tf.Tensor | null)[] } {
  const engine = tf.engine() as AnyTensor;
  const trainable = vars.filter((v) => v.trainable);
  // Running sums (gradient accumulation) by variable id: a gradient is added to its sum as soon as it is
  // complete, so that a whole second set of gradients never exists next to the sums.
  const sums = new Map<number, tf.Tensor>();
  vars.forEach((v, i) => {
    if (addTo?.[i]) sums.set(v.id, addTo[i]!);
  });
  const finish = (grads: (tf.Tensor | null)[]) =>
    vars.map((v, i) => {
      const g = grads[i], sum = sums.get(v.id);
      if (!sum) return g;
      if (!g) return sum;
      const out = tf.add(sum, g);
      tf.dispose([sum, g]);
      return out;
    });
  if (engine.state.gradientDepth > 0 || typeof engine.scopedRun !== "function" || trainable.length === 0) {
    const { value, grads } = tf.variableGrads(f, vars);
    return { value, grads: finish(vars.map((v) => grads[v.name] ?? null)) };
  }
  const y: tf.Tensor = engine.scopedRun(
    () => engine.startTape(),
    () => engine.endTape(),
    () => engine.tidy("forward", f),
  );
  if (!(y instanceof tf.Tensor) || y.rank !== 0) {
    throw new Error("leanVariableGrads: the loss function must return a scalar tensor.");
  }
  const tape: AnyTensor[] = engine.state.activeTape;
  const filtered = filterTape(tape, trainable, y);
  const grads = engine.tidy("backward", () => {
    const acc: Record<number, tf.Tensor> = {};
    // Every tensor held in `acc`: a gradient function may hand back a tensor it was given (a dy passed
    // through), which then gets its own handle so that freeing one entry never frees another.
    const live = new Set<tf.Tensor>();
    acc[y.id] = tf.onesLike(y);
    live.add(acc[y.id]);
    // Uses of each variable left to back-propagate: at 0 its gradient is complete.
    const pending = new Map<number, number>();
    for (const node of filtered) {
      for (const name in node.inputs) {
        const id = node.inputs[name].id;
        if (sums.has(id)) pending.set(id, (pending.get(id) ?? 0) + 1);
      }
    }
    const done = new Map<number, tf.Tensor>();
    for (let i = filtered.length - 1; i >= 0; i--) {
      const node = filtered[i];
      const dys = node.outputs.map((o: tf.Tensor) => acc[o.id] ?? null);
      if (node.gradient == null) {
        throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
      }
      const inputGrads = node.gradient(dys);
      for (const name in node.inputs) {
        if (!(name in inputGrads)) {
          throw new Error(
            `Cannot backprop through input ${name}. Available gradients found: ${Object.keys(inputGrads)}.`,
          );
        }
        let dx: tf.Tensor = engine.tidy(() => inputGrads[name]());
        // (also a tensor the node saved, which is freed below)
        if (live.has(dx) || node.saved?.includes(dx)) dx = dx.clone();
        const x: tf.Tensor = node.inputs[name];
        if (dx.dtype !== "float32") {
          throw new Error(
            `Error in gradient for op ${node.kernelName}: input '${name}' got a ${dx.dtype} gradient.`,
          );
        }
        if (dx.shape.join(",") !== x.shape.join(",")) {
          throw new Error(
            `Error in gradient for op ${node.kernelName}: the gradient of '${name}' has shape [${dx.shape}], the input [${x.shape}].`,
          );
        }
        const cur = acc[x.id];
        if (cur == null) acc[x.id] = dx;
        else {
          acc[x.id] = tf.add(cur, dx);
          live.delete(cur);
          cur.dispose();
          dx.dispose();
        }
        live.add(acc[x.id]);
      }
      // This node's outputs are done with: free their gradients and what the node saved for its backward.
      for (const o of node.outputs as tf.Tensor[]) {
        const g = acc[o.id];
        if (g == null) continue;
        delete acc[o.id];
        live.delete(g);
        g.dispose();
      }
      for (const t of (node.saved ?? []) as tf.Tensor[]) t.dispose();
      for (const name in node.inputs) {
        const id = node.inputs[name].id;
        const left = pending.get(id);
        if (left === undefined) continue;
        pending.set(id, left - 1);
        if (left - 1 > 0 || acc[id] == null) continue;
        const sum = tf.add(sums.get(id)!, acc[id]);
        sums.get(id)!.dispose();
        sums.delete(id);
        live.delete(acc[id]);
        acc[id].dispose();
        delete acc[id];
        done.set(id, sum);
      }
    }
    return trainable.map((v) => done.get(v.id) ?? acc[v.id] ?? null);
  }) as (tf.Tensor | null)[];
  // As tfjs-core: the tape's saved tensors go with it (those of nodes not back-propagated included).
  for (const node of tape) for (const t of (node.saved ?? []) as tf.Tensor[]) t.dispose();
  engine.state.activeTape = null;
  const byVar = new Map(trainable.map((v, i) => [v, grads[i]]));
  // Sums not reached in the loop (no gradient this time) are added or passed through by `finish`.
  const out = vars.map((v) => byVar.get(v) ?? null);
  return { value: y as tf.Scalar, grads: finish(out) };
}

/** tfjs-core's `getFilteredNodesXToY`: the tape nodes on a path from `xs` to `y`, inputs pruned to those. */
function filterTape(tape: AnyTensor[], xs: tf.Tensor[], y: tf.Tensor): AnyTensor[] {
  const fromX: Record<number, boolean> = {};
  const nodesFromX: Record<number, boolean> = {};
  for (const x of xs) fromX[x.id] = true;
  for (const node of tape) {
    for (const name in node.inputs) {
      if (fromX[node.inputs[name].id]) {
        for (const o of node.outputs) fromX[o.id] = true;
        nodesFromX[node.id] = true;
        break;
      }
    }
  }
  const toY: Record<number, boolean> = { [y.id]: true };
  const nodesToY: Record<number, boolean> = {};
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if ((node.outputs as tf.Tensor[]).some((o) => toY[o.id])) {
      for (const name in node.inputs) {
        toY[node.inputs[name].id] = true;
        nodesToY[node.id] = true;
      }
    }
  }
  const out: AnyTensor[] = [];
  for (const node of tape) {
    if (!(nodesFromX[node.id] && nodesToY[node.id])) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const name in node.inputs) if (fromX[node.inputs[name].id]) inputs[name] = node.inputs[name];
    out.push({ ...node, inputs, outputs: node.outputs });
  }
  return out;
}
