"""Where a result came from: library versions, git commit, hardware."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, str]:
    """Versions and hardware, as flat ``env.*`` params."""
    import mlflow
    import ray
    import torch
    import transformers

    info = {"env.python": platform.python_version(), "env.torch": torch.__version__,
            "env.transformers": transformers.__version__, "env.ray": ray.__version__,
            "env.mlflow": mlflow.__version__, "env.git_commit": git_commit(), "env.host": platform.node(),
            "env.cpu": cpu_model(), "env.cpu_count": str(os.cpu_count()),
            "env.torch_threads": str(torch.get_num_threads())}
    if torch.cuda.is_available():
        info["env.gpu"] = torch.cuda.get_device_name(0)
        info["env.gpu_count"] = str(torch.cuda.device_count())
    else:
        info["env.gpu"] = "none"
    return info
