"""PyTorch's side of the real-size rows (`deno task bench --rows real`): the workloads of bench/real_bench.ts
with transformers' Qwen2_5_VLForConditionalGeneration (+ PEFT for LoRA) on the same checkpoint folder, in
`--dtype` float32 (default; as medthink computes) or bfloat16 (weights and compute: the 7B's float32 weights
alone would take 33 GB). Last stdout line: `RESULT {json}` with the time and the peak RSS (ru_maxrss).

  python bench/real_torch.py --model DIR --workload load|generate|grpo [--pixels 200704|default] ...

The GRPO step is written out (generation of G samples per prompt, reference log-probs with the adapters
off, the clipped-ratio loss with a k3 KL term, backward, AdamW), with PEFT LoRA on every linear layer of the
language model and gradient checkpointing on: the same work as medthink's `grpo()` step.
"""
import argparse
import json
import os
import resource
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(os.environ.get("MEDTHINK_CACHE", os.path.expanduser("~/.cache/medthink")), "tokenizer-qwen2.5")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rows(n):
    out = []
    with open(os.path.join(ROOT, "data/vqa_rad_closed/test.jsonl")) as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


def load(args):
    from transformers import Qwen2_5_VLForConditionalGeneration

    t0 = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(args.model, dtype=DTYPES[args.dtype])
    model.eval()
    return model, time.perf_counter() - t0


def inputs_for(args, batch_rows):
    """input_ids, attention_mask, pixel_values, image_grid_thw of chat prompts with one image each (left-padded)."""
    from PIL import Image
    from transformers import AutoImageProcessor, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    proc = AutoImageProcessor.from_pretrained(args.model, use_fast=False)
    if args.pixels != "default":
        px = int(args.pixels)
        proc.min_pixels = proc.max_pixels = px
        if hasattr(proc, "size") and isinstance(proc.size, dict):
            proc.size = {"shortest_edge": px, "longest_edge": px}
    images = [Image.open(os.path.join(ROOT, "data/vqa_rad_closed", r["images"][0])).convert("RGB") for r in batch_rows]
    pix = proc(images=images, return_tensors="pt")
    grids = pix["image_grid_thw"].tolist()
    ids = []
    for r, g in zip(batch_rows, grids):
        n = g[0] * g[1] * g[2] // 4
        text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>" + r["question"] +
                " Answer yes or no.<|im_end|>\n<|im_start|>assistant\n")
        ids.append(tok(text, add_special_tokens=False)["input_ids"])
    T = max(len(x) for x in ids)
    pad = 151643
    input_ids = torch.tensor([[pad] * (T - len(x)) + x for x in ids])
    mask = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids])
    return input_ids, mask, pix["pixel_values"].to(DTYPES[args.dtype]), pix["image_grid_thw"], grids


def bench_load(args):
    model, seconds = load(args)
    n = sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "params": n}


@torch.no_grad()
def bench_generate(args):
    model, load_s = load(args)
    input_ids, mask, pv, thw, grids = inputs_for(args, rows(1))
    t0 = time.perf_counter()
    out = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pv, image_grid_thw=thw,
                         max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    seconds = time.perf_counter() - t0
    n = out.shape[1] - input_ids.shape[1]
    return {"seconds": seconds, "load_s": load_s, "tok_s": n / seconds, "new_tokens": n,
            "prompt_tokens": input_ids.shape[1], "image_grid_thw": grids}


def token_logprobs(model, seq, mask, pv, thw, prompt_len):
    logits = model(input_ids=seq, attention_mask=mask, pixel_values=pv, image_grid_thw=thw).logits
    logits = logits[:, prompt_len - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, seq[:, prompt_len:, None]).squeeze(-1)


def bench_grpo(args):
    from peft import LoraConfig, get_peft_model

    model, _ = load(args)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    cfg = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                     target_modules=r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)")
    model = get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    G, P = args.generations, args.prompts
    input_ids, mask, pv, thw, grids = inputs_for(args, rows(P))
    T = input_ids.shape[1]
    t0 = time.perf_counter()
    model.eval()
    with torch.no_grad():
        seq = model.generate(input_ids=input_ids, attention_mask=mask, pixel_values=pv, image_grid_thw=thw,
                             max_new_tokens=args.max_new, do_sample=True, temperature=1.0, top_p=1.0,
                             num_return_sequences=G, use_cache=True)
    gen_s = time.perf_counter() - t0
    full_mask = torch.cat([mask.repeat_interleave(G, 0), torch.ones(seq.shape[0], seq.shape[1] - T, dtype=mask.dtype)], 1)
    pv_rep = torch.cat([pv[int(thw[:i].prod(-1).sum()):int(thw[:i + 1].prod(-1).sum())].repeat(G, 1) for i in range(P)])
    thw_rep = thw.repeat_interleave(G, 0)
    rewards = torch.tensor([float(hash(tuple(s.tolist())) % 997) / 997 for s in seq])
    grouped = rewards.view(P, G)
    adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1, 1)
    t1 = time.perf_counter()
    with torch.no_grad(), model.disable_adapter():
        ref = token_logprobs(model, seq, full_mask, pv_rep, thw_rep, T)
    ref_s = time.perf_counter() - t1
    model.train()
    t2 = time.perf_counter()
    # One micro-batch per prompt (its G completions), gradients accumulated, then one AdamW step.
    for i in range(P):
        sl = slice(i * G, (i + 1) * G)
        lp = token_logprobs(model, seq[sl], full_mask[sl], pv_rep[int(thw_rep[:i * G].prod(-1).sum()):int(thw_rep[:(i + 1) * G].prod(-1).sum())], thw_rep[sl], T)
        ratio = torch.exp(lp - lp.detach())
        kl = torch.exp(ref[sl] - lp) - (ref[sl] - lp) - 1
        loss = (-(torch.min(ratio * adv[sl], torch.clamp(ratio, 0.8, 1.2) * adv[sl])) + 0.04 * kl).mean() / P
        loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad()
    update_s = time.perf_counter() - t2
    return {"seconds": time.perf_counter() - t0, "generation_s": gen_s, "logprob_s": ref_s, "update_s": update_s,
            "completions": P * G, "generated_tokens": int(seq.shape[1] - T) * P * G}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--workload", default="load", choices=["load", "generate", "grpo"])
    p.add_argument("--pixels", default=str(448 * 448))
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--generations", type=int, default=4)
    p.add_argument("--max-new", type=int, default=64)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    args = p.parse_args()
    torch.manual_seed(0)
    t0 = time.perf_counter()
    res = {"load": bench_load, "generate": bench_generate, "grpo": bench_grpo}[args.workload](args)
    import transformers
    print("RESULT " + json.dumps({"workload": args.workload, "torch": torch.__version__,
                                  "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                                  "dtype": args.dtype, **res, "wall_s": time.perf_counter() - t0,
                                  "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
