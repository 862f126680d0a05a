// grpo() with rollouts from a `serve` server and LoRA hot-swap after each update.
import {
  deepStrictEqual as assertEquals,
  notDeepStrictEqual,
  ok as assert,
  rejects as assertRejects,
} from "node:assert/strict";
import { tf } from "../lib/util/deps.ts";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/data/tokenizer.ts";
import { addLora } from "../lib/model/lora.ts";
import { grpo, type GrpoOptions, type GrpoStepMetrics } from "../lib/train/grpo.ts";
import { serveModel } from "../lib/serve/server.ts";
import { remotePolicy } from "../lib/engine/policy_sync.ts";
import { buildPrompt } from "../lib/data/prompt.ts";
import { fakeRows } from "./_eval_fakes.ts";

Deno.test({
  name:
    "grpo with remote rollouts: served outputs change after each update; losses equal a local-rollout run",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "grpo_remote_" });
    const served = await loadModel("medthink-tiny");
    const tokenizer = await loadTokenizer(served.dir);
    // weight sync needs the runtime-update routes, on the folder the policy is written to
    const server = serveModel(served, {
      tokenizer,
      port: 0,
      modelName: "medthink-tiny",
      allowRuntimeUpdates: true,
      allowedLocalPaths: [dir],
    });
    const policyA = await loadModel("medthink-tiny");
    const policyB = await loadModel("medthink-tiny");
    try {
      for (const m of [policyA, policyB]) {
        addLora(m, { r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"], seed: 3 });
      }
      const rows = fakeRows(4);
      const probeIds = tokenizer.encode(
        tokenizer.applyChatTemplate(buildPrompt(rows[0]), { addGenerationPrompt: true }),
      );
      const served4 = async () => {
        const r = await fetch(`${server.url}/v1/completions`, {
          method: "POST",
          body: JSON.stringify({
            model: "policy",
            prompt: probeIds,
            max_tokens: 4,
            temperature: 0,
            logprobs: 0,
          }),
        });
        return (await r.json()).choices[0].logprobs.token_logprobs as number[];
      };
      const base: GrpoOptions = {
        tokenizer,
        promptText: (row) => tokenizer.applyChatTemplate(buildPrompt(row), { addGenerationPrompt: true }),
        // a reward with spread: the character count of the completion, modulo 5
        rewards: [(text: string) => text.length % 5],
        maxSteps: 3,
        numGenerations: 3,
        promptsPerStep: 2,
        maxNewTokens: 5,
        learningRate: 0.05,
        beta: 0.04,
        seed: 7,
        progress: false,
      };
      const servedPerStep: number[][] = [];
      const remote = remotePolicy({
        baseUrls: [server.url],
        protocol: "medthink",
        model: "medthink-tiny",
        dir,
      });
      const remoteRun = await grpo(policyA, rows, {
        ...base,
        remote,
        onStep: async () => void servedPerStep.push(await served4()),
      });
      const localRun = await grpo(policyB, rows, base);
      // the server sampled every rollout of the remote run, with the adapter of each step
      assert(remote.engine.stats()[0].ok === 3 * 2 * 3);
      assertEquals(servedPerStep.length, 3);
      notDeepStrictEqual(servedPerStep[1], servedPerStep[0]);
      notDeepStrictEqual(servedPerStep[2], servedPerStep[1]);
      // same seeds -> same completions -> the same losses and rewards as rollouts from model.generate
      const pick = (h: GrpoStepMetrics[]) =>
        h.map((m) => [m.reward, m.reward_std, m.completion_length, m.completion_length_max]);
      assertEquals(pick(remoteRun.history), pick(localRun.history));
      for (const [i, m] of remoteRun.history.entries()) {
        const want = localRun.history[i].loss;
        assert(
          Math.abs(m.loss - want) <= 1e-5 * Math.max(1, Math.abs(want)),
          `step ${i}: loss ${m.loss} vs local ${want}`,
        );
      }
      // after a final push the server's greedy log-probs are the trainer's
      await remote.sync(policyA, 100);
      const local = await policyA.generate([probeIds], { temperature: 0, maxNewTokens: 4 });
      const got = await served4();
      got.forEach((lp, t) =>
        assert(Math.abs(lp - local.logprobs[0][t]) < 1e-4, `token ${t}: ${lp} vs ${local.logprobs[0][t]}`)
      );
      // both versions kept on disk at most (keep = 2)
      const left = [...Deno.readDirSync(dir)].map((e) => e.name);
      assert(left.length <= 2, `left ${left}`);
    } finally {
      await server.shutdown();
      for (const m of [served, policyA, policyB]) m.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "remotePolicy: full weights via update_weights_from_disk, SGLang's unload+load for LoRA, vLLM refuses full weights",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "policy_sync_" });
    const served = await loadModel("medthink-tiny");
    const tokenizer = await loadTokenizer(served.dir);
    // weight sync needs the runtime-update routes, on the folder the policy is written to
    const server = serveModel(served, {
      tokenizer,
      port: 0,
      modelName: "medthink-tiny",
      allowRuntimeUpdates: true,
      allowedLocalPaths: [dir],
    });
    const policy = await loadModel("medthink-tiny");
    try {
      const ids = tokenizer.encode(
        tokenizer.applyChatTemplate(buildPrompt(fakeRows(1)[0]), { addGenerationPrompt: true }),
      );
      const servedLogps = async (model: string) => {
        const r = await fetch(`${server.url}/v1/completions`, {
          method: "POST",
          body: JSON.stringify({
            model,
            prompt: ids,
            max_tokens: 3,
            temperature: 0,
            logprobs: 0,
            return_token_ids: true,
          }),
        });
        const c = (await r.json()).choices[0];
        return { tokens: c.token_ids as number[], logps: c.logprobs.token_logprobs as number[] };
      };
      const localLogps = async () => {
        const out = await policy.generate([ids], { temperature: 0, maxNewTokens: 3 });
        return { tokens: out.tokens[0], logps: out.logprobs[0] };
      };
      const same = (a: { tokens: number[]; logps: number[] }, b: { tokens: number[]; logps: number[] }) => {
        assertEquals(a.tokens, b.tokens);
        a.logps.forEach((v, i) => assert(Math.abs(v - b.logps[i]) < 1e-4, `${v} vs ${b.logps[i]}`));
      };
      const before = await servedLogps("medthink-tiny");
      // full fine-tuning: change the policy's weights, push them from disk
      const w = policy.params["model.norm.weight"];
      w.assign(w.mul(1.5));
      const full = remotePolicy({
        baseUrls: [server.url],
        protocol: "medthink",
        model: "medthink-tiny",
        dir: `${dir}/full`,
      });
      assertEquals(await full.sync(policy, 1), "medthink-tiny");
      const after = await servedLogps("medthink-tiny");
      notDeepStrictEqual(after.logps, before.logps);
      same(after, await localLogps());
      await assertRejects(
        remotePolicy({ baseUrls: [server.url], protocol: "vllm", model: "medthink-tiny", dir }).sync(
          policy,
          2,
        ),
        /update_weights_from_disk/,
      );
      // LoRA through SGLang's routes, twice (the second unloads the first)
      addLora(policy, { r: 2, alpha: 4, targetModules: ["q_proj", "v_proj"], seed: 5 });
      const sg = remotePolicy({
        baseUrls: [server.url],
        protocol: "sglang",
        model: "medthink-tiny",
        dir: `${dir}/sg`,
        loraName: "sg",
      });
      for (const v of [1, 2]) {
        for (const ad of Object.values(policy.lora)) {
          ad.B.assign(tf.randomNormal(ad.B.shape, 0, 0.5, "float32", v));
        }
        assertEquals(await sg.sync(policy, v), "sg");
        same(await servedLogps("sg"), await localLogps());
      }
    } finally {
      await server.shutdown();
      served.dispose();
      policy.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "grpo importanceSamplingCap: sequence weight exp(sum(trainer - server logp)) scales the policy gradient; above the cap it is 0",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "grpo_is_" });
    const served = await loadModel("medthink-tiny");
    const tokenizer = await loadTokenizer(served.dir);
    // weight sync needs the runtime-update routes, on the folder the policy is written to
    const server = serveModel(served, {
      tokenizer,
      port: 0,
      modelName: "medthink-tiny",
      allowRuntimeUpdates: true,
      allowedLocalPaths: [dir],
    });
    try {
      const rows = fakeRows(2);
      /** One GRPO step with the server's log-probs shifted by `shift` per sequence (spread over its tokens). */
      const gradNorm = async (shift: number | null) => {
        const policy = await loadModel("medthink-tiny");
        try {
          addLora(policy, { r: 2, alpha: 4, targetModules: ["q_proj", "v_proj"], seed: 9 });
          const inner = remotePolicy({
            baseUrls: [server.url],
            protocol: "medthink",
            model: "medthink-tiny",
            dir,
          });
          const engine = {
            name: "shifted",
            complete: async (
              reqs: Parameters<typeof inner.engine.complete>[0],
              s: Parameters<typeof inner.engine.complete>[1],
            ) =>
              (await inner.engine.complete(reqs, s)).map((r) =>
                r.map((x) => ({
                  ...x,
                  logprobs: x.logprobs.map((l) => l - (shift ?? 0) / x.logprobs.length),
                }))
              ),
          };
          const run = await grpo(policy, rows, {
            tokenizer,
            promptText: (row) => tokenizer.applyChatTemplate(buildPrompt(row), { addGenerationPrompt: true }),
            rewards: [(text: string) => text.length % 5],
            maxSteps: 1,
            numGenerations: 3,
            promptsPerStep: 2,
            maxNewTokens: 4,
            beta: 0,
            seed: 11,
            progress: false,
            remote: { engine, sync: inner.sync },
            ...(shift === null ? {} : { importanceSamplingCap: 3 }),
          });
          return run.history[0].grad_norm;
        } finally {
          policy.dispose();
        }
      };
      const plain = await gradNorm(null);
      const doubled = await gradNorm(Math.log(2)); // weight 2 for every completion
      const masked = await gradNorm(5); // weight e^5 > 3: every completion masked
      assert(plain > 0);
      assert(Math.abs(doubled / plain - 2) < 1e-3, `${doubled} vs 2 x ${plain}`);
      assertEquals(masked, 0);
    } finally {
      await server.shutdown();
      served.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
