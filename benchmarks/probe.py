"""What the benchmarks measure of the machine itself: CPU, memory, load, process memory, fp32 matmul rate.

Shared by `bench.py` and `fitter_speed.py`; nothing here knows about cytoops.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import threading
import time
from pathlib import Path

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value and not value.isdigit():
                    return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_isa() -> list[str]:
    """The CPU's vector and matrix extensions that decide TensorFlow's CPU kernels (oneDNN on by default from
    AVX-512 VNNI on) and how fast they run: the ones in ISA that /proc/cpuinfo lists."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                return [f for f in ISA if f in flags]
    except OSError:
        pass
    return []


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def cores_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LoadSampler:
    """The 1-minute load average every few seconds while a benchmark runs (the machine may be shared)."""

    def __init__(self, every: float = 5.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {
            "mean_1min": round(float(np.mean(s)), 2),
            "max_1min": round(float(np.max(s)), 2),
            "samples": len(s),
        }


def rusage_mb() -> dict[str, float]:
    """Peak resident memory (ru_maxrss, KiB on Linux) of this process and of its largest finished child."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self": round(self_kb / 1024, 1), "children": round(child_kb / 1024, 1)}


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants now (MiB), from /proc."""
    parent, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parent[int(entry.name)] = int(fields.get("PPid", "0").strip() or 0)
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, pp in parent.items() if pp in frontier and pid not in tree]
        tree.update(frontier)
    return sum(rss.get(pid, 0) for pid in tree) / 1024


def run_sampled(cmd: list[str], env: dict) -> tuple[float, float | None]:
    """Run a command: (wall seconds, peak summed RSS of its process tree, sampled every 0.5 s).
    CalledProcessError when it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = None
    while proc.poll() is None:
        if Path("/proc").is_dir():
            try:
                peak = max(peak or 0.0, tree_rss_mb(proc.pid))
            except (OSError, ValueError):
                pass
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - t0, peak


def matmul_gflops(n: int = 1024, seconds: float = 2.0) -> float:
    """The machine's fp32 matrix-multiply throughput in this process (TensorFlow, its thread setting)."""
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    mm = tf.function(lambda a, b: tf.matmul(a, b))
    mm(a, b).numpy()  # trace, warm up
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mm(a, b).numpy()
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9
