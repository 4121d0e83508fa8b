"""The full demo grid on a GPU: grid seconds, GPU utilization, batched vs one-at-a-time training.

    make EXTRA=gpu venv                      # TensorFlow with CUDA
    .venv/bin/python benchmarks/gpu.py [--data data] [--out benchmarks/gpu_results.json]
                                       [--batched-tasks 31] [--loop-cytokines 0] [--ray]

One prepared run, in this order (each grid in its own process, so each is timed from a cold start):

1. the demo plate (`dvc pull data.dvc` when `--data` is missing), wrangle, augment and the ViT features
   (the `features` stage, on the GPU), timed;
2. the grid with `train.batched: true` (`train.batched_tasks` tasks of one architecture per stacked fit;
   default 31, every cytokine of one architecture at once), one process;
3. the grid one unit at a time (`train.batched: false`), one process: all kept cytokines, or only the first
   `--loop-cytokines` of them, its time then scaled to the whole grid by fits (said in the JSON);
4. with `--ray`: the batched grid again under `train.backend: ray` on a local runtime (tasks share the GPU,
   `train.ray_gpus_per_task` each).

While each grid runs, `nvidia-smi` samples GPU utilization and memory every 0.5 s. The JSON has, per run:
wall seconds, fits, failures, GPU utilization (mean, median, max), memory (max), and the batched run's
largest probability difference from the one-at-a-time run on the units both ran. The target: the whole grid
(1,550 fits on the demo plate) in under a minute on one large GPU.

Exits with a clear message (and writes nothing) when TensorFlow sees no GPU or nvidia-smi is missing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def log(message: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class GpuSampler:
    """`nvidia-smi` utilization (%) and memory used (MiB) of every GPU, every `every_ms`, in a thread."""

    def __init__(self, every_ms: int = 500):
        self.every_ms = every_ms
        self.samples: list[tuple[float, float]] = []
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self):
        cmd = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            f"-lms={self.every_ms}",
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                util, mem = (float(v) for v in line.strip().split(","))
            except ValueError:
                continue
            self.samples.append((util, mem))

    def __exit__(self, *exc):
        self._proc.terminate()
        self._proc.wait(timeout=10)
        self._thread.join(timeout=10)

    def summary(self) -> dict:
        if not self.samples:
            return {"samples": 0}
        util = np.array([s[0] for s in self.samples])
        mem = np.array([s[1] for s in self.samples])
        return {
            "samples": len(util),
            "utilization_mean": float(util.mean()),
            "utilization_median": float(np.median(util)),
            "utilization_max": float(util.max()),
            "memory_used_max_mib": float(mem.max()),
        }


def phase_grid(workdir: Path, name: str, overrides: list[str], cytokines: list[str]) -> None:
    """One grid (`cross_validate`), in this process, on `cytokines` (all kept ones when empty); writes
    <name>.json and <name>_predictions.csv."""
    import dataclasses

    from cytoops import dataset, train
    from cytoops import params as params_mod

    p = params_mod.load(REPO / "params.yaml", overrides)
    vit = workdir / "features" / "vit.npz"
    inputs = dataset.load_inputs(workdir / "wrangle", workdir / "augment" / "views.npz", vit, p)
    if cytokines:
        inputs = dataclasses.replace(inputs, kept=tuple(c for c in inputs.kept if c in cytokines))
    t0 = time.perf_counter()
    result = train.cross_validate(inputs, p.train, progress=False)
    seconds = time.perf_counter() - t0
    result.predictions.to_csv(workdir / f"{name}_predictions.csv", index=False)
    out = {
        "train_seconds": seconds,
        "fits": len(result.fits),
        "failures": len(result.failures),
        "errors": sorted(set(result.failures.error.astype(str)))[:5],
        "kept_cytokines": len(inputs.kept),
        "overrides": overrides,
    }
    (workdir / f"{name}.json").write_text(json.dumps(out))


def run_grid(
    workdir: Path, name: str, overrides: list[str], timeout: float, cytokines: list[str] | None = None
) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--workdir", str(workdir)]
    cmd += [arg for o in overrides for arg in ("--set", o)]
    cmd += [arg for c in cytokines or [] for arg in ("--cytokine", c)]
    log(f"{name}: {' '.join(overrides)}")
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        run = subprocess.run(cmd, timeout=timeout)
        wall = time.perf_counter() - t0
    if run.returncode:
        return {"error": f"exit {run.returncode}", "wall_seconds": wall, "gpu": gpu.summary()}
    out = json.loads((workdir / f"{name}.json").read_text())
    out.update(wall_seconds=wall, gpu=gpu.summary())
    log(
        f"{name}: {out['fits']} fits in {out['train_seconds']:.1f} s (process {wall:.1f} s), "
        f"GPU mean {out['gpu'].get('utilization_mean', float('nan')):.0f}%"
    )
    return out


def max_difference(workdir: Path, a: str, b: str) -> float | None:
    import pandas as pd

    keys = ["architecture", "augmentation", "cytokine", "repeat", "fold", "well_index"]
    pa, pb = (workdir / f"{n}_predictions.csv" for n in (a, b))
    if not (pa.is_file() and pb.is_file()):
        return None
    both = pd.read_csv(pa).merge(pd.read_csv(pb), on=keys, suffixes=("_a", "_b"))
    return float((both.prob_a - both.prob_b).abs().max()) if len(both) else None


def gpu_name() -> str:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "gpu_results.json")
    parser.add_argument(
        "--batched-tasks", type=int, default=31, help="train.batched_tasks of the batched run"
    )
    parser.add_argument(
        "--loop-cytokines", type=int, default=0, help="one-at-a-time run on the first N cytokines (0: all)"
    )
    parser.add_argument("--ray", action="store_true", help="also the batched grid under train.backend=ray")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds allowed per grid")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--cytokine", dest="cytokines", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        phase_grid(args.workdir, args.phase, args.overrides, args.cytokines)
        return 0

    if shutil.which("nvidia-smi") is None:
        print("gpu.py: nvidia-smi not found: run this on a machine with an NVIDIA GPU", file=sys.stderr)
        return 2
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        print(
            "gpu.py: TensorFlow sees no GPU: install the gpu extra (make EXTRA=gpu venv) and check "
            "CUDA_VISIBLE_DEVICES",
            file=sys.stderr,
        )
        return 2
    from cytoops import augment, features, wrangle
    from cytoops import params as params_mod

    started = time.time()
    if not args.data.is_dir():
        subprocess.run(["dvc", "pull", "data.dvc"], cwd=REPO, check=True)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cytoops-gpu-"))
    p = params_mod.load(REPO / "params.yaml", [])
    t0 = time.perf_counter()
    w = wrangle.run(args.data, workdir / "wrangle", p.wrangle)
    bank = augment.make_bank(w.images, p.augment.strategies)
    augment.save(bank, workdir / "augment" / "views.npz")
    prep_s = time.perf_counter() - t0
    with GpuSampler() as gpu:
        t0 = time.perf_counter()
        features.save(features.compute(bank, p.features, progress=False), workdir / "features" / "vit.npz")
        features_s = time.perf_counter() - t0
    features_gpu = gpu.summary()
    log(f"prep {prep_s:.1f} s, features {features_s:.1f} s")

    kept = list(wrangle.kept_cytokines(w.cytokines))
    base = ["train.workers=1"]
    runs = {}
    runs["batched"] = run_grid(
        workdir,
        "batched",
        [*base, "train.batched=true", f"train.batched_tasks={args.batched_tasks}"],
        args.timeout,
    )
    loop_cytokines = kept[: args.loop_cytokines] if args.loop_cytokines else None
    runs["one_at_a_time"] = run_grid(
        workdir, "one_at_a_time", [*base, "train.batched=false"], args.timeout, loop_cytokines
    )
    if args.ray:
        runs["ray_batched"] = run_grid(
            workdir,
            "ray_batched",
            [
                "train.workers=4",
                "train.backend=ray",
                "train.batched=true",
                f"train.batched_tasks={max(1, args.batched_tasks // 4)}",
            ],
            args.timeout,
        )
    batched, loop = runs["batched"], runs["one_at_a_time"]
    grid_fits = batched.get("fits", 0) + batched.get("failures", 0)
    loop_fits = loop.get("fits", 0) + loop.get("failures", 0)
    loop_grid_s = loop["train_seconds"] * grid_fits / loop_fits if loop.get("fits") and grid_fits else None
    result = {
        "benchmark": "the full demo grid on one GPU: batched vs one-at-a-time training",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "gpu": gpu_name(),
        "tensorflow": tf.__version__,
        "prep_seconds": prep_s,
        "features_seconds": features_s,
        "features_gpu": features_gpu,
        "runs": runs,
        "grid_fits": grid_fits,
        "one_at_a_time_grid_seconds": loop_grid_s,
        "one_at_a_time_extrapolated": bool(args.loop_cytokines),
        "batched_grid_seconds": batched.get("train_seconds"),
        "batched_speedup": loop_grid_s / batched["train_seconds"]
        if loop_grid_s and batched.get("train_seconds")
        else None,
        "batched_vs_one_at_a_time_max_abs_prob_difference": max_difference(
            workdir, "batched", "one_at_a_time"
        ),
        "target_grid_under_60_s": (batched.get("train_seconds") or 1e9) + features_s < 60,
        "bench_wall_seconds": time.time() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    log(f"-> {args.out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
