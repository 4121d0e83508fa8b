"""The per-fit trainer, old against new, in one process: `cytoops/fitter.py` as it is against the same file
at a git revision, on the same units of the demo plate, on one TensorFlow thread (as a grid worker).

    python benchmarks/fitter_speed.py [--baseline HEAD~1] [--data data] [--tasks 1] [--rounds 3]
                                      [--out benchmarks/fitter_speed.json]

Per CNN architecture: the units of its first `--tasks` tasks (folds x augmentations, as `train.run_task` makes
them), each fitted by both trainers after a 1-epoch warm-up of each (tracing is not timed). Unit by unit the
two take turns (which goes first alternates), `--rounds` times, so that both meet the same load on a shared
machine. Per side: mean seconds of a round, useful GFLOP/s and its share of the same thread's fp32 matmul rate
(`trainers.py`; the median of the rates measured before each round); between the two:
whether every unit's history, best epoch and test probabilities are bit-for-bit the same, how many units
stopped at the same epochs, and the largest and mean probability difference; and, for scale, the same
differences between the new trainer and itself with unit seeds from another base seed (seed noise).
Writes one JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import probe  # noqa: E402 - benchmarks/ itself, put on the path above
import trainers  # noqa: E402


def log(message: str) -> None:
    print(f"[fitter_speed {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fitter_at(revision: str):
    """The Fitter class of cytoops/fitter.py at a git revision, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{revision}:cytoops/fitter.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="fitter-")) / "fitter_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("fitter_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fitter_baseline"] = module
    spec.loader.exec_module(module)
    return module.Fitter


def race(sides: dict, arch: str, units: list, seed_base: int) -> tuple[dict, dict]:
    """Every unit fitted and scored by each side in turn (which goes first alternates unit by unit, so that
    both meet the same load): ({side: seconds}, {side: [(history, best epoch, test probabilities)]})."""
    seconds = {side: 0.0 for side in sides}
    out: dict[str, list] = {side: [] for side in sides}
    for k, (unit, a) in enumerate(units):
        for side in list(sides)[:: 1 if k % 2 == 0 else -1]:
            fitter, t0 = sides[side], time.perf_counter()
            model, history, best = fitter.fit(arch, a.x_fit, a.y_fit, a.x_val, a.y_val, unit.seed(seed_base))
            out[side].append((history, best, fitter.probability(model, a.x_test)))
            seconds[side] += time.perf_counter() - t0
    return seconds, out


def differences(a: list, b: list) -> dict:
    """Between two runs of the same units: units stopped at the same epochs, probability differences."""
    d = np.concatenate([np.abs(pa - pb) for (_, _, pa), (_, _, pb) in zip(a, b, strict=True)])
    same_epochs = sum(
        ba == bb and len(ha["loss"]) == len(hb["loss"]) for (ha, ba, _), (hb, bb, _) in zip(a, b, strict=True)
    )
    return {
        "same_epochs": same_epochs,
        "max_abs_prob_difference": float(d.max()),
        "mean_abs_prob_difference": float(d.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="HEAD~1", help="git revision of the old cytoops/fitter.py")
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--architectures", nargs="+", default=["wide_cnn", "deep_cnn"])
    parser.add_argument("--tasks", type=int, default=1, help="tasks (cytokines) per architecture")
    parser.add_argument("--rounds", type=int, default=3, help="old/new alternations; the fastest counts")
    parser.add_argument("--out", type=Path, default=HERE / "fitter_speed.json")
    args = parser.parse_args(argv)

    from cytoops import augment, backends, train, wrangle

    backends.one_thread()
    from cytoops import params as params_mod
    from cytoops.fitter import Fitter

    load_start = os.getloadavg()
    Old = fitter_at(args.baseline)
    p = params_mod.load(args.params, [f"train.architectures=[{','.join(args.architectures)}]"])
    with tempfile.TemporaryDirectory(prefix="fitter-speed-") as tmp:
        w = wrangle.run(args.data, Path(tmp) / "wrangle", p.wrangle)
    inputs = train.Inputs(
        wells=w.wells,
        labels=w.labels,
        kept=wrangle.kept_cytokines(w.cytokines),
        bank=augment.make_bank(w.images, p.augment.strategies),
        channels=w.channels,
        vit=None,
        strategies=p.augment.strategies,
    )
    tasks = train.plan(inputs, p.train)[0]
    source = train.cnn_view_bank(inputs, p.train.cnn_channels)
    matmuls = [probe.matmul_gflops()]  # and before each round: their median counts
    rows = {}
    with probe.LoadSampler() as load:
        for arch in args.architectures:
            units = [
                u
                for t in [t for t in tasks if t.architecture == arch][: args.tasks]
                for u in trainers.task_units(t, source, inputs.bank.views, inputs.strategies, p.train)
            ]
            sides = {"old": Old(p.train), "new": Fitter(p.train)}
            first = units[0][1]
            for fitter in sides.values():  # trace and warm up each, untimed
                model, _, _ = fitter.fit(
                    arch, first.x_fit, first.y_fit, first.x_val, first.y_val, 0, epochs=1
                )
            forward = trainers.forward_flops(model)
            seconds = {side: [] for side in sides}
            for r in range(args.rounds):
                matmuls.append(probe.matmul_gflops())
                took, results = race(sides, arch, units, p.train.seed)
                for side in sides:
                    seconds[side].append(took[side])
                log(f"{arch} round {r + 1}: old {took['old']:.1f} s, new {took['new']:.1f} s")
            flops = {
                side: sum(
                    trainers.unit_flops(forward, a, len(h["loss"]))
                    for (_, a), (h, _, _) in zip(units, results[side], strict=True)
                )
                for side in sides
            }
            matmul = float(np.median(matmuls))
            same = all(
                ho == hn and bo == bn and np.array_equal(po, pn)
                for (ho, bo, po), (hn, bn, pn) in zip(results["old"], results["new"], strict=True)
            )
            _, noise = race({"new": sides["new"]}, arch, units, p.train.seed + 1)
            compare = {"old_vs_new": results["old"], "new_other_seed_vs_new": noise["new"]}
            mean = {side: float(np.mean(s)) for side, s in seconds.items()}
            rows[arch] = {
                "units": len(units),
                "image_epochs": sum(
                    len(a.x_fit) * len(h["loss"])
                    for (_, a), (h, _, _) in zip(units, results["new"], strict=True)
                ),
                "seconds": seconds,
                "speedup": mean["old"] / mean["new"],
                "fraction_of_matmul": {side: flops[side] / mean[side] / 1e9 / matmul for side in sides},
                "bit_identical": same,
                **{name: differences(a, results["new"]) for name, a in compare.items()},
            }
            share = {k: round(v, 3) for k, v in rows[arch]["fraction_of_matmul"].items()}
            log(f"{arch}: {rows[arch]['speedup']:.2f}x, identical: {same}, share of matmul {share}")
    result = {
        "what": "cytoops/fitter.py against its version at `baseline`, same units and process, one TensorFlow "
        "thread, units fitted by each in turn; seconds of every round, speed-up and share of fp32 matmul on "
        "the mean round",
        "baseline": args.baseline,
        "baseline_commit": subprocess.run(
            ["git", "rev-parse", args.baseline], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "cpu_model": probe.cpu_model(),
        "load_average_at_start": [round(v, 2) for v in load_start],
        "load_during_run": load.summary(),
        "matmul_gflops_fp32_one_thread": float(np.median(matmuls)),
        "matmul_gflops_fp32_samples": matmuls,
        "by_architecture": rows,
    }
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    log(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
