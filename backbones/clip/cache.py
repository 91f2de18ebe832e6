"""On-disk cache of the CLIP package: ``$LLMSIGHT_CACHE/<kind>`` (default ``~/.cache/llmsight/<kind>``)."""
from __future__ import annotations

import os


def cache_root() -> str:
    return os.environ.get("LLMSIGHT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llmsight")


def cache_dir(kind: str) -> str:
    path = os.path.join(cache_root(), kind)
    os.makedirs(path, exist_ok=True)
    return path
