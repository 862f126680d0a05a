"""PyTorch side of bench/vision.ts: Hugging Face's Qwen2.5-VL vision tower (random init, float32, eager
mode, CPU) on one image's patches; prints one JSON line {"patches": N, "seconds": [...]}. Run by
bench/vision.ts from bench/.venv (see bench/setup.sh)."""
import argparse, json, os, time
import torch
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

ap = argparse.ArgumentParser()
ap.add_argument("--size", type=int, default=448)
ap.add_argument("--depth", type=int, default=32)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--threads", type=int, default=os.cpu_count())
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
full = [i for i in (7, 15, 23, 31) if i < a.depth] or [a.depth - 1]
cfg = Qwen2_5_VLVisionConfig(depth=a.depth, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                             fullatt_block_indexes=full, window_size=112, patch_size=14, spatial_merge_size=2,
                             temporal_patch_size=2, in_channels=3, hidden_act="silu")
cfg._attn_implementation = "sdpa"
model = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg, dtype=torch.float32).eval()
g = a.size // 14
grid = torch.tensor([[1, g, g]])
pv = torch.randn(g * g, 3 * 2 * 14 * 14)
secs = []
with torch.inference_mode():
    model(pv, grid_thw=grid)  # warm-up
    for _ in range(a.runs):
        t = time.perf_counter()
        model(pv, grid_thw=grid)
        secs.append(time.perf_counter() - t)
print(json.dumps({"patches": g * g, "seconds": secs, "threads": a.threads, "torch": torch.__version__}))
