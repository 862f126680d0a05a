/**
 * GRPO loss against fixtures/qwen2-tiny/train_golden.json key `grpo` (float64 reference): per-token
 * log-probs, advantages, the loss of every aggregation, the KL mean and the gradients of the `grpo`
 * loss. On every backend.
 */
import { ok as assert } from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { groupAdvantages, grpoLoss, perTokenLogps, readMetrics } from "../lib/train/grpo_loss.ts";
import { allBackendsTest } from "./_backends.ts";
import { loadTrainGolden, QWEN2_TINY as DIR } from "./_model_fixtures.ts";

const G = loadTrainGolden();
const R = G.grpo;
const BATCH = {
  promptIds: R.prompt_ids,
  promptMask: R.prompt_mask,
  completionIds: R.completion_ids,
  completionMask: R.completion_mask,
};

function relErr(got: number, want: number): number {
  return Math.abs(got - want) / Math.abs(want);
}

async function relL2(got: tf.Tensor, want: unknown): Promise<number> {
  const x = await got.data();
  const y = (want as number[] | number[][]).flat(2) as number[];
  assert(x.length === y.length, `size ${x.length} vs ${y.length}`);
  let num = 0, den = 0;
  for (let i = 0; i < x.length; i++) {
    num += (x[i] - y[i]) ** 2;
    den += y[i] ** 2;
  }
  return Math.sqrt(num / den);
}

const ADV = groupAdvantages(R.rewards, R.num_generations, { scaleRewards: "group" });

Deno.test("groupAdvantages: golden (group std, unbiased, + 1e-4) and the other scalings", () => {
  ADV.forEach((a, i) => assert(Math.abs(a - R.expected_advantages[i]) < 1e-9, `advantage ${i}: ${a}`));
  const none = groupAdvantages([1, 0, 0, 1], 2, { scaleRewards: "none" });
  assert(JSON.stringify(none) === JSON.stringify([0.5, -0.5, -0.5, 0.5]), `none: ${none}`);
  // batch: the whole batch's std (unbiased) divides every group's centred rewards.
  const batch = groupAdvantages([1, 0, 1, 1], 2, { scaleRewards: "batch" });
  const s = Math.sqrt(((1 - 0.75) ** 2 * 3 + 0.75 ** 2) / 3);
  assert(Math.abs(batch[0] - 0.5 / (s + 1e-4)) < 1e-12 && batch[2] === 0, `batch: ${batch}`);
  let threw = false;
  try {
    groupAdvantages([1, 0, 1], 2);
  } catch (e) {
    threw = (e as Error).message.includes("numGenerations");
  }
  assert(threw, "3 rewards in groups of 2 must be refused");
});

allBackendsTest("golden grpo: per-token log-probs, losses of every aggregation, KL mean", async (backend) => {
  const model = await loadModel(DIR, { backend });
  const before = tf.memory().numTensors;
  const lp = perTokenLogps(model, BATCH);
  const got = await lp.array();
  lp.dispose();
  let worst = 0;
  R.completion_mask.forEach((row: number[], i: number) =>
    row.forEach((m, t) => {
      if (m) worst = Math.max(worst, Math.abs(got[i][t] - R.expected_per_token_logps[i][t]));
    })
  );
  assert(worst < 2e-3, `per-token log-probs: max abs diff ${worst}`);
  const batch = {
    ...BATCH,
    advantages: ADV,
    oldLogps: R.old_per_token_logps,
    refLogps: R.ref_per_token_logps,
  };
  const cases: [string, Record<string, unknown>][] = [
    ["grpo", { lossType: "grpo" }],
    ["bnpo", { lossType: "bnpo" }],
    ["dr_grpo", { lossType: "dr_grpo", maxCompletionLength: R.max_completion_length }],
    ["dapo_eps_high_0.28", { lossType: "dapo", epsilonHigh: 0.28 }],
  ];
  for (const [key, extra] of cases) {
    const { loss, metrics } = grpoLoss(model, batch, {
      beta: R.beta,
      epsilonLow: R.epsilon_low,
      epsilonHigh: R.epsilon_high,
      ...extra,
    });
    const value = (await loss.data())[0];
    loss.dispose();
    const m = await readMetrics(metrics);
    assert(relErr(value, R.expected_loss[key]) < 1e-4, `${key} loss ${value} vs ${R.expected_loss[key]}`);
    assert(relErr(m.kl, R.expected_kl_mean) < 1e-4, `${key} KL mean ${m.kl} vs ${R.expected_kl_mean}`);
  }
  assert(tf.memory().numTensors === before, `leaked ${tf.memory().numTensors - before} tensors`);
  model.dispose();
});

allBackendsTest("golden grpo: gradients of the grpo loss", async (backend) => {
  const model = await loadModel(DIR, { backend });
  const batch = {
    ...BATCH,
    advantages: ADV,
    oldLogps: R.old_per_token_logps,
    refLogps: R.ref_per_token_logps,
  };
  const vars = Object.values(model.params);
  const names = new Map(Object.entries(model.params).map(([k, v]) => [v.name, k]));
  let metrics: Parameters<typeof readMetrics>[0] | undefined;
  const { value, grads } = tf.variableGrads(() => {
    const out = grpoLoss(model, batch, {
      lossType: "grpo",
      beta: R.beta,
      epsilonLow: R.epsilon_low,
      epsilonHigh: R.epsilon_high,
    });
    metrics = out.metrics;
    return out.loss;
  }, vars);
  await readMetrics(metrics!);
  const loss = (await value.data())[0];
  assert(relErr(loss, R.expected_loss.grpo) < 1e-4, `loss ${loss}`);
  const byName: Record<string, tf.Tensor> = {};
  for (const [k, g] of Object.entries(grads)) byName[names.get(k) ?? k] = g;
  for (const name of Object.keys(R.expected_grads_grpo)) {
    const e = await relL2(byName[name], R.expected_grads_grpo[name]);
    assert(e < 1e-3, `grad ${name}: rel L2 ${e}`);
  }
  tf.dispose([value, ...Object.values(grads)]);
  model.dispose();
});
