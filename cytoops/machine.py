"""machine: what this machine offers the stages that spread their work over it (CPU cores, an NVIDIA GPU), and
TensorFlow imported to make the most of its CPU (`import_tensorflow`).

Cores and GPU are decided without importing TensorFlow: a coordinating process need not pay its ~750 MB to
count cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cores() -> int:
    """The CPU cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def has_nvidia_gpu() -> bool:
    """An NVIDIA device is present and CUDA_VISIBLE_DEVICES does not hide it."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1")
    return visible and any(Path("/dev").glob("nvidia[0-9]*"))


ONEDNN = "TF_ENABLE_ONEDNN_OPTS"  # TensorFlow reads it once, when it is imported


def import_tensorflow() -> None:
    """Import TensorFlow as cytoops runs it: oneDNN's kernels on, start-up notices off the screen.

    oneDNN: TensorFlow turns its oneDNN kernels on by itself only on CPUs with neural-network instructions
    (AVX-512 VNNI and newer, say its release notes); on an AVX2 CPU (an AMD EPYC here) it runs Eigen's, and a
    deep CNN fit takes 1.4x as long (benchmarks/README.md, "oneDNN on every x86 CPU"). So
    TF_ENABLE_ONEDNN_OPTS=1 unless the environment already says (TF_ENABLE_ONEDNN_OPTS=0 to compare). It is
    set in this process' environment, so the processes it starts (the local backend's workers, a local Ray
    runtime) import TensorFlow the same way.

    Quiet: TensorFlow >= 2.18 writes its oneDNN notice through absl before it reads TF_CPP_MIN_LOG_LEVEL, so
    the variable alone cannot hide it; stderr is closed while it imports. An import error still surfaces
    (raised once stderr is back).
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault(ONEDNN, "1")
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
