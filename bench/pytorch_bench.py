"""PyTorch eager side of `deno task bench` (CPU, float32) and of the GPU benchmark (bench/gpu_device.sh: CUDA,
float32 or bfloat16): the same work as bench/medthink_bench.ts.

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


DEVICE = "cpu"
DTYPE = "float32"


def sync(torch):
    """Wait for the GPU's queued kernels (CUDA is asynchronous): every timer stops after this."""
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def load_model(torch, model_dir, train=False):
    from transformers import AutoModelForCausalLM

    # Training in "bfloat16" is mixed precision as transformers' Trainer does it (bf16=True): float32
    # weights, gradients and AdamW state, matrix products under autocast. Inference loads bf16 weights.
    dtype = torch.bfloat16 if DTYPE == "bfloat16" and not train else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(DEVICE)
    model.eval()
    sync(torch)
    return model


def tensor(torch, rows):
    return torch.tensor(rows, device=DEVICE)


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
    ids = tensor(torch, token_ids(1, args.tokens, 1))
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

    def __init__(self, torch):
        self.torch = torch
        self.stamps = []

    def put(self, value):
        sync(self.torch)
        self.stamps.append(time.perf_counter())

    def end(self):
        sync(self.torch)
        self.stamps.append(time.perf_counter())


def bench_decode(torch, args):
    model = load_model(torch, args.model)
    b, prompt, new = args.batch, args.prompt, args.new_tokens
    ids = tensor(torch, token_ids(b, prompt, 2))
    mask = torch.ones_like(ids)
    # eos suppressed by min_new_tokens: every row makes new + 1 tokens.
    gen = dict(do_sample=False, pad_token_id=0, max_new_tokens=new + 1, min_new_tokens=new + 1)
    with torch.inference_mode():
        model.generate(input_ids=ids[:, :8], attention_mask=mask[:, :8], do_sample=False, pad_token_id=0,
                       max_new_tokens=2, min_new_tokens=2)  # warm-up (small)
        decode, totals = [], []
        for _ in range(args.runs):
            clock = StepClock(torch)
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
    import contextlib

    model = load_model(torch, args.model, train=True)
    model.train()
    b, t = args.batch, args.tokens
    ids = tensor(torch, token_ids(b, t, 3))
    mask = torch.ones_like(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=1e-4)
    autocast = (lambda: torch.autocast(DEVICE, dtype=torch.bfloat16)) if DTYPE == "bfloat16" else contextlib.nullcontext
    times, losses = [], []
    # One untimed step on the GPU: CUDA's first step pays for kernel selection and AdamW's state.
    for i in range(args.runs + (1 if DEVICE == "cuda" else 0)):
        sync(torch)
        t0 = time.perf_counter()
        with autocast():
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        sync(torch)
        if DEVICE == "cuda" and i == 0:
            continue
        losses.append(value)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {"times": times, "seconds": s, "tokens": b * t, "tok_s": b * t / s, "losses": losses}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="random Hub-layout checkpoint folder")
    p.add_argument("--workload", choices=["load", "prefill", "decode", "sft"])
    p.add_argument("--rows", help="comma-separated benchmark rows run one after the other in this process, "
                   "each at the benchmark's shapes: " + ",".join(ROW_SHAPES) + " (the GPU benchmark)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=512, help="prefill length / SFT sequence length")
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="bfloat16: bf16 weights for inference, autocast mixed precision for SFT")
    args = p.parse_args()
    global DEVICE, DTYPE
    DEVICE, DTYPE = args.device, args.dtype

    if not args.workload and not args.rows:
        p.error("give --workload or --rows")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not args.rows:
        run_one(torch, args)
        return
    for row in args.rows.split(","):
        if row not in ROW_SHAPES:
            p.error(f"unknown row '{row}': choose from {','.join(ROW_SHAPES)}")
        run_one(torch, argparse.Namespace(**{**vars(args), **ROW_SHAPES[row], "row": row}))


# The rows of bench/RESULTS.md and their shapes (bench/run.ts passes the same as flags).
ROW_SHAPES = {
    "prefill": {"workload": "prefill", "tokens": 512},
    "decode-b1": {"workload": "decode", "batch": 1, "prompt": 64, "new_tokens": 64},
    "decode-b8": {"workload": "decode", "batch": 8, "prompt": 64, "new_tokens": 64},
    "decode-b32": {"workload": "decode", "batch": 32, "prompt": 64, "new_tokens": 64},
    "sft": {"workload": "sft", "batch": 4, "tokens": 256},
    "load": {"workload": "load"},
}


def run_one(torch, args):
    import transformers

    fn = {"load": bench_load, "prefill": bench_prefill, "decode": bench_decode, "sft": bench_sft}[args.workload]
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result = fn(torch, args)
    if getattr(args, "row", None):
        result["row"] = args.row
    if DEVICE == "cuda":
        result.update(gpu=torch.cuda.get_device_name(0),
                      peak_gpu_mb=torch.cuda.max_memory_allocated() / 1024 ** 2)
    result.update(
        device=DEVICE,
        dtype=DTYPE,
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
