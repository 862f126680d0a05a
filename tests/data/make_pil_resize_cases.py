"""Regenerates tests/data/pil_resize_cases.json: PIL's Image.resize (BICUBIC / BILINEAR, reducing_gap=None,
as Hugging Face's Qwen2VLImageProcessor calls it) on small pseudo-random images that the JS test rebuilds
from the same generator. Test-data tool only (Pillow from the local wheel store); never run by the tests.

    python3 tests/data/make_pil_resize_cases.py
"""
import base64, json, pathlib
import numpy as np
from PIL import Image


def pseudo_image(h, w, c, seed):
    # x_{k+1} = (1103515245 x_k + 12345) mod 2^31, value = x >> 16 & 255 (mirrored in the JS test)
    x, out = seed, []
    for _ in range(h * w * c):
        x = (1103515245 * x + 12345) % 2**31
        out.append((x >> 16) & 255)
    return np.array(out, dtype=np.uint8).reshape(h, w, c) if c > 1 else np.array(out, dtype=np.uint8).reshape(h, w)


cases = []
for (h, w, c, oh, ow, resample, seed) in [
    (100, 70, 3, 84, 56, 3, 1),   # shrink both sides (antialiased filter)
    (30, 40, 3, 56, 84, 3, 2),    # enlarge
    (57, 90, 3, 57, 56, 3, 3),    # width only
    (45, 31, 1, 28, 28, 3, 4),    # grey
    (64, 50, 3, 28, 56, 2, 5),    # bilinear, mixed
]:
    arr = pseudo_image(h, w, c, seed)
    img = Image.fromarray(arr, mode="RGB" if c == 3 else "L")
    out = np.asarray(img.resize((ow, oh), resample=resample, reducing_gap=None), dtype=np.uint8)
    cases.append({"height": h, "width": w, "channels": c, "out_height": oh, "out_width": ow,
                  "resample": resample, "seed": seed,
                  "expected_b64": base64.b64encode(out.tobytes()).decode()})
path = pathlib.Path(__file__).with_name("pil_resize_cases.json")
path.write_text(json.dumps({"about": "PIL " + Image.__version__ + " Image.resize outputs (HWC uint8, base64)",
                            "cases": cases}, indent=1) + "\n")
print("wrote", path)
