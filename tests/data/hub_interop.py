"""Interoperability of medthink's Hub cache with huggingface_hub (the Python client), outside the product.

Run by tests/hub_interop_test.ts against the loopback Hub of tests/_hub_server.ts; prints one JSON object.

  find     HF_HUB_OFFLINE=1: where huggingface_hub finds a snapshot (that medthink downloaded)
  download HF_ENDPOINT=<server>: huggingface_hub downloads a snapshot (that medthink then loads)

Usage: python3 hub_interop.py find|download --cache DIR --repo ORG/NAME [--revision REV]
       [--file PATH ...] [--allow PATTERN ...]
"""
import argparse
import json
import os
import sys


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["find", "download"])
    p.add_argument("--cache", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--revision", default="main")
    p.add_argument("--file", action="append", default=[])
    p.add_argument("--allow", action="append", default=None)
    a = p.parse_args()
    if a.mode == "find":
        os.environ["HF_HUB_OFFLINE"] = "1"  # before the import: huggingface_hub reads it once
    os.environ["HF_HUB_DISABLE_XET"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import huggingface_hub
    from huggingface_hub import hf_hub_download, snapshot_download, try_to_load_from_cache

    # HF_HUB_OFFLINE alone does not stop huggingface_hub 2.0's snapshot_download from listing the tree of a
    # commit hash: local_files_only says "cache only" to every version.
    local = a.mode == "find"
    out = {"version": huggingface_hub.__version__}
    out["snapshot"] = snapshot_download(
        a.repo, revision=a.revision, cache_dir=a.cache, allow_patterns=a.allow, local_files_only=local
    )
    out["files"] = {
        f: hf_hub_download(a.repo, f, revision=a.revision, cache_dir=a.cache, local_files_only=local) for f in a.file
    }
    if a.mode == "find":
        out["cached"] = {f: try_to_load_from_cache(a.repo, f, cache_dir=a.cache, revision=a.revision) for f in a.file}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
