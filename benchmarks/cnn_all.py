"""Does the study's CNN close the gap to the profile when it trains on every labelled well? (issue 18, item 3)

Summarizes one or more finished `cytoops run --no-track` folders on a simulated plate: per morphology-driven
cytokine (its truth.json), the verdict's mean ROC AUC over folds (reports/verdict/predictors.csv) of wide_cnn
under each augmentation, cnn_all and profile, their means, a Wilcoxon signed-rank test of cnn_all against
wide_cnn under the same augmentation, the fits that collapsed to one constant probability (every test well
the same: a fold AUC of 0.5), and the seconds per fit (train/fits.csv).

Usage (the runs themselves are `cytoops run`, see docs/statistics.md; name each with label=folder):
    python benchmarks/cnn_all.py --data /tmp/ft/data --run lr1e-3=/tmp/ft/out --out benchmarks/cnn_all.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd
from scipy import stats

SHOWN = ("wide_cnn", "cnn_all", "profile", "cell_count")  # the families compared (cell count: for scale)


def summarize(out: Path, morphology: list[str]) -> dict:
    pred = pd.read_csv(out / "reports" / "verdict" / "predictors.csv")
    pred = pred[pred.cytokine.isin(morphology) & pred.architecture.isin(SHOWN)]
    auc = pred.pivot_table(index="cytokine", columns=["architecture", "augmentation"], values="roc_auc")
    auc.columns = [f"{a}/{g}" for a, g in auc.columns]
    summary: dict = {
        "per_cytokine": auc.round(3).to_dict(orient="index"),
        "mean": auc.mean().round(3).to_dict(),
    }
    all_wells = [c for c in auc.columns if c.startswith("cnn_all/")]
    if all_wells:
        (mine,) = all_wells
        same = f"wide_cnn/{mine.split('/')[1]}"
        if same in auc.columns:
            diff = auc[mine] - auc[same]
            test = stats.wilcoxon(auc[mine], auc[same])
            summary[f"{mine} - {same}"] = {
                "mean": round(float(diff.mean()), 3),
                "higher_on": int((diff > 0).sum()),
                "of": len(diff),
                "wilcoxon_p": round(float(test.pvalue), 4),
            }
    probs = pd.read_csv(out / "train" / "predictions.csv")
    sd = probs.groupby(["architecture", "augmentation", "cytokine", "fold"]).prob.std()
    collapsed = (sd < 1e-6).groupby(level=["architecture", "augmentation"]).agg(["sum", "size"])
    constant = {f"{a}/{g}": f"{r['sum']} of {r['size']}" for (a, g), r in collapsed.iterrows()}
    fits = pd.read_csv(out / "train" / "fits.csv")
    per_fit = fits.groupby(["architecture", "augmentation"])[
        ["n_train", "n_train_images", "n_val", "best_epoch", "epochs_run", "seconds"]
    ].mean()
    summary["all_kept_cytokines"] = {
        "constant_fits": constant,
        "mean_per_fit": {f"{a}/{g}": r.dropna().round(1).to_dict() for (a, g), r in per_fit.iterrows()},
    }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the simulated plates (truth.json)")
    parser.add_argument("--run", action="append", required=True, help="label=folder of a finished run")
    parser.add_argument("--command", action="append", default=[], help="the command of each run, in order")
    parser.add_argument("--note", default="", help="the machine and its load while the runs ran")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    truth = {}
    for path in sorted(args.data.glob("*/truth.json")):
        truth |= json.loads(path.read_text(encoding="utf-8"))["cytokines"]
    morphology = sorted(c for c, t in truth.items() if t["cause"] == "morphology")
    runs = {}
    for i, item in enumerate(args.run):
        label, _, folder = item.partition("=")
        runs[label] = {
            "command": args.command[i] if i < len(args.command) else None,
            **summarize(Path(folder), morphology),
        }
    result = {
        "question": "does wide_cnn trained on every labelled well, class-weighted (cnn_all), close the gap "
        "to the profile on the morphology-driven cytokines? (simulated demo plate, not the study's data)",
        "morphology_cytokines": {c: truth[c]["driver"] for c in morphology},
        "machine": {"cores": os.cpu_count(), "note": args.note},
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
