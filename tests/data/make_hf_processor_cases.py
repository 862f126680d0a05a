"""Regenerates tests/data/hf_processor_cases.json: Hugging Face's Python Qwen2-VL image processor
(`Qwen2VLImageProcessorPil`, transformers 5.x, PIL backend) on VQA-RAD JPEGs from data/, with
the qwen25vl-tiny preprocessor config and a few max_pixels. Stores the grid and the SHA-256 of the float32
pixel_values (the JS processor must match it bit for bit). Test-data tool only; never run by the tests.

    python3 tests/data/make_hf_processor_cases.py    # needs transformers + Pillow + numpy (local wheel store)
"""
import hashlib, json, pathlib
import numpy as np
import transformers
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

root = pathlib.Path(__file__).resolve().parents[2]  # the repository root
cfg = json.loads((root / "tests/fixtures/qwen25vl-tiny/preprocessor_config.json").read_text())
kw = {k: v for k, v in cfg.items() if k not in ("image_processor_type", "processor_class")}
cases = []
for name, max_pixels in [("5e684d0681c86c3a", 12845056), ("5e684d0681c86c3a", 200704), ("01b886a578889eef", 200704),
                         ("020740e461577efa", 50176)]:
    rel = f"data/vqa_rad_closed/images/{name}.jpg"
    img = Image.open(root / rel)
    out = Qwen2VLImageProcessorPil(**{**kw, "max_pixels": max_pixels})(images=[img], return_tensors="np")
    pv = np.ascontiguousarray(out["pixel_values"], dtype=np.float32)
    cases.append({"image": rel, "max_pixels": max_pixels, "size": list(img.size), "mode": img.mode,
                  "grid_thw": out["image_grid_thw"].tolist()[0], "shape": list(pv.shape),
                  "sha256_f32": hashlib.sha256(pv.tobytes()).hexdigest(), "sum": float(pv.astype(np.float64).sum())})
path = pathlib.Path(__file__).with_name("hf_processor_cases.json")
path.write_text(json.dumps({"about": f"transformers {transformers.__version__} Qwen2VLImageProcessorPil outputs",
                            "cases": cases}, indent=1) + "\n")
print("wrote", path)
