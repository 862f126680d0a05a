"""Regenerates tests/data/vl_multi_image_cases.json: Hugging Face transformers (Qwen2_5_VLForConditionalGeneration,
float64, eager attention) on the qwen25vl-tiny fixture for a left-padded batch with SEVERAL images per row (the
fixture's golden.json has one per row). Pixel values come from a generator the JS test repeats. Test-data tool
only (torch + transformers from the local wheel store); never run by the tests.

    bench/.venv/bin/python tests/data/make_vl_multi_image_cases.py
"""
import base64, json, pathlib
import numpy as np
import torch
import transformers
from transformers import Qwen2_5_VLForConditionalGeneration

root = pathlib.Path(__file__).resolve().parents[2]  # the repository root
fixture = root / "tests/fixtures/qwen25vl-tiny"


def pixels(n_rows, seed):
    # x_{k+1} = (1103515245 x_k + 12345) mod 2^31; value = ((x >> 16) & 255) / 64 - 2 (exact in f32)
    x, out = seed, np.empty(n_rows * 1176)
    for i in range(out.size):
        x = (1103515245 * x + 12345) % 2**31
        out[i] = ((x >> 16) & 255) / 64 - 2
    return out.reshape(n_rows, 1176)


S, E, P = 300, 301, 303
grids = [[1, 6, 4], [1, 4, 10], [1, 8, 6]]  # row 0: two images; row 1: one image
tok = lambda g: g[0] * g[1] * g[2] // 4
row0 = [11, 12, S] + [P] * tok(grids[0]) + [E, 13, 14, S] + [P] * tok(grids[1]) + [E, 15, 16, 17]
row1 = [21, S] + [P] * tok(grids[2]) + [E, 22, 23]
T = max(len(row0), len(row1))
ids = [[0] * (T - len(r)) + r for r in (row0, row1)]
mask = [[0] * (T - len(r)) + [1] * len(r) for r in (row0, row1)]
pv = np.concatenate([pixels(g[0] * g[1] * g[2], 100 + k) for k, g in enumerate(grids)])

model = Qwen2_5_VLForConditionalGeneration.from_pretrained(fixture, dtype=torch.float64, attn_implementation="eager")
model.eval()
# transformers 5.x builds 3-D positions only with the processor's mm_token_type_ids (1 = image token).
inp = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), pixel_values=torch.tensor(pv),
           image_grid_thw=torch.tensor(grids), mm_token_type_ids=(torch.tensor(ids) == P).int())
with torch.no_grad():
    pos, deltas = model.model.get_rope_index(inp["input_ids"], inp["mm_token_type_ids"], inp["image_grid_thw"],
                                             attention_mask=inp["attention_mask"])
    # HF's float64 eager attention turns a left-padded row into NaN; each row's real tokens are computed
    # alone, unpadded, with its own images (what the padded batch must reproduce where mask = 1).
    logits = torch.zeros(2, T, model.config.vocab_size if hasattr(model.config, "vocab_size") else 400, dtype=torch.float64)
    gen_rows, first = [], 0
    for b, (row, n_img) in enumerate([(row0, 2), (row1, 1)]):
        g = grids[first:first + n_img]
        n_pix = sum(t * h * w for t, h, w in g)
        start = sum(t * h * w for t, h, w in grids[:first])
        one = dict(input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long),
                   pixel_values=torch.tensor(pv[start:start + n_pix]), image_grid_thw=torch.tensor(g),
                   mm_token_type_ids=(torch.tensor([row]) == P).int())
        logits[b, T - len(row):] = model(**one).logits[0]
        gen_rows.append(model.generate(**one, max_new_tokens=3, do_sample=False)[0, len(row):].tolist())
        first += n_img
    embeds = model.model.get_image_features(inp["pixel_values"], inp["image_grid_thw"])
    embeds = torch.cat(list(embeds.pooler_output if hasattr(embeds, "pooler_output") else embeds), 0) if isinstance(embeds, (tuple, list)) or hasattr(embeds, "pooler_output") else embeds
f32 = lambda a: base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()
out = {
    "about": f"transformers {transformers.__version__}, torch {torch.__version__}, float64, eager",
    "input_ids": ids, "attention_mask": mask, "image_grid_thw": grids, "pixel_seeds": [100, 101, 102],
    "position_ids": pos.tolist(), "rope_deltas": deltas.tolist(),
    "image_embeds_f32_b64": f32(embeds.numpy()), "image_embeds_shape": list(embeds.shape),
    "logits_f32_b64": f32(logits.numpy()), "logits_shape": list(logits.shape),
    "greedy_new_tokens": gen_rows,
}
path = pathlib.Path(__file__).with_name("vl_multi_image_cases.json")
path.write_text(json.dumps(out) + "\n")
print("wrote", path, "T", T, "embeds", list(embeds.shape), "deltas", deltas.tolist(), "gen", gen_rows)
