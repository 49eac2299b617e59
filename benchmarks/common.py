"""What every benchmark module shares: the repository root, the thread count, the summary of repetitions."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
THREADS = 2


def summary(values: list[float], **extra) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "reps": len(values),
            "values": values, **extra}


def gpu_args(tool: str):
    """``--out FILE`` parsed, or None (after saying so on stderr) where there is no CUDA device: nothing to measure."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(prog=tool)
    ap.add_argument("--out")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(f"{tool}: no CUDA device here (torch.cuda.is_available() is False); nothing to measure", file=sys.stderr)
        return None
    return args
