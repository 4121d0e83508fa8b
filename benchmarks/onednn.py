"""TensorFlow's oneDNN kernels off and on (benchmarks/onednn.json): the same units fitted by `fitter.Fitter`
on one TensorFlow thread, as a grid worker fits them, in processes that differ only in TF_ENABLE_ONEDNN_OPTS.

    PYTHONPATH=. .venv/bin/python benchmarks/onednn.py --rounds 2 --out benchmarks/onednn.json

The demo plate is wrangled once; then, `--rounds` times, one process with oneDNN off and one with it on
(alternating, so that a change in the machine's load falls on both) time the first `--tasks` tasks of each
architecture (`trainers.measure`: its folds x augmentations). Per architecture: the fastest round of each,
the speed-up, each one's share of the same process' fp32 matmul rate, whether the units stop at the same
epochs, how far the test probabilities move, and whether two processes with the same setting agree to the bit
(the grid's numbers are reproducible).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import probe  # noqa: E402 - benchmarks/ itself, put on the path above
import trainers  # noqa: E402

FLAG = "TF_ENABLE_ONEDNN_OPTS"


def child(workdir: Path, out: Path, architectures: list[str], tasks: int) -> None:
    """One process: TensorFlow as a grid worker runs it (`backends.one_thread`), with its parent's flag."""
    from cytoops import augment, backends, dataset, wrangle
    from cytoops import params as params_mod

    backends.one_thread()
    from tensorflow.python.util import _pywrap_util_port

    p = params_mod.load(REPO / "params.yaml", [f"train.architectures=[{','.join(architectures)}]"])
    w = wrangle.load(workdir / "wrangle")
    inputs = dataset.Inputs(
        wells=w.wells,
        labels=w.labels,
        kept=wrangle.kept_cytokines(w.cytokines),
        bank=augment.load(workdir / "views.npz"),
        channels=w.channels,
        vit=None,
        strategies=p.augment.strategies,
    )
    outputs: dict = {}
    measured = trainers.measure(inputs, p.train, tasks, probe.matmul_gflops(), log=print, outputs=outputs)
    measured.update(
        onednn=bool(_pywrap_util_port.IsMklEnabled()),
        flag=os.environ.get(FLAG),
        peak_rss_mb=probe.rusage_mb()["self"],
        units=outputs,
    )
    out.write_text(json.dumps(measured))


def compare(a: dict, b: dict) -> dict:
    """Units of two runs: how many stop at the same epoch, and how far their test probabilities are apart."""
    same_epochs = sum(a[u]["epochs"] == b[u]["epochs"] for u in a)
    diff = [np.max(np.abs(np.subtract(a[u]["prob"], b[u]["prob"]))) for u in a]
    return {
        "units": len(a),
        "same_epochs": int(same_epochs),
        "identical": all(a[u] == b[u] for u in a),
        "prob_diff_max": float(np.max(diff)),
        "prob_diff_mean": float(np.mean(diff)),
    }


def architecture_row(arch: str, runs: dict[str, list[dict]]) -> dict:
    """One architecture: the fastest round with oneDNN off and on, and how their units compare."""

    def units(m: dict) -> dict:
        return {u: v for u, v in m["units"].items() if u.startswith(f"Unit(architecture='{arch}'")}

    off, on = (min(runs[f], key=lambda m: m["by_architecture"][arch]["seconds"]) for f in ("0", "1"))
    row = {
        "units": off["by_architecture"][arch]["units"],
        "seconds_off": off["by_architecture"][arch]["seconds"],
        "seconds_on": on["by_architecture"][arch]["seconds"],
        "fraction_of_matmul_off": off["by_architecture"][arch]["fraction_of_matmul"],
        "fraction_of_matmul_on": on["by_architecture"][arch]["fraction_of_matmul"],
        "off_vs_on": compare(units(runs["0"][0]), units(runs["1"][0])),
    }
    row["speedup"] = row["seconds_off"] / row["seconds_on"]
    if len(runs["0"]) > 1:  # two processes with the same flag: the same numbers to the bit?
        row["reproducible"] = {f: compare(units(runs[f][0]), units(runs[f][1]))["identical"] for f in runs}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--architectures", nargs="+", default=["wide_cnn", "deep_cnn"])
    parser.add_argument("--tasks", type=int, default=1, help="tasks (cytokines) per architecture")
    parser.add_argument("--rounds", type=int, default=2, help="off/on alternations; the fastest counts")
    parser.add_argument("--out", type=Path, default=HERE / "onednn.json")
    parser.add_argument("--child", type=Path, nargs=2, help=argparse.SUPPRESS)  # workdir, result file
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.architectures, args.tasks)
        return 0

    from cytoops import augment, wrangle
    from cytoops import params as params_mod

    p = params_mod.load(REPO / "params.yaml", [])
    workdir = Path(tempfile.mkdtemp(prefix="cytoops-onednn-"))
    w = wrangle.run(args.data, workdir / "wrangle", p.wrangle)
    augment.save(augment.make_bank(w.images, p.augment.strategies), workdir / "views.npz")
    runs: dict[str, list[dict]] = {"0": [], "1": []}
    with probe.LoadSampler() as load:
        for r in range(args.rounds):
            for flag in ("0", "1"):
                out = workdir / f"{flag}_{r}.json"
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    str(workdir),
                    str(out),
                    "--tasks",
                    str(args.tasks),
                ]
                cmd += ["--architectures", *args.architectures]
                env = {**os.environ, FLAG: flag, "TF_CPP_MIN_LOG_LEVEL": "2"}
                subprocess.run(cmd, env=env, check=True)
                runs[flag].append(json.loads(out.read_text()))
    by_arch = {arch: architecture_row(arch, runs) for arch in args.architectures}
    summary = {
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/onednn.py " + " ".join(argv or sys.argv[1:]),
        "what": "the first task(s) of each architecture (folds x augmentations) fitted unit after unit "
        "by fitter.Fitter on one TensorFlow thread, in processes with TF_ENABLE_ONEDNN_OPTS=0 and =1 "
        "alternating; the fastest round of each",
        "onednn_in_process": {f: [m["onednn"] for m in runs[f]] for f in runs},
        "peak_rss_mb": {f: [m["peak_rss_mb"] for m in runs[f]] for f in runs},
        "matmul_gflops_fp32_one_thread": {f: [m["matmul_gflops_fp32"] for m in runs[f]] for f in runs},
        "by_architecture": by_arch,
        "machine": {
            "cpu_model": probe.cpu_model(),
            "cpu_isa": probe.cpu_isa(),
            "cores": os.cpu_count(),
            "load_during_run": load.summary(),
        },
    }
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("by_architecture", "machine")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
