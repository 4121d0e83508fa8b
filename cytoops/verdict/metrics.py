"""verdict.metrics: per-fold scores of out-of-fold predictions and their cluster-bootstrap intervals.

Every model and baseline of a cytokine is scored on the same test wells (every labelled well of the fold),
with the same bootstrap draws (treatment groups resampled within each test fold), so differences between
any two of them are paired.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, matthews_corrcoef

from cytoops import evaluate
from cytoops.tables import FOLD, MODEL

METRICS = [
    "f1",
    "precision",
    "recall",
    "roc_auc",
    "balanced_accuracy",
    "average_precision",
    "mcc",
    "prevalence",
]
INTERVAL_METRICS = ["f1", "roc_auc", "average_precision", "mcc", "prevalence"]


def fold_metrics(label: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """`evaluate.fold_scores` plus AUPRC (average precision), MCC and the fold's prevalence."""
    label = np.asarray(label).astype(int)
    prob = np.asarray(prob, dtype=float)
    out = evaluate.fold_scores(label, prob)
    both = len(np.unique(label)) == 2
    out["average_precision"] = average_precision_score(label, prob) if both else np.nan
    out["mcc"] = matthews_corrcoef(label, (prob >= 0.5).astype(int)) if both else 0.0
    out["prevalence"] = float(label.mean()) if len(label) else np.nan
    return out


def score_predictions(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per (architecture, augmentation, cytokine, repeat, fold): every metric of `fold_metrics`.

    Computed by `weighted_metrics` with unit weights: the same numbers as `fold_metrics` (sklearn's, whose F1
    `evaluate.fold_scores` reproduces from the confusion counts; tested, and `check_scores` re-checks the
    reported rows at run time), ~100x faster.
    """
    keys = [*MODEL, *FOLD]
    rows = []
    for key, g in predictions.groupby(keys, sort=True):
        m = weighted_metrics(g.label.to_numpy(), g.prob.to_numpy(), np.ones((1, len(g))))
        rows.append({**dict(zip(keys, key, strict=True)), **{k: float(m[k][0]) for k in METRICS}})
    return pd.DataFrame(rows, columns=[*keys, *METRICS])


def check_scores(scores: pd.DataFrame, predictions: pd.DataFrame, pairs: pd.DataFrame) -> None:
    """Recompute the folds of the given (architecture, augmentation, cytokine) rows with `fold_metrics`
    (sklearn's AUC, AUPRC and MCC; F1 from `evaluate.fold_scores`' confusion counts) and fail loudly if any
    metric differs from `scores`."""
    keys = [*MODEL, *FOLD]
    want = scores.merge(pairs[[*MODEL, "cytokine"]].drop_duplicates(), on=[*MODEL, "cytokine"])
    index = predictions.set_index(keys).sort_index()
    for r in want.itertuples(index=False):
        g = index.loc[tuple(getattr(r, k) for k in keys)]
        ref = fold_metrics(g.label.to_numpy(), g.prob.to_numpy())
        for k in ("f1", "roc_auc", "average_precision", "mcc"):
            a, b = getattr(r, k), ref[k]
            if not (np.isnan(a) and np.isnan(b)) and abs(a - b) > 1e-9:
                raise RuntimeError(
                    f"verdict: {k} of {r.architecture}/{r.augmentation} {r.cytokine} fold "
                    f"{r.fold}: {a} here, {b} by evaluate.fold_scores/sklearn"
                )


def weighted_metrics(label: np.ndarray, prob: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The metrics of `fold_metrics` for B weightings of the same wells at once: weights (B, n) -> (B,) each.

    With integer weights this equals sklearn with `sample_weight` (tested); a bootstrap draw is a weighting.
    Every caller's weights are integers (ones, bootstrap counts): then each sum below is of multiples of 0.5
    far under 2**53, exact in float64 in any order, so BLAS's order gives the same bits as a plain loop.
    """
    y = np.asarray(label).astype(bool)
    prob = np.asarray(prob, dtype=float)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    call = prob >= 0.5
    tp, fp = w @ (y & call), w @ (~y & call)
    fn, tn = w @ (y & ~call), w @ (~y & ~call)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        spec = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        mcc = np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1.0), 0.0)
        n_pos, n_neg = tp + fn, tn + fp
        both = (n_pos > 0) & (n_neg > 0)
        prevalence = n_pos / (n_pos + n_neg)
        # ROC AUC: Mann-Whitney with ties counted half, weighted
        pos, neg = prob[y], prob[~y]
        pair = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        auc = np.sum((w[:, y] @ pair) * w[:, ~y], axis=1) / (n_pos * n_neg)  # BLAS; exact (see above)
        # average precision as sklearn: sum over thresholds of (R_k - R_k-1) * P_k
        order = np.argsort(-prob, kind="mergesort")
        ys, ps = y[order], prob[order]
        tps = np.cumsum(w[:, order] * ys, axis=1)
        fps = np.cumsum(w[:, order] * ~ys, axis=1)
        last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1] if len(ps) else np.array([], int)
        tps, fps = tps[:, last], fps[:, last]
        prec = np.where(tps + fps > 0, tps / np.where(tps + fps > 0, tps + fps, 1.0), 0.0)
        rec = tps / np.where(n_pos > 0, n_pos, 1.0)[:, None]
        ap = np.sum(np.diff(np.concatenate([np.zeros((len(w), 1)), rec], axis=1), axis=1) * prec, axis=1)
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "roc_auc": np.where(both, auc, np.nan),
        "balanced_accuracy": np.where(both, (recall + spec) / 2, np.nan),
        "average_precision": np.where(both, ap, np.nan),
        "mcc": np.where(both, mcc, 0.0),
        "prevalence": prevalence,
    }


def cluster_bootstrap_weights(clusters: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) weights: each draw resamples the clusters (treatment groups) with replacement."""
    _, cluster_of = np.unique(np.asarray(clusters), return_inverse=True)
    k = cluster_of.max() + 1 if len(cluster_of) else 0
    draws = rng.integers(0, k, size=(n_boot, k))
    counts = np.zeros((n_boot, k))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts[:, cluster_of]


def summarize(
    predictions: pd.DataFrame,
    wells: pd.DataFrame,
    n_boot: int,
    level: float,
    seed: int,
    scores: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Per (architecture, augmentation, cytokine): mean of each metric over repeats x folds and its interval.

    Point estimates are the means of `fold_metrics` (sklearn). The interval is the percentile interval of a
    cluster bootstrap (treatment groups resampled within each test fold), the same draws for every model of a
    cytokine. Returns (table, draws) where draws[(cytokine, architecture, augmentation)] is {metric: (B,)}.
    """
    scores = score_predictions(predictions) if scores is None else scores
    means = scores.groupby([*MODEL, "cytokine"], as_index=False)[METRICS].mean()
    n_folds = scores.groupby([*MODEL, "cytokine"]).size().rename("n_folds").reset_index()
    means = means.merge(n_folds, on=[*MODEL, "cytokine"])
    cluster = (wells.plate.astype(str) + "|" + wells.group.astype(str)).to_numpy()
    draws: dict[tuple, dict[str, np.ndarray]] = {}
    counts: dict[tuple, int] = {}
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    for c_i, (cytokine, cp) in enumerate(predictions.groupby("cytokine", sort=True)):
        for (repeat, fold), fp in cp.groupby(["repeat", "fold"], sort=True):
            test_wells = np.sort(fp.well_index.unique())
            rng = np.random.default_rng([seed, c_i, int(repeat), int(fold)])
            weights = cluster_bootstrap_weights(cluster[test_wells], n_boot, rng)
            pos = {w_: i for i, w_ in enumerate(test_wells)}
            for (arch, aug), g in fp.groupby(MODEL, sort=False):
                cols = np.array([pos[w_] for w_ in g.well_index])
                m = weighted_metrics(g.label.to_numpy(), g.prob.to_numpy(), weights[:, cols])
                key = (cytokine, arch, aug)
                acc = draws.setdefault(key, {k: np.zeros(n_boot) for k in INTERVAL_METRICS})
                for k in INTERVAL_METRICS:
                    acc[k] += m[k]
                counts[key] = counts.get(key, 0) + 1
    rows = []
    for key, acc in draws.items():
        for k in INTERVAL_METRICS:
            acc[k] /= counts[key]
        rows.append(
            {
                "cytokine": key[0],
                "architecture": key[1],
                "augmentation": key[2],
                **{f"{k}_lo": float(np.nanpercentile(acc[k], lo_q)) for k in INTERVAL_METRICS},
                **{f"{k}_hi": float(np.nanpercentile(acc[k], hi_q)) for k in INTERVAL_METRICS},
            }
        )
    table = means.merge(pd.DataFrame(rows), on=[*MODEL, "cytokine"], how="left") if rows else means
    return table, draws
