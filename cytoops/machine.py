"""machine: what this machine offers the stages that spread their work over it: CPU cores, an NVIDIA GPU.

Decided without importing TensorFlow: a coordinating process need not pay its ~750 MB to count cores.
"""

from __future__ import annotations

import os
from pathlib import Path


def cores() -> int:
    """The CPU cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def has_nvidia_gpu() -> bool:
    """An NVIDIA device is present and CUDA_VISIBLE_DEVICES does not hide it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1")
    return visible and any(Path("/dev").glob("nvidia[0-9]*"))
