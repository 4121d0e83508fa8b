"""transfer: how deployed models do on another experiment's labelled plate, beside the estimate they were
deployed on (the study's "test on data from another experiment before deploying").

Per cytokine, on the wells with a label: ROC AUC with a 95% percentile interval from a seeded bootstrap
(treatment groups resampled when the plate has a layout.csv, else wells: `verdict.metrics`' cluster
bootstrap), F1 and friends at the call cutoff, the Brier score and a reliability curve (`BINS` equal-width
bins of P(responder): the mean predicted probability against the fraction of responders), next to the
cross-validated ROC AUC of the registered version (its tags `cv_roc_auc`, `cv_roc_auc_lo`, `cv_roc_auc_hi`;
blank where absent). `table` and `reliability` are the core; `figure` draws both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytoops import evaluate
from cytoops.verdict.metrics import cluster_bootstrap_weights, weighted_metrics

LEVEL = 0.95
N_BOOT = 1000
BINS = 10
COLUMNS = [
    "cytokine", "model", "family", "n_wells", "n_responders", "roc_auc", "roc_auc_lo", "roc_auc_hi",
    *[m for m in evaluate.METRICS if m != "roc_auc"], "brier", "cv_roc_auc", "cv_roc_auc_lo", "cv_roc_auc_hi",
    "bootstrap", "n_boot",
]  # fmt: skip
CURVE = ["cytokine", "model", "bin_lo", "bin_hi", "n_wells", "mean_predicted", "fraction_responders"]


def auc_interval(label, prob, clusters, n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(ROC AUC, lower, upper) over the wells given: the interval is the `LEVEL` percentile interval of
    `n_boot` draws of the clusters (a well its own cluster: a bootstrap over wells); NaN with one class."""
    label = np.asarray(label).astype(int)
    prob = np.asarray(prob, dtype=float)
    point = float(weighted_metrics(label, prob, np.ones((1, len(label))))["roc_auc"][0])
    if np.isnan(point):
        return np.nan, np.nan, np.nan
    draws = weighted_metrics(label, prob, cluster_bootstrap_weights(clusters, n_boot, rng))["roc_auc"]
    q = 100 * (1 - LEVEL) / 2
    lo, hi = np.nanpercentile(draws, [q, 100 - q])  # a draw of one class has no AUC: left out
    return point, float(lo), float(hi)


def reliability(label, prob, bins: int = BINS) -> pd.DataFrame:
    """The reliability curve: per equal-width bin of P(responder) holding wells, their mean predicted
    probability and their fraction of responders."""
    label = np.asarray(label).astype(float)
    prob = np.asarray(prob, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    rows = [
        {
            "bin_lo": edges[b],
            "bin_hi": edges[b + 1],
            "n_wells": int((which == b).sum()),
            "mean_predicted": float(prob[which == b].mean()),
            "fraction_responders": float(label[which == b].mean()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
    return pd.DataFrame(rows, columns=CURVE[2:])


def table(
    scored: pd.DataFrame, deployed: pd.DataFrame, cutoff: float, seed: int, n_boot: int = N_BOOT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(transfer table, reliability curves) of `scored` (one row per plate, well and cytokine: cytokine,
    model, prob, label (NaN: none), cluster (the bootstrap's unit)) beside `deployed` (one row per cytokine:
    cytokine, family, cv_roc_auc, cv_roc_auc_lo, cv_roc_auc_hi)."""
    rows, curves = [], []
    info = deployed.set_index("cytokine")
    labelled = scored[scored.label.notna()]
    for i, ((cytokine, model), g) in enumerate(labelled.groupby(["cytokine", "model"], sort=True)):
        y, p = g.label.to_numpy().astype(int), g.prob.to_numpy(float)
        auc, lo, hi = auc_interval(y, p, g.cluster.to_numpy(), n_boot, np.random.default_rng([seed, i]))
        per_well = g.cluster.nunique() == len(g)
        cv = info.loc[cytokine] if cytokine in info.index else pd.Series(dtype=object)
        rows.append(
            {
                **evaluate.fold_scores(y, p, cutoff),
                "cytokine": cytokine,
                "model": model,
                "family": cv.get("family", ""),
                "n_wells": len(g),
                "n_responders": int(y.sum()),
                "roc_auc": auc,
                "roc_auc_lo": lo,
                "roc_auc_hi": hi,
                "brier": float(np.mean((p - y) ** 2)),
                **{k: cv.get(k, np.nan) for k in ("cv_roc_auc", "cv_roc_auc_lo", "cv_roc_auc_hi")},
                "bootstrap": "well" if per_well else "treatment",
                "n_boot": n_boot,
            }
        )
        curves.append(reliability(y, p).assign(cytokine=cytokine, model=model))
    curve = pd.concat(curves, ignore_index=True)[CURVE] if curves else pd.DataFrame(columns=CURVE)
    return pd.DataFrame(rows, columns=COLUMNS), curve


SHOWN_CURVES = 8  # reliability curves drawn at most: more cannot be told apart


def figure(transfer: pd.DataFrame, curves: pd.DataFrame, path: Path) -> Path:
    """ROC AUC on the new plate (95% interval) beside the cross-validated one per cytokine, best on this plate
    first; and the reliability curves (of the `SHOWN_CURVES` best, when there are more)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    transfer = transfer.sort_values("roc_auc", ascending=False, na_position="last")
    width = max(11.0, 6.0 + 0.32 * len(transfer))  # room for every cytokine's name
    fig, (left, right) = plt.subplots(1, 2, figsize=(width, 4.8), width_ratios=[max(1.0, width / 5.5 - 1), 1])
    k = np.arange(len(transfer))
    for offset, prefix, label in ((-0.12, "", "this plate"), (0.12, "cv_", "cross-validated (deployed on)")):
        mid = pd.to_numeric(transfer[f"{prefix}roc_auc"], errors="coerce").to_numpy(float)
        lo = pd.to_numeric(transfer[f"{prefix}roc_auc_lo"], errors="coerce").to_numpy(float)
        hi = pd.to_numeric(transfer[f"{prefix}roc_auc_hi"], errors="coerce").to_numpy(float)
        err = np.vstack([np.where(np.isnan(lo), 0, mid - lo), np.where(np.isnan(hi), 0, hi - mid)])
        left.errorbar(k + offset, mid, yerr=np.nan_to_num(err), fmt="o", capsize=3, label=label)
    left.axhline(0.5, color="grey", lw=0.8, ls=":")
    left.set_xticks(k, transfer.cytokine, rotation=60, ha="right", fontsize=8)
    left.set_xlim(-0.6, max(len(transfer), 1) - 0.4)
    left.set_ylim(0, 1.02)
    left.set_ylabel(f"ROC AUC ({LEVEL:.0%} interval)")
    left.set_title("ROC AUC on this plate vs cross-validated", fontsize=10)
    left.legend(fontsize=8)
    right.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    shown = list(transfer.cytokine[transfer.cytokine.isin(curves.cytokine)][:SHOWN_CURVES])
    for cytokine in shown:
        g = curves[curves.cytokine == cytokine]
        right.plot(g.mean_predicted, g.fraction_responders, "o-", ms=3, label=cytokine)
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_xlabel("mean P(responder) in the bin")
    right.set_ylabel("fraction of responders")
    more = curves.cytokine.nunique() > len(shown)
    right.set_title(
        "Reliability on this plate" + (f" ({len(shown)} best by ROC AUC)" if more else ""), fontsize=10
    )
    if shown:
        right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
