"""TRL side of the `grpo step` row of `deno task bench`: one optimizer step of TRL's GRPOTrainer.

Same shapes and batch as bench/medthink_bench.ts (bench/run.ts passes both the same flags): 8 prompts x 8
completions of up to 128 new tokens (temperature 1, top-p 1), the recipe's beta 0.01 (so a reference model and its log-prob pass),
`dapo` loss, one optimizer update per step accumulated over micro-batches of 8 completions, AdamW lr 1e-6,
weight decay 0.01, gradient clip 1.0; float32 on CPU, no gradient checkpointing (TRL defaults to it on;
off, both sides do the same work).

The step is split into generation (`model.generate`), log-prob (no-grad passes: the reference model's
log-probs) and update (everything else in the step: loss forward/backward and AdamW).
The last line of stdout is `RESULT {json}`.

    bench/.venv/bin/python bench/trl_grpo_bench.py --model DIR
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time


def token_ids(batch, length, salt):
    """The benchmark's deterministic token ids (mirrors tokenIds() in bench/medthink_bench.ts)."""
    return [[(salt * 1000003 + b * 7919 + t * 104729) % 150000 + 100 for t in range(length)] for b in range(batch)]


def word_tokenizer(vocab_size, eos_id):
    """A tokenizer where token `i` is the word `t<i>`: prompts map to exact ids, no Hub files needed."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    del vocab[f"t{eos_id}"]
    vocab["<|endoftext|>"] = eos_id
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   unk_token="t0")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--max-new", type=int, default=128)
    p.add_argument("--micro", type=int, default=8, help="completions per forward/backward pass")
    p.add_argument("--beta", type=float, default=0.01)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the GPU benchmark")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16: the Trainer's bf16 mixed precision")
    args = p.parse_args()

    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)

    cfg = json.load(open(os.path.join(args.model, "config.json")))
    tok = word_tokenizer(cfg["vocab_size"], cfg["eos_token_id"])
    prompts = [" ".join(f"t{i}" for i in row) for row in token_ids(args.prompts, args.prompt_len, 4)]
    assert all(len(tok(x)["input_ids"]) == args.prompt_len for x in prompts)
    dataset = Dataset.from_dict({"prompt": prompts})

    def reward(completions, **kwargs):
        # Any non-constant reward: advantages must not be all zero (speed does not depend on the values).
        return [float(hash(c) % 997) / 997 for c in completions]

    n_completions = args.prompts * args.generations
    accum = n_completions // args.micro
    out = tempfile.mkdtemp(prefix="trl_grpo_bench_")
    config = GRPOConfig(
        output_dir=out,
        use_cpu=args.device == "cpu",
        bf16=args.dtype == "bfloat16",
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=accum,
        num_generations=args.generations,
        max_completion_length=args.max_new,
        temperature=1.0,
        top_p=1.0,
        beta=args.beta,
        loss_type="dapo",
        epsilon=0.2,
        learning_rate=1e-6,
        weight_decay=0.01,
        max_grad_norm=1.0,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        model_init_kwargs={"dtype": torch.float32},
    )
    trainer = GRPOTrainer(model=args.model, reward_funcs=reward, args=config, train_dataset=dataset,
                          processing_class=tok)

    clock = {"gen": 0.0, "logp": 0.0, "gen_tokens": 0, "step": None, "t0": None}
    model = trainer.model
    orig_generate = model.generate

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def timed_generate(*a, **kw):
        sync()
        t0 = time.perf_counter()
        ids = orig_generate(*a, **kw)
        sync()
        clock["gen"] += time.perf_counter() - t0
        clock["gen_tokens"] += ids.shape[0] * (ids.shape[1] - kw["input_ids"].shape[1])
        return ids

    model.generate = timed_generate
    orig_logps = trainer._get_per_token_logps_and_entropies

    def timed_logps(*a, **kw):
        if torch.is_grad_enabled():
            return orig_logps(*a, **kw)  # the loss's own forward: part of the update
        sync()
        t0 = time.perf_counter()
        r = orig_logps(*a, **kw)
        sync()
        clock["logp"] += time.perf_counter() - t0
        return r

    trainer._get_per_token_logps_and_entropies = timed_logps

    orig_training_step = trainer.training_step

    def timed_training_step(*a, **kw):
        # The step starts with its first micro-batch (whose inputs trigger the generation) ...
        if clock["t0"] is None:
            clock["t0"] = time.perf_counter()
        return orig_training_step(*a, **kw)

    trainer.training_step = timed_training_step

    class StepTimer(TrainerCallback):
        def on_step_end(self, *a, **kw):
            # ... and ends after the optimizer update.
            sync()
            clock["step"] = time.perf_counter() - clock["t0"]

    trainer.add_callback(StepTimer())
    trainer.train()
    step = clock["step"]
    result = {
        "workload": "grpo",
        "seconds": step,
        "generation_s": clock["gen"],
        "logprob_s": clock["logp"],
        "update_s": step - clock["gen"] - clock["logp"],
        "generated_tokens": int(clock["gen_tokens"]),
        "completions": n_completions,
        "micro": args.micro,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "dtype": args.dtype,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 1024 ** 2 if args.device == "cuda" else None,
        "loss": [h.get("loss") for h in trainer.state.log_history if "loss" in h],
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
