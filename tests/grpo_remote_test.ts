// grpo() with rollouts from a `serve` server and LoRA hot-swap after each update.
import { deepStrictEqual as assertEquals, notDeepStrictEqual, ok as assert } from "node:assert/strict";
import { loadModel } from "../lib/model/load.ts";
import { loadTokenizer } from "../lib/tokenizer.ts";
import { addLora } from "../lib/train/lora.ts";
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
    const server = serveModel(served, { tokenizer, port: 0, modelName: "medthink-tiny" });
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
        prompt: (row) => tokenizer.applyChatTemplate(buildPrompt(row), { addGenerationPrompt: true }),
        // a reward with spread: the character count of the completion, modulo 5
        rewards: [(text: string) => text.length % 5],
        steps: 3,
        numGenerations: 3,
        promptsPerStep: 2,
        maxNewTokens: 5,
        lr: 0.05,
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
        h.map((m) => [m.reward, m.reward_std, m.completion_length_mean, m.completion_length_max]);
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
