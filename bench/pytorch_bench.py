"""PyTorch eager (CPU, float32) side of `deno task bench`: the same work as bench/medthink_bench.ts.

One workload per process, so that each one's peak RSS is its own. The last line of stdout is
`RESULT {json}`; bench/run.ts parses it.

    bench/.venv/bin/python bench/pytorch_bench.py --model DIR --workload prefill --runs 3
    workloads: load | prefill | decode (--batch N) | sft

Inputs are the same deterministic token ids as the TypeScript side (see `token_ids`), the model is
loaded from the same random Hub-layout checkpoint (bench/random_checkpoint.ts writes it).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time


def token_ids(batch, length, salt):
    """The benchmark's deterministic token ids (mirrors tokenIds() in bench/medthink_bench.ts)."""
    return [[(salt * 1000003 + b * 7919 + t * 104729) % 150000 + 100 for t in range(length)] for b in range(batch)]


def peak_rss_mb():
    # Linux reports ru_maxrss in KiB: the process's high-water mark (VmHWM).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_model(torch, model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    return model


def bench_load(torch, args):
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        model = load_model(torch, args.model)
        times.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in model.parameters())
        del model
    return {"times": times, "seconds": statistics.median(times), "params": params}


def bench_prefill(torch, args):
    model = load_model(torch, args.model)
    ids = torch.tensor(token_ids(1, args.tokens, 1))
    with torch.inference_mode():
        model(input_ids=ids[:, :16])  # warm-up (small)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = model(input_ids=ids, use_cache=False)
            # Full logits [1, T, V], as model.logits() returns on our side.
            _ = out.logits[0, -1, :8].tolist()
            times.append(time.perf_counter() - t0)
            del out
    t = statistics.median(times)
    return {"times": times, "seconds": t, "tokens": args.tokens, "tok_s": args.tokens / t}


class StepClock:
    """A generate() streamer that only timestamps: put() runs once for the prompt, then once per new token."""

    def __init__(self):
        self.stamps = []

    def put(self, value):
        self.stamps.append(time.perf_counter())

    def end(self):
        self.stamps.append(time.perf_counter())


def bench_decode(torch, args):
    model = load_model(torch, args.model)
    b, prompt, new = args.batch, args.prompt, args.new_tokens
    ids = torch.tensor(token_ids(b, prompt, 2))
    mask = torch.ones_like(ids)
    # eos suppressed by min_new_tokens: every row makes new + 1 tokens.
    gen = dict(do_sample=False, pad_token_id=0, max_new_tokens=new + 1, min_new_tokens=new + 1)
    with torch.inference_mode():
        model.generate(input_ids=ids[:, :8], attention_mask=mask[:, :8], do_sample=False, pad_token_id=0,
                       max_new_tokens=2, min_new_tokens=2)  # warm-up (small)
        decode, totals = [], []
        for _ in range(args.runs):
            clock = StepClock()
            t0 = time.perf_counter()
            out = model.generate(input_ids=ids, attention_mask=mask, streamer=clock, **gen)
            totals.append(time.perf_counter() - t0)
            assert out.shape[1] == prompt + new + 1, out.shape
            # stamps: [prompt, token 1 (after prefill), token 2, ..., token new+1, end]: the first new token
            # comes from the prefill; the next `new` tokens are the decode steps timed here.
            decode.append(clock.stamps[new + 1] - clock.stamps[1])
    t = statistics.median(decode)
    return {"times": decode, "seconds": t, "total_times": totals, "batch": b, "new_tokens": new,
            "tok_s": b * new / t}


def bench_sft(torch, args):
    model = load_model(torch, args.model)
    model.train()
    b, t = args.batch, args.tokens
    ids = torch.tensor(token_ids(b, t, 3))
    mask = torch.ones_like(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4)
    times, losses = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {"times": times, "seconds": s, "tokens": b * t, "tok_s": b * t / s, "losses": losses}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="random Hub-layout checkpoint folder")
    p.add_argument("--workload", required=True, choices=["load", "prefill", "decode", "sft"])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=512, help="prefill length / SFT sequence length")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    args = p.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fn = {"load": bench_load, "prefill": bench_prefill, "decode": bench_decode, "sft": bench_sft}[args.workload]
    result = fn(torch, args)
    result.update(
        workload=args.workload,
        peak_rss_mb=peak_rss_mb(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        mkldnn=torch.backends.mkldnn.is_available(),
    )
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
