"""`make demo` before and after in one sitting (benchmarks/demo_sitting.json): two finished clones, each run
by benchmarks/stamped_demo.sh at the same time, compared by stage time, train worker-seconds, calls, scores.

    python benchmarks/demo_sitting.py --before A --before-log a.log --after B --after-log b.log \
        --revisions f2b8414 e43868e --machine "2 cores, ..." > summary.json

Prints the measured part; benchmarks/demo_sitting.json adds the words around it (why scores moved, targets).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd

UNIT = ["architecture", "augmentation", "cytokine", "repeat", "fold"]


def stages(log: Path) -> dict:
    """Seconds per DVC stage: the gaps between its 'Running stage' lines, then the stamper's total."""
    lines = log.read_text(encoding="utf-8").splitlines()
    marks = [
        (float(m.group(1)), m.group(2))
        for line in lines
        if (m := re.match(r"(\d+\.\d+) Running stage '(\w+)'", line))
    ]
    total = next(line for line in lines if line.startswith("TOTAL_SECONDS")).split()
    start, end = float(total[5]), float(total[7])
    out, (name, since) = {}, ("dvc pull + validate", start)
    for at, stage in marks:
        out[name], (name, since) = round(at - since, 1), (stage, at)
    out[name + " (+ summary, ui-url)"] = round(end - since, 1)
    return {"total_s": round(end - start, 1), "rc": int(total[3]), "stages_s": out}


def worker_seconds(clone: Path) -> dict:
    fits = pd.read_csv(clone / "work/train/fits.csv").groupby("architecture").seconds.agg(["size", "sum"])
    return {
        a: {"fits": int(r["size"]), "worker_seconds": round(float(r["sum"]), 1)} for a, r in fits.iterrows()
    }


def scores_moved(before: Path, after: Path) -> dict:
    scores = pd.read_csv(before / "reports/scores.csv").merge(
        pd.read_csv(after / "reports/scores.csv"), on=UNIT, suffixes=("_b", "_a")
    )
    fits = pd.read_csv(before / "work/train/fits.csv").merge(
        pd.read_csv(after / "work/train/fits.csv"), on=UNIT, suffixes=("_b", "_a")
    )
    out = {}
    for arch, g in scores.groupby("architecture"):
        auc, f1 = (g.roc_auc_a - g.roc_auc_b).abs(), (g.f1_a - g.f1_b).abs()
        epochs = fits[fits.architecture == arch]
        out[arch] = {
            "fold_units": len(g),
            "units_whose_auc_moved": int((auc > 1e-6).sum()),
            "mean_abs_auc_diff": round(float(auc.mean()), 4),
            "max_abs_auc_diff": round(float(auc.max()), 3),
            "mean_abs_f1_diff": round(float(f1.mean()), 4),
            "units_with_another_best_epoch": None
            if arch == "profile"
            else int((epochs.best_epoch_b != epochs.best_epoch_a).sum()),
        }
    return out


def called(clone: Path) -> pd.Series:
    table = pd.read_csv(clone / "reports/predictable.csv")
    return table[table.predictable].set_index("cytokine").best_predictor.sort_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("before", "after"):
        parser.add_argument(
            f"--{side}", type=Path, required=True, help=f"the {side} clone, its make demo done"
        )
        parser.add_argument(f"--{side}-log", type=Path, required=True, help="its stamped_demo.sh log")
    parser.add_argument("--revisions", nargs=2, required=True, metavar=("BEFORE", "AFTER"))
    parser.add_argument("--machine", required=True, help="the machine and what else ran beside the demos")
    a = parser.parse_args()
    before, after = stages(a.before_log), stages(a.after_log)
    b_calls, a_calls = called(a.before), called(a.after)
    prob = pd.read_csv(a.before / "work/train/predictions.csv").merge(
        pd.read_csv(a.after / "work/train/predictions.csv"), on=[*UNIT, "well_index"], suffixes=("_b", "_a")
    )
    out = {
        "revisions": dict(zip(("before", "after"), a.revisions, strict=True)),
        "machine": a.machine,
        "before": before,
        "after": after,
        "after_over_before": round(after["total_s"] / before["total_s"], 3),
        "stage_ratio_after_over_before": {
            k: round(v / before["stages_s"][k], 2)
            for k, v in after["stages_s"].items()
            if before["stages_s"].get(k)
        },
        "train_worker_seconds_by_architecture": {
            "before": worker_seconds(a.before),
            "after": worker_seconds(a.after),
        },
        "predictable": {
            "before": list(b_calls.index),
            "after": list(a_calls.index),
            "same": b_calls.index.equals(a_calls.index),
        },
        "best_predictor_same_for_called": bool(b_calls.equals(a_calls)),
        "predictions": {
            "matched": len(prob),
            "max_abs_prob_diff_by_architecture": prob.assign(d=(prob.prob_b - prob.prob_a).abs())
            .groupby("architecture")
            .d.max()
            .round(9)
            .to_dict(),
        },
        "scores_after_vs_before": scores_moved(a.before, a.after),
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
