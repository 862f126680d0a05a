/** The adaptive GRPO curriculum: its Beta estimator's arithmetic, sampling inside the band, revisiting, determinism. */
import { deepEqual, ok as assert, throws } from "node:assert/strict";
import {
  AdaptiveCurriculum,
  betaMoment,
  curriculumSampler,
  mixedProbability,
} from "../lib/train/curriculum.ts";

const close = (a: number, b: number, tol = 1e-12) => Math.abs(a - b) <= tol;

Deno.test("curriculum: Beta moments and P(mixed) equal their closed forms", () => {
  // Uniform prior: E[p^k] = 1 / (k + 1), so P(mixed) = 1 - 2 / (n + 1).
  for (const n of [2, 4, 8]) {
    assert(close(betaMoment(1, 1, n), 1 / (n + 1)));
    assert(close(mixedProbability(1, 1, n), 1 - 2 / (n + 1)));
  }
  // Beta(2, 3): E[p^2] = a(a+1) / ((a+b)(a+b+1)) = 6 / 30.
  assert(close(betaMoment(2, 3, 2), 0.2));
  // A point mass near p = 1/2 approaches the binomial 1 - 2 * 0.5^n.
  assert(close(mixedProbability(1e6, 1e6, 4), 1 - 2 / 16, 1e-5));
  // Nearly certain all-right: almost no chance of a mixed group.
  assert(mixedProbability(1e6, 1e-6, 8) < 1e-5);
});

Deno.test("curriculum: observed rewards update the posterior, and the evidence halves every halfLife steps", () => {
  const c = new AdaptiveCurriculum(3, { numGenerations: 4, prior: [1, 1], halfLife: 10 });
  let e = c.estimate(0, 0);
  assert(e.a === 1 && e.b === 1 && e.visits === 0 && close(e.pMixed, 1 - 2 / 5));
  c.observe(0, [1, 1, 0, 1], 5); // 3 of 4
  e = c.estimate(0, 5);
  assert(e.a === 4 && e.b === 2 && e.visits === 1 && close(e.mean, 4 / 6));
  e = c.estimate(0, 15); // 10 steps later: evidence x 0.5
  assert(close(e.a, 1 + 1.5) && close(e.b, 1 + 0.5), JSON.stringify(e));
  c.observe(0, [0, 0, 0, 0], 15);
  e = c.estimate(0, 15);
  assert(close(e.a, 2.5) && close(e.b, 1 + 0.5 + 4) && e.visits === 2, JSON.stringify(e));
  // Rewards outside [0, 1] are clamped (a weighted or shaped reward still counts as at most one success).
  c.observe(1, [2, -1, 0.5, 0.5], 0);
  e = c.estimate(1, 0);
  assert(close(e.a, 1 + 2) && close(e.b, 1 + 2));
  // Band: expected pass count n * mean inside [1, n - 1].
  c.observe(2, [1, 1, 1, 1], 0);
  assert(!c.estimate(2, 0).inBand && c.estimate(1, 0).inBand);
});

Deno.test("curriculum: questions inside the band are drawn more often than all-right and all-wrong ones", () => {
  const n = 8;
  const c = new AdaptiveCurriculum(300, { numGenerations: n, seed: 3, halfLife: 1e9, floor: 0.05 });
  // 100 all-right, 100 all-wrong, 100 half-right, each observed twice.
  for (let i = 0; i < 300; i++) {
    const r = i < 100 ? 1 : i < 200 ? 0 : -1;
    const group = Array.from({ length: n }, (_, j) => (r === -1 ? j % 2 : r));
    c.observe(i, group, 0);
    c.observe(i, group, 0);
  }
  const counts = [0, 0, 0];
  for (let s = 1; s <= 200; s++) for (const i of c.next(30, s)) counts[Math.floor(i / 100)]++;
  assert(counts[2] > 3 * counts[0] && counts[2] > 3 * counts[1], `draws per kind ${counts}`);
  // The floor: settled questions are still drawn.
  assert(counts[0] > 0 && counts[1] > 0, `draws per kind ${counts}`);
  const st = c.stats(200);
  assert(close(st.band_occupancy, 1 / 3) && st.visited_fraction === 1, JSON.stringify(st));
});

Deno.test("curriculum: a settled question is revisited as its evidence goes stale", () => {
  const c = new AdaptiveCurriculum(2, { numGenerations: 8, halfLife: 5, floor: 0 });
  for (let k = 0; k < 3; k++) c.observe(0, new Array(8).fill(1), 0); // settled: all right, three times
  const fresh = c.weight(0, 0);
  const later = c.weight(0, 50); // 10 half-lives later: back near the prior
  const prior = c.weight(1, 50);
  assert(fresh < 0.2 && later > 0.9 * prior, `weights ${fresh}, ${later}, prior ${prior}`);
  // Drawing one of the two: rare while settled, about as often as the unseen one once stale.
  const drawn = (step: number) => {
    const c2 = new AdaptiveCurriculum(2, { numGenerations: 8, halfLife: 5, floor: 0, seed: 7 });
    for (let k = 0; k < 3; k++) c2.observe(0, new Array(8).fill(1), 0);
    let hits = 0;
    for (let t = 0; t < 400; t++) if (c2.next(1, step)[0] === 0) hits++;
    return hits / 400;
  };
  const early = drawn(0);
  const stale = drawn(50);
  assert(early < 0.25 && stale > 0.4, `share of draws: ${early} while settled, ${stale} once stale`);
});

Deno.test("curriculum: the same seed and rewards give the same draws; another seed does not", () => {
  const run = (seed: number) => {
    const c = new AdaptiveCurriculum(50, { numGenerations: 4, seed });
    const drawn: number[][] = [];
    for (let s = 0; s < 10; s++) {
      const picked = c.next(6, s);
      drawn.push(picked);
      assert(new Set(picked).size === picked.length, "draws within a step are distinct");
      for (const i of picked) c.observe(i, [i % 2, (i >> 1) % 2, 1, 0].slice(0, 4), s);
    }
    return drawn;
  };
  deepEqual(run(11), run(11));
  assert(JSON.stringify(run(11)) !== JSON.stringify(run(12)));
  deepEqual(new AdaptiveCurriculum(3, { seed: 1 }).next(5, 0).sort(), [0, 1, 2]);
});

Deno.test("curriculum: bad options and indices are errors that name them", () => {
  throws(() => new AdaptiveCurriculum(4, { halflife: 3 } as never), /halfLife/);
  throws(() => new AdaptiveCurriculum(0), /at least one question/);
  throws(() => new AdaptiveCurriculum(4, { numGenerations: 1 }), /numGenerations/);
  const c = new AdaptiveCurriculum(4);
  throws(() => c.observe(4, [1], 0), /outside 0\.\.3/);
  throws(() => c.observe(1, [], 0), /no rewards/);
});

Deno.test("curriculum: the sampler over rows draws rows, learns from groups, and resumes exactly from its state", () => {
  const rows = Array.from({ length: 40 }, (_, i) => ({ id: `q${i}`, easy: i < 20 }));
  const play = (
    sampler: ReturnType<typeof curriculumSampler<(typeof rows)[0]>>,
    from: number,
    to: number,
  ) => {
    const drawn: string[] = [];
    for (let s = from; s < to; s++) {
      const batch = sampler.next(8, s);
      drawn.push(...batch.map((r) => r.id));
      // Easy rows: all right; the rest: half right.
      sampler.observe(batch.map((row) => ({ row, rewards: row.easy ? [1, 1, 1, 1] : [1, 0, 1, 0] })), s);
    }
    return drawn;
  };
  const whole = curriculumSampler(rows, { numGenerations: 4, seed: 5 });
  const all = play(whole, 0, 30);
  const first = curriculumSampler(rows, { numGenerations: 4, seed: 5 });
  const head = play(first, 0, 12);
  const resumed = curriculumSampler(rows, { numGenerations: 4, seed: 5 });
  resumed.restore(JSON.parse(JSON.stringify(first.state())));
  deepEqual([...head, ...play(resumed, 12, 30)], all);
  // After the first visits, the half-right rows dominate the draws.
  const late = all.slice(8 * 15).map((id) => Number(id.slice(1)));
  assert(late.filter((i) => i >= 20).length > 2 * late.filter((i) => i < 20).length, `late draws ${late}`);
  const m = whole.metrics();
  assert(m.visited_fraction === 1 && close(m.band_occupancy, 0.5), JSON.stringify(m));
  throws(
    () => whole.observe([{ row: { id: "x", easy: true }, rewards: [1] }], 30),
    /not one of the curriculum's rows/,
  );
  throws(() => new AdaptiveCurriculum(3).restore(whole.state()), /over 3 questions/);
});

Deno.test("curriculum: grpo(..., { curriculum: 'adaptive' }) wastes fewer groups than the epoch order and logs band occupancy", async () => {
  const { loadModel } = await import("../lib/model/load.ts");
  const { grpo } = await import("../lib/train/grpo.ts");
  const dir = new URL("./fixtures/qwen2-tiny", import.meta.url).pathname;
  // The fixture model has a 300-token vocabulary and no tokenizer: a prompt is its ids written out.
  const tokenizer = {
    padTokenId: 0,
    encode: (text: string) => text.split(" ").map(Number),
    decode: (ids: number[]) => ids.join(" "),
  };
  // Rows 0-11 are always right (every group flat); rows 12-15 are right for odd tokens (mostly mixed groups).
  const rows = Array.from({ length: 16 }, (_, i) => ({
    id: `p${i}`,
    question: [5 + i, 40 + 2 * i, 77].join(" "),
    options: {},
    answerLabel: "",
    answer: "",
    images: [],
  }));
  const reward = (c: string, row: { id: string }) => (Number(row.id.slice(1)) < 12 ? 1 : Number(c) % 2);
  const run = async (curriculum: boolean) => {
    const model = await loadModel(dir, { backend: "wasm" });
    const result = await grpo(model, rows, {
      tokenizer,
      promptText: (r) => r.question,
      rewards: [["parity", reward, 1]],
      maxSteps: 12,
      numGenerations: 4,
      promptsPerStep: 4,
      maxNewTokens: 1,
      learningRate: 0, // a fixed policy: only the choice of prompts differs
      beta: 0,
      seed: 3,
      progress: false,
      ...(curriculum ? { curriculum: "adaptive" as const } : {}),
    });
    model.dispose();
    return result.history;
  };
  const plain = await run(false);
  const adaptive = await run(true);
  const wasted = (h: typeof plain) =>
    h.slice(4).reduce((s, m) => s + m.frac_reward_zero_std, 0) / (h.length - 4);
  assert(wasted(adaptive) < wasted(plain) - 0.1, `zero-std fraction ${wasted(adaptive)} vs ${wasted(plain)}`);
  assert(adaptive.every((m) => typeof m.band_occupancy === "number") && !("band_occupancy" in plain[0]));
  assert(adaptive.at(-1)!.visited_fraction === 1, JSON.stringify(adaptive.at(-1)));
});
