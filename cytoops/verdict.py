"""verdict: which cytokines are predictable from images, with numbers a reviewer can check.

For every kept cytokine the image models of the training grid are set beside simple baselines fitted on
the very same folds (`work/train/folds.csv`) and scored the same way (`evaluate.fold_scores`):

- prevalence: always "responder" (on class-balanced wells this alone gives F1 ~ 0.67);
- image_features: logistic regression on a nucleus count (local maxima of the smoothed nucleus channel
  above a per-well threshold) and the mean intensity of every channel;
- position: logistic regression on the well's row, column, edge flag and distance from the plate centre;
- embeddings: logistic regression on the plate's `embeddings.csv` (the study's "Part 1"), where present.

Every baseline is fitted on the training fold only. Every figure gets an interval: a cluster bootstrap
that resamples treatment groups within each test fold (the same draws for every model and baseline, so
differences are paired), averaged over folds and repeats as the point estimate is.

**Is the best model better than chance?** Two permutation tests, both with p = (b + 1) / (n + 1):

- `conditional` (the default test behind the call): the out-of-fold calls of every model of the grid are
  held fixed and the test-fold labels are permuted; the statistic is the best model's mean F1
  (`verdict.statistic`; roc_auc is the other choice), recomputed as the maximum over all models in every
  permutation (max-T), so picking the best of the grid is part of the null. Under "images carry no
  information about the label" each fold's predictions come from wells the labels of the test fold never
  touched, so permuting those labels is exact. It needs no refits:
  `verdict.n_perm` (9,999) permutations take a second, and p can reach 1e-4.
- `refit` (the whole fit repeated): the labels are permuted and the best architecture is cross-validated
  again through `train.cross_validate` with the same params and seeds (the folds are re-made by the same
  seeded stratified, grouped rule on the permuted labels: the whole procedure is repeated); its observed
  statistic is that model refitted on the real labels in the same process. It costs a CV fit per
  permutation, so `verdict.n_perm_cnn` / `n_perm_vit` are small and, by default (`refit_scope: top`,
  `refit_max: 3`), only the three cytokines with the smallest conditional p get this check.

Exchangeability. Labels are permuted only within a plate and by treatment group, the unit the folds keep
together: groups with the same number of wells exchange their label vectors whole (and the wells within a
group are shuffled); groups whose size is unique on the plate are pooled and shuffled well by well.
Where there is no layout every well is its own group and this is a within-plate well shuffle. The
conditional test does this within each test fold (within the cells of all repeats' folds when repeats > 1).

**The call.** Benjamini-Hochberg across all kept cytokines (those not tested count as p = 1). A cytokine
is predictable when q < `verdict.alpha` AND the best model (highest mean statistic) beats the best baseline:
by default its mean F1 is above every baseline's mean F1 AND its mean ROC AUC is above every baseline's
(`verdict.beat_on`: f1, roc_auc or either instead).

ROC AUC as the statistic (`verdict.statistic: roc_auc`, with `beat_on: roc_auc`) asks whether a model ranks
the wells well, whatever its threshold. F1 of calls at 0.5 also asks whether 0.5 suits the held-out fold, and
with treatment groups kept whole the folds' shares of responders differ: on the demo plate deep_cnn/flips has
ROC AUC 0.84 and F1 0.00 on IL-1α. ROC AUC finds more, but on the demo plates of seeds 0 and 1 it also called
a pathway- and three noise-driven cytokines where F1 called none (README), so F1 stays the default.
A second, weaker column, `signal_in_images`, asks whether the images carry the cytokine at all: the same
test over every image-derived predictor (models, image-feature and embeddings baselines) against the
baselines that see no image (prevalence, position).

The study's claims are tested too (`hypotheses`), and on a simulated plate with `truth.json` the calls are
scored against the truth (`score_truth`). Pure core down to `run`; Keras is imported only by refits.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from scipy import ndimage, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, matthews_corrcoef
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cytoops import evaluate, train
from cytoops import params as params_mod
from cytoops import wrangle as wrangle_mod

MODEL = ["architecture", "augmentation"]
FOLD = ["cytokine", "repeat", "fold"]
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
BASELINES = ("prevalence", "image_features", "position", "embeddings")
BASELINE_ARCH = "baseline"
IMAGE_BASELINES = ("image_features", "embeddings")  # image-derived; prevalence and position are not
CNN_ARCHS = ("wide_cnn", "deep_cnn")
VIT_ARCHS = ("vit_linear", "vit_240k", "vit_500k")
CHEAPEST = ("none", "hflip", "vflip", "hvflip", "flips", "d4")  # strategies by training views, fewest first
TRUTH_FOUND, TRUTH_MISSED = "found", "missed"
TRUTH_WRONG, TRUTH_RIGHT = "wrongly called", "correctly not called"


# ---- metrics ------------------------------------------------------------------------------------------


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

    Computed by `weighted_metrics` with unit weights: the same numbers as `fold_metrics` (sklearn, through
    `evaluate.fold_scores`; tested, and `check_scores` re-checks the reported rows at run time), ~100x faster.
    """
    keys = [*MODEL, *FOLD]
    rows = []
    for key, g in predictions.groupby(keys, sort=True):
        m = weighted_metrics(g.label.to_numpy(), g.prob.to_numpy(), np.ones((1, len(g))))
        rows.append({**dict(zip(keys, key, strict=True)), **{k: float(m[k][0]) for k in METRICS}})
    return pd.DataFrame(rows, columns=[*keys, *METRICS])


def check_scores(scores: pd.DataFrame, predictions: pd.DataFrame, pairs: pd.DataFrame) -> None:
    """Recompute the folds of the given (architecture, augmentation, cytokine) rows with `fold_metrics`
    (sklearn via `evaluate.fold_scores`) and fail loudly if any metric differs from `scores`."""
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
        auc = np.einsum("bi,ij,bj->b", w[:, y], pair, w[:, ~y]) / (n_pos * n_neg)
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


# ---- baselines ----------------------------------------------------------------------------------------


def count_nuclei(nucleus: np.ndarray, sigma: float = 1.0, fraction: float = 0.35) -> int:
    """Nuclei in one scaled image: local maxima of the smoothed channel above `fraction` of its 99.5th pct."""
    smooth = ndimage.gaussian_filter(np.asarray(nucleus, dtype=np.float32), sigma)
    floor = np.percentile(smooth, 5)
    top = np.percentile(smooth, 99.5)
    if top - floor <= 1e-6:
        return 0
    on = smooth > floor + fraction * (top - floor)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=3)) & on
    return int(peaks.sum())


def image_features(images: np.ndarray, channels: tuple[str, ...]) -> pd.DataFrame:
    """Per well: `cell_count` (from the nucleus channel, when there is one) and `mean_<channel>`."""
    feats = {f"mean_{c}": images[:, i].reshape(len(images), -1).mean(axis=1) for i, c in enumerate(channels)}
    if "nucleus" in channels:
        k = channels.index("nucleus")
        feats = {"cell_count": np.array([count_nuclei(im[k]) for im in images], dtype=float), **feats}
    return pd.DataFrame(feats)


def position_features(wells: pd.DataFrame) -> pd.DataFrame:
    """Per well: row, column, edge flag and distance from the plate centre (rows and columns separately)."""
    row, col = wells.row.to_numpy(float), wells.col.to_numpy(float)
    return pd.DataFrame(
        {
            "row": row,
            "col": col,
            "edge": wells.edge.astype(str).str.lower().eq("true").to_numpy(float),
            "row_from_centre": np.abs(row - (row.max() + row.min()) / 2) if len(row) else row,
            "col_from_centre": np.abs(col - (col.max() + col.min()) / 2) if len(col) else col,
        }
    )


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """Standardized logistic regression fitted on the training fold; constant when it has one class."""
    if len(np.unique(y_train)) < 2:
        return np.full(len(x_test), float(np.mean(y_train)) if len(y_train) else 0.5)
    mean = np.nanmean(x_train, axis=0)
    fill = np.where(np.isnan(mean), 0.0, mean)
    x_train = np.where(np.isnan(x_train), fill, x_train)
    x_test = np.where(np.isnan(x_test), fill, x_test)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    model.fit(x_train, y_train)
    return model.predict_proba(x_test)[:, 1]


def baseline_predictions(
    folds: pd.DataFrame, labels: pd.DataFrame, wells: pd.DataFrame, features: dict[str, pd.DataFrame | None]
) -> pd.DataFrame:
    """Out-of-fold probabilities of every baseline on the given folds, in the layout of the model predictions.

    `features` maps a baseline name to a per-well table (row i = well i), `None` for prevalence (always
    responder). Rows carry architecture "baseline" and the baseline's name as augmentation.
    """
    lab = labels[labels.balanced.astype(bool)].set_index(["cytokine", "well_index"]).label
    out = []
    for (cytokine, repeat), f in folds.groupby(["cytokine", "repeat"], sort=False):
        idx = f.well_index.to_numpy()
        y = lab.loc[cytokine].reindex(idx).to_numpy()
        ok = ~np.isnan(y.astype(float))
        idx, y, fold_of = idx[ok], y[ok].astype(int), f.fold.to_numpy()[ok]
        for fold in np.unique(fold_of):
            test, trn = fold_of == fold, fold_of != fold
            for name, table in features.items():
                if table is None:
                    prob = np.ones(int(test.sum()))
                else:
                    x = table.to_numpy(float)
                    prob = _fit_predict(x[idx[trn]], y[trn], x[idx[test]])
                out.append(
                    pd.DataFrame(
                        {
                            "architecture": BASELINE_ARCH,
                            "augmentation": name,
                            "cytokine": cytokine,
                            "repeat": repeat,
                            "fold": fold,
                            "well_index": idx[test],
                            "plate": wells.plate.to_numpy()[idx[test]],
                            "well": wells.well.to_numpy()[idx[test]],
                            "label": y[test],
                            "prob": prob,
                        }
                    )
                )
    columns = [*MODEL, *FOLD, "well_index", "plate", "well", "label", "prob"]
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns)


def baseline_features(w: wrangle_mod.Wrangled) -> dict[str, pd.DataFrame | None]:
    """The baselines this data allows (embeddings only when the plates carry them)."""
    feats: dict[str, pd.DataFrame | None] = {
        "prevalence": None,
        "image_features": image_features(w.images, w.channels),
        "position": position_features(w.wells),
    }
    emb = w.embeddings.select_dtypes("number") if len(w.embeddings.columns) else pd.DataFrame()
    if emb.shape[1] and not emb.isna().all().all():
        feats["embeddings"] = emb.reset_index(drop=True)
    return feats


# ---- intervals ----------------------------------------------------------------------------------------


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


# ---- permutations -------------------------------------------------------------------------------------


def permutation_p(null: np.ndarray, observed: float) -> float:
    """Empirical p = (b + 1) / (n + 1), b = permutations whose statistic reaches the observed one."""
    null = np.asarray(null, dtype=float)
    null = null[~np.isnan(null)]
    b = int(np.sum(null >= observed - 1e-12))
    return (b + 1) / (len(null) + 1)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH-adjusted q-values (step-up, monotone, capped at 1); NaN stays NaN and does not count."""
    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return q
    order = np.argsort(p[ok], kind="mergesort")
    ranked = p[ok][order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out = np.empty(m)
    out[order] = adjusted
    q[ok] = out
    return q


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def exchangeable_strata(plates: np.ndarray, groups: np.ndarray, cells: np.ndarray | None = None) -> list:
    """The blocks labels may be permuted within, as positions into the arrays given.

    Within each (plate, cell): treatment groups of equal size form one stratum of blocks ("blocks", [arrays]),
    whose label vectors are exchanged whole; the groups whose size is unique are pooled ("wells", array)
    and shuffled well by well. A cell is e.g. a test fold; None means one cell.
    """
    n = len(plates)
    cells = np.zeros(n, dtype=int) if cells is None else np.asarray(cells)
    frame = pd.DataFrame({"plate": np.asarray(plates).astype(str), "group": np.asarray(groups).astype(str)})
    frame["cell"] = [str(c) for c in cells]
    strata = []
    for _, part in frame.groupby(["plate", "cell"], sort=True):
        blocks = [g.index.to_numpy() for _, g in part.groupby("group", sort=True)]
        by_size: dict[int, list] = {}
        for b in blocks:
            by_size.setdefault(len(b), []).append(b)
        pooled = []
        for size in sorted(by_size):
            same = by_size[size]
            if len(same) >= 2:
                strata.append(("blocks", same))
            else:
                pooled.append(same[0])
        if pooled:
            strata.append(("wells", np.concatenate(pooled)))
    return strata


def permuted_labels(y: np.ndarray, strata: list, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """(n_perm, len(y)) int8: label vectors permuted within the strata of `exchangeable_strata`."""
    y = np.asarray(y).astype(np.int8)
    out = np.broadcast_to(y, (n_perm, len(y))).copy()
    for kind, part in strata:
        if kind == "wells":
            idx = np.asarray(part)
            order = np.argsort(rng.random((n_perm, len(idx))), axis=1)
            out[:, idx] = y[idx][order]
        else:
            blocks = np.stack(part)  # (k, size): positions of each block
            k, size = blocks.shape
            which = np.argsort(rng.random((n_perm, k)), axis=1)  # block j receives block which[j]'s labels
            within = np.argsort(rng.random((n_perm, k, size)), axis=2)  # and in a shuffled order
            source = blocks[which]  # (n_perm, k, size)
            source = np.take_along_axis(source, within, axis=2)
            out[:, blocks.reshape(-1)] = y[source.reshape(n_perm, -1)]
    return out


def conditional_test(
    predictions: pd.DataFrame,
    wells: pd.DataFrame,
    n_perm: int,
    rng: np.random.Generator,
    statistic: str = "f1",
) -> tuple[float, np.ndarray, pd.Series]:
    """Max-T test-label permutation test of one cytokine's out-of-fold predictions, all models at once.

    `predictions` holds every model of the grid for ONE cytokine (all its repeats and folds). Models with a
    missing fold are left out. `statistic` is the per-fold metric averaged over folds: roc_auc (ranks of the
    probabilities; labels move within folds, so each fold keeps its count of responders) or f1 (calls at
    0.5). Returns (observed max mean statistic, null of the max (n_perm,), mean statistic per model).
    """
    if statistic not in params_mod.STATISTICS:
        raise ValueError(f"statistic is {statistic!r}: choose one of {', '.join(params_mod.STATISTICS)}")
    keys = list(predictions.groupby(MODEL).groups)
    units = predictions[["repeat", "fold"]].drop_duplicates()
    complete = [
        k
        for k in keys
        if len(
            predictions.loc[
                (predictions.architecture == k[0]) & (predictions.augmentation == k[1]), ["repeat", "fold"]
            ].drop_duplicates()
        )
        == len(units)
    ]
    predictions = predictions[pd.MultiIndex.from_frame(predictions[MODEL]).isin(complete)]
    all_wells = np.sort(predictions.well_index.unique())
    pos = {w_: i for i, w_ in enumerate(all_wells)}
    label = (
        predictions.drop_duplicates("well_index").set_index("well_index").label.reindex(all_wells).to_numpy()
    )
    # cells: a well's fold in every repeat
    fold_table = (
        predictions.drop_duplicates(["well_index", "repeat"])
        .pivot(index="well_index", columns="repeat", values="fold")
        .reindex(all_wells)
    )
    cells = fold_table.astype(str).agg("/".join, axis=1).to_numpy()
    strata = exchangeable_strata(wells.plate.to_numpy()[all_wells], wells.group.to_numpy()[all_wells], cells)
    y_perm = permuted_labels(label, strata, n_perm, rng).astype(np.float32)
    total_obs = np.zeros(len(complete))
    total_null = np.zeros((n_perm, len(complete)))
    n_units = 0
    for (_, _), u in predictions.groupby(["repeat", "fold"], sort=True):
        test_wells = np.sort(u.well_index.unique())
        cols = np.array([pos[w_] for w_ in test_wells])
        prob = np.zeros((len(complete), len(test_wells)), dtype=np.float64)
        for m, (arch, aug) in enumerate(complete):
            g = u[(u.architecture == arch) & (u.augmentation == aug)]
            prob[m, np.searchsorted(test_wells, g.well_index.to_numpy())] = g.prob.to_numpy()
        y_obs, y_null = label[cols].astype(np.float64), y_perm[:, cols].astype(np.float64)
        n_pos = y_obs.sum()
        if statistic == "roc_auc":  # Mann-Whitney: AUC = (sum of positives' mid-ranks - P(P+1)/2) / (P N)
            n_neg = len(cols) - n_pos
            if n_pos == 0 or n_neg == 0:
                continue  # AUC undefined on this fold (as in evaluate.fold_scores): left out of the mean
            ranks = stats.rankdata(prob, axis=1)
            offset, scale = n_pos * (n_pos + 1) / 2, n_pos * n_neg
            total_obs += (ranks @ y_obs - offset) / scale
            total_null += (y_null @ ranks.T - offset) / scale
        else:  # F1 of the calls at 0.5: 2 TP / (called + responders)
            calls = (prob >= 0.5).astype(np.float64)
            denom = calls.sum(axis=1) + n_pos
            safe = np.where(denom > 0, denom, 1)
            total_obs += np.where(denom > 0, 2 * (calls @ y_obs) / safe, 0.0)
            total_null += np.where(denom > 0, 2 * (y_null @ calls.T) / safe, 0.0)
        n_units += 1
    per_model = pd.Series(total_obs / max(n_units, 1), index=pd.MultiIndex.from_tuples(complete, names=MODEL))
    if not complete or not n_units:
        return np.nan, np.array([]), per_model
    return float(per_model.max()), (total_null / max(n_units, 1)).max(axis=1), per_model


def refit_null(
    inputs: train.Inputs,
    train_params: params_mod.TrainParams,
    cytokine: str,
    architecture: str,
    augmentation: str,
    n_perm: int,
    seed: int,
    stop_after: int = 0,
    statistic: str = "f1",
) -> tuple[np.ndarray, float, float]:
    """Mean `statistic` (roc_auc or f1, per fold) of `architecture`/`augmentation` cross-validated on the
    real labels, then again on permuted labels, n_perm times, all in this process (so that observed and null
    share one numeric environment).

    The labels of the cytokine's balanced wells are permuted within plate by treatment group
    (`exchangeable_strata`), then `train.cross_validate` runs with the same params and seeds; it re-makes the
    folds by its seeded stratified, grouped rule. With stop_after > 0 the loop stops once that many null F1s
    reach the observed one (p is then (b + 1) / (n + 1) over the permutations run, which only errs high).
    Returns (null statistics, observed statistic, seconds).
    """
    t0 = time.perf_counter()
    labels = inputs.labels[inputs.labels.cytokine == cytokine].copy()
    bal = labels.balanced.astype(bool).to_numpy()
    rows = labels[bal]
    wells_idx = rows.well_index.to_numpy()
    strata = exchangeable_strata(
        inputs.wells.plate.to_numpy()[wells_idx], inputs.wells.group.to_numpy()[wells_idx]
    )
    perms = permuted_labels(rows.label.to_numpy(), strata, n_perm, np.random.default_rng(seed))
    base = dataclasses.replace(inputs, kept=(cytokine,), strategies=(augmentation,))
    tp = dataclasses.replace(train_params, architectures=(architecture,))

    def mean_statistic(table: pd.DataFrame) -> float:
        result = train.cross_validate(dataclasses.replace(base, labels=table), tp, progress=False)
        pred = result.predictions
        if pred.empty:
            return np.nan
        scores = [
            evaluate.fold_scores(g.label.to_numpy(), g.prob.to_numpy())[statistic]
            for _, g in pred.groupby(["repeat", "fold"])
        ]
        return float(np.nanmean(scores)) if not np.isnan(scores).all() else np.nan

    observed = mean_statistic(labels)
    null = []
    for k in range(n_perm):
        shuffled = labels.copy()
        shuffled.loc[bal, "label"] = perms[k].astype(int)
        value = mean_statistic(shuffled)
        if np.isnan(value):
            continue
        null.append(value)
        if stop_after and sum(v >= observed - 1e-12 for v in null) >= stop_after:
            break
    return np.array(null), observed, time.perf_counter() - t0


def cheapest(strategies: tuple[str, ...]) -> str:
    """The strategy with the fewest training views among those given (none < hflip < ... < d4)."""
    return min(strategies, key=lambda s: CHEAPEST.index(s) if s in CHEAPEST else len(CHEAPEST))


# ---- the call -----------------------------------------------------------------------------------------


def beats(model: pd.Series, best_f1: float, best_auc: float, rule: str) -> bool:
    """Does the model beat the best baseline? rule: f1, roc_auc, both or either (strictly greater)."""
    by_f1 = bool(model.f1 > best_f1) if not np.isnan(best_f1) else True
    by_auc = bool(model.roc_auc > best_auc) if not (np.isnan(best_auc) or np.isnan(model.roc_auc)) else by_f1
    return {"f1": by_f1, "roc_auc": by_auc, "both": by_f1 and by_auc, "either": by_f1 or by_auc}[rule]


def decide(
    summary: pd.DataFrame,
    tests: pd.DataFrame,
    kept: list[str],
    alpha: float,
    beat_on: str,
    test: str,
    statistic: str = "f1",
) -> pd.DataFrame:
    """The verdict table, one row per kept cytokine.

    summary: `summarize` of models and baselines; tests: cytokine, p_conditional, n_conditional, p_refit,
    n_refit (NaN where not run). BH runs over every kept cytokine; one without a p of the chosen test counts
    as p = 1. A cytokine's best model is the one with the highest mean `statistic` (ties: the other metric).
    """
    models = summary[summary.architecture != BASELINE_ARCH]
    bases = summary[summary.architecture == BASELINE_ARCH]
    tests = tests.set_index("cytokine") if len(tests) else pd.DataFrame()
    rows = []
    for cytokine in kept:
        m = models[models.cytokine == cytokine].sort_values(
            [statistic, "roc_auc" if statistic == "f1" else "f1", "architecture", "augmentation"],
            ascending=[False, False, True, True],
        )
        b = bases[bases.cytokine == cytokine]
        row: dict = {"cytokine": cytokine}
        if len(b):
            bf = b.sort_values("f1", ascending=False).iloc[0]
            ba = b.sort_values("roc_auc", ascending=False, na_position="last").iloc[0]
            row.update(
                best_baseline=bf.augmentation,
                best_baseline_f1=bf.f1,
                best_baseline_f1_lo=bf.get("f1_lo"),
                best_baseline_f1_hi=bf.get("f1_hi"),
                best_baseline_auc_name=ba.augmentation,
                best_baseline_roc_auc=ba.roc_auc,
            )
            for _, r in b.iterrows():
                row[f"{r.augmentation}_f1"] = r.f1
        if m.empty:
            row.update(predictable=False, reason="no model results for this cytokine")
            rows.append(row)
            continue
        top = m.iloc[0]
        row.update(architecture=top.architecture, augmentation=top.augmentation, n_models=len(m))
        for k in [*METRICS, "n_folds", *(f"{m_}_{e}" for m_ in INTERVAL_METRICS for e in ("lo", "hi"))]:
            if k in top.index:
                row[k] = top[k]
        row["beats_baseline"] = beats(
            top, row.get("best_baseline_f1", np.nan), row.get("best_baseline_roc_auc", np.nan), beat_on
        )
        if cytokine in tests.index:
            t = tests.loc[cytokine]
            row.update({k: t[k] for k in t.index})
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in (
        "p_conditional",
        "n_conditional",
        "p_refit",
        "n_refit",
        "refit_architecture",
        "refit_augmentation",
        "refit_observed",
    ):
        if col not in table:
            table[col] = np.nan
    p_col = "p_conditional" if test == "conditional" else "p_refit"
    table["p"] = table[p_col].astype(float).fillna(1.0)
    table["n_perm"] = table["n_conditional" if test == "conditional" else "n_refit"]
    table["q"] = benjamini_hochberg(table.p.to_numpy()) if len(table) else []
    table["beats_baseline"] = table.get("beats_baseline", pd.Series(False, index=table.index)).fillna(False)
    table["predictable"] = (table.q < alpha) & table.beats_baseline.astype(bool)
    table = _signal_in_images(table, summary, alpha, beat_on)
    reasons = []
    for r in table.itertuples():
        if isinstance(getattr(r, "reason", None), str):
            reasons.append(r.reason)
        elif r.predictable:
            reasons.append(f"q = {r.q:.3g} < {alpha} and beats every baseline ({beat_on})")
        elif not r.beats_baseline:
            reasons.append(
                f"does not beat the best baseline ({r.best_baseline} F1 {r.best_baseline_f1:.2f}, "
                f"{r.best_baseline_auc_name} AUC {r.best_baseline_roc_auc:.2f}; model F1 {r.f1:.2f}, "
                f"AUC {r.roc_auc:.2f})"
            )
        else:
            reasons.append(f"not significant: q = {r.q:.3g} >= {alpha}")
    table["reason"] = reasons
    return table


def _signal_in_images(table: pd.DataFrame, summary: pd.DataFrame, alpha: float, beat_on: str) -> pd.DataFrame:
    """A second, weaker question: do the images carry information about the cytokine at all?

    The same max-T conditional test over every image-derived predictor (the image models plus the
    image-feature and embeddings baselines; `p_images`), BH across cytokines, and the best of them must beat
    the baselines that see no image (prevalence, position) by the same rule. Yes here and no to
    `predictable` means: visible in the images, but the image models add nothing to a simple read-out.
    """
    if "p_images" not in table:
        table["p_images"] = np.nan
    table["q_images"] = benjamini_hochberg(table.p_images.astype(float).fillna(1.0).to_numpy())
    blind = summary[(summary.architecture == BASELINE_ARCH) & ~summary.augmentation.isin(IMAGE_BASELINES)]
    key = summary.architecture + "/" + summary.augmentation
    signal, f1s, aucs = [], [], []
    for r in table.itertuples():
        pick = summary[(key == getattr(r, "image_predictor", None)) & (summary.cytokine == r.cytokine)]
        b = blind[blind.cytokine == r.cytokine]
        if pick.empty:
            signal.append(False)
            f1s.append(np.nan)
            aucs.append(np.nan)
            continue
        top = pick.iloc[0]
        f1s.append(top.f1)
        aucs.append(top.roc_auc)
        wins = beats(top, b.f1.max() if len(b) else np.nan, b.roc_auc.max() if len(b) else np.nan, beat_on)
        signal.append(bool(wins and r.q_images < alpha))
    table["image_predictor_f1"] = f1s
    table["image_predictor_roc_auc"] = aucs
    table["signal_in_images"] = signal
    return table


# ---- the study's claims -------------------------------------------------------------------------------


def _wilcoxon(x: np.ndarray, y: np.ndarray, alternative: str) -> tuple[float, float, str]:
    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return np.nan, np.nan, "; no paired values"
    if np.allclose(d, 0):
        return 0.0, 1.0, "; all differences are zero"
    res = stats.wilcoxon(d, alternative=alternative, zero_method="wilcox")
    return float(res.statistic), float(res.pvalue), ""


def _row(hypothesis, claim, test, statistic=np.nan, p=np.nan, n=0, detail="", p_adj=np.nan, skipped=""):
    return {
        "hypothesis": hypothesis,
        "claim": claim,
        "test": test,
        "statistic": statistic,
        "p": p,
        "p_adjusted": p_adj,
        "n": n,
        "detail": detail,
        "skipped": skipped,
    }


def hypotheses(
    model_means: pd.DataFrame,
    baseline_means: pd.DataFrame,
    f1_cutoff: float,
    alpha: float,
    vit_pretrained: bool | None = None,
) -> pd.DataFrame:
    """The study's claims as tests over cytokines (each cytokine one paired observation).

    model_means: per (architecture, augmentation, cytokine) mean F1 (`evaluate.per_cytokine`);
    baseline_means: the same for the baselines (architecture "baseline").
    """
    rows = []
    archs = sorted(set(model_means.architecture))
    # H1: augmentation strategies do not differ (F1 averaged over architectures, per cytokine)
    aug = model_means.pivot_table(
        index="cytokine", columns="augmentation", values="f1", aggfunc="mean"
    ).dropna()
    claim = "The augmentation strategies do not differ"
    if aug.shape[1] < 2:
        rows.append(_row("augmentation", claim, "Friedman", skipped="fewer than two strategies were run"))
    elif aug.shape[1] == 2 or len(aug) < 3:
        s, p, note = _wilcoxon(aug.iloc[:, 0], aug.iloc[:, 1], "two-sided")
        rows.append(
            _row(
                "augmentation",
                claim,
                "Wilcoxon signed-rank, two-sided",
                s,
                p,
                len(aug),
                f"{aug.columns[0]} vs {aug.columns[1]}{note}",
            )
        )
    else:
        res = stats.friedmanchisquare(*[aug[c].to_numpy() for c in aug.columns])
        k = aug.shape[1]
        w_kendall = float(res.statistic) / (len(aug) * (k - 1)) if len(aug) else np.nan
        verdict = (
            "reject: they differ"
            if res.pvalue < alpha
            else "not rejected (absence of evidence, not equivalence)"
        )
        medians = ", ".join(f"{c} {aug[c].median():.3f}" for c in aug.columns)
        rows.append(
            _row(
                "augmentation",
                claim,
                "Friedman chi-square over cytokines",
                float(res.statistic),
                float(res.pvalue),
                len(aug),
                f"Kendall W {w_kendall:.3f}; median F1 {medians}; {verdict}",
            )
        )
        pairs = [(a, b) for i, a in enumerate(aug.columns) for b in aug.columns[i + 1 :]]
        tests_ = [_wilcoxon(aug[a], aug[b], "two-sided") for a, b in pairs]
        adj = holm(np.array([t[1] if not np.isnan(t[1]) else 1.0 for t in tests_]))
        for (a, b), (s, p, note), pa in zip(pairs, tests_, adj, strict=True):
            d = float((aug[a] - aug[b]).median())
            rows.append(
                _row(
                    f"augmentation: {a} vs {b}",
                    "post hoc",
                    "Wilcoxon signed-rank, two-sided, Holm",
                    s,
                    p,
                    len(aug),
                    f"median difference {d:+.3f}{note}",
                    pa,
                )
            )
    per_arch = model_means.pivot_table(index="cytokine", columns="architecture", values="f1", aggfunc="mean")
    auc_arch = (
        model_means.pivot_table(index="cytokine", columns="architecture", values="roc_auc", aggfunc="mean")
        if "roc_auc" in model_means
        else per_arch * np.nan
    )
    # H2: the wide CNN beats the deep CNN
    claim = "The wide CNN beats the deep CNN"
    if {"wide_cnn", "deep_cnn"} <= set(archs):
        pair = per_arch[["wide_cnn", "deep_cnn"]].dropna()
        s, p, note = _wilcoxon(pair.wide_cnn, pair.deep_cnn, "greater")
        d = float((pair.wide_cnn - pair.deep_cnn).median())
        d_auc = float((auc_arch.wide_cnn - auc_arch.deep_cnn).median())
        rows.append(
            _row(
                "wide_cnn > deep_cnn",
                claim,
                "Wilcoxon signed-rank, one-sided (greater)",
                s,
                p,
                len(pair),
                f"F1 averaged over augmentations; median difference {d:+.3f} (ROC AUC {d_auc:+.3f}: an F1 "
                f"gain without an AUC gain is a shift of calls at P=0.5, not a better ranking){note}",
            )
        )
    else:
        missing = sorted({"wide_cnn", "deep_cnn"} - set(archs))
        rows.append(
            _row(
                "wide_cnn > deep_cnn", claim, "Wilcoxon signed-rank", skipped=f"not run: {', '.join(missing)}"
            )
        )
    # H3: CNNs beat the frozen ViTs
    claim = "CNNs beat the frozen ViTs"
    cnn = [a for a in archs if a in CNN_ARCHS]
    vit = [a for a in archs if a in VIT_ARCHS]
    if cnn and vit:
        pair = pd.DataFrame({"cnn": per_arch[cnn].mean(axis=1), "vit": per_arch[vit].mean(axis=1)}).dropna()
        s, p, note = _wilcoxon(pair.cnn, pair.vit, "greater")
        d = float((pair.cnn - pair.vit).median())
        d_auc = float((auc_arch[cnn].mean(axis=1) - auc_arch[vit].mean(axis=1)).median())
        caveat = (
            ""
            if vit_pretrained
            else "; the ViT backbone was NOT pretrained (random weights)"
            if vit_pretrained is False
            else ""
        )
        rows.append(
            _row(
                "CNN > ViT",
                claim,
                "Wilcoxon signed-rank, one-sided (greater)",
                s,
                p,
                len(pair),
                f"mean F1 of {'+'.join(cnn)} vs {'+'.join(vit)}; "
                f"median difference {d:+.3f} (ROC AUC {d_auc:+.3f}){caveat}{note}",
            )
        )
    else:
        rows.append(
            _row(
                "CNN > ViT",
                claim,
                "Wilcoxon signed-rank",
                skipped="no CNN was run" if not cnn else "no ViT was run",
            )
        )
    # H4: CNNs predict more cytokines, and better, than the embeddings (Part 1)
    emb = baseline_means[baseline_means.augmentation == "embeddings"].set_index("cytokine").f1
    cnn_means = model_means[model_means.architecture.isin(cnn)]
    for name, claim in [
        ("CNN better than embeddings", "CNNs predict cytokines better than the Part 1 embeddings"),
        ("CNN predicts more than embeddings", "CNNs predict more cytokines than the Part 1 embeddings"),
    ]:
        if not cnn:
            rows.append(_row(name, claim, "", skipped="no CNN was run"))
            continue
        if emb.empty:
            rows.append(_row(name, claim, "", skipped="the plates carry no embeddings.csv"))
            continue
        overall = cnn_means.groupby(MODEL).f1.mean().sort_values(ascending=False)
        arch, aug_ = overall.index[0]
        best = (
            cnn_means[(cnn_means.architecture == arch) & (cnn_means.augmentation == aug_)]
            .set_index("cytokine")
            .f1
        )
        pair = pd.DataFrame({"cnn": best, "emb": emb}).dropna()
        label = f"{arch}/{aug_} (the CNN with the best mean F1 over cytokines) vs the embeddings baseline"
        if name.startswith("CNN better"):
            s, p, note = _wilcoxon(pair.cnn, pair.emb, "greater")
            d = float((pair.cnn - pair.emb).median())
            rows.append(
                _row(
                    name,
                    claim,
                    "Wilcoxon signed-rank, one-sided (greater)",
                    s,
                    p,
                    len(pair),
                    f"{label}; median difference {d:+.3f}{note}",
                )
            )
        else:
            a, b = pair.cnn >= f1_cutoff, pair.emb >= f1_cutoff
            only_cnn, only_emb = int((a & ~b).sum()), int((~a & b).sum())
            p = (
                float(stats.binomtest(only_cnn, only_cnn + only_emb, 0.5, alternative="greater").pvalue)
                if only_cnn + only_emb
                else 1.0
            )
            rows.append(
                _row(
                    name,
                    claim,
                    "exact McNemar, one-sided",
                    float(only_cnn),
                    p,
                    len(pair),
                    f"{label}; F1 >= {f1_cutoff}: CNN {int(a.sum())}, embeddings {int(b.sum())} cytokines; "
                    f"only CNN {only_cnn}, only embeddings {only_emb}",
                )
            )
    return pd.DataFrame(rows)


# ---- truth on a simulated plate -----------------------------------------------------------------------


def find_truth(data: Path | None, plate_ids: list[str]) -> dict[str, dict]:
    """cytokine -> its truth.json entry (plus `plates`), from data/<plate>/truth.json where present."""
    if data is None:
        return {}
    truth: dict[str, dict] = {}
    for plate in sorted(set(plate_ids)):
        path = Path(data) / plate / "truth.json"
        if not path.is_file():
            continue
        for name, entry in json.loads(path.read_text(encoding="utf-8")).get("cytokines", {}).items():
            if name in truth and truth[name].get("cause") != entry.get("cause"):
                truth[name] = {**truth[name], "cause": "mixed"}
            truth.setdefault(name, {**entry, "plates": []})["plates"].append(plate)
    return truth


def score_truth(verdict: pd.DataFrame, truth: dict[str, dict]) -> pd.DataFrame:
    """Each kept cytokine's cause and what the call made of it: found, missed, wrongly called or not."""
    columns = [
        "cytokine", "cause", "driver", "predictable", "outcome", "f1", "best_baseline", "roc_auc",
        "best_baseline_auc_name", "best_baseline_roc_auc", "q", "signal_in_images", "image_predictor",
    ]  # fmt: skip
    if not truth:
        return pd.DataFrame(columns=columns)
    rows = []
    for r in verdict.itertuples():
        t = truth.get(r.cytokine, {})
        cause = t.get("cause", "unknown")
        called = bool(r.predictable)
        if cause == "morphology":
            outcome = TRUTH_FOUND if called else TRUTH_MISSED
        else:
            outcome = TRUTH_WRONG if called else TRUTH_RIGHT
        rows.append(
            {
                "cytokine": r.cytokine,
                "cause": cause,
                "driver": t.get("driver"),
                "predictable": called,
                "outcome": outcome,
                "f1": getattr(r, "f1", np.nan),
                "best_baseline": getattr(r, "best_baseline", None),
                "roc_auc": getattr(r, "roc_auc", np.nan),
                "best_baseline_auc_name": getattr(r, "best_baseline_auc_name", None),
                "best_baseline_roc_auc": getattr(r, "best_baseline_roc_auc", np.nan),
                "q": r.q,
                "signal_in_images": bool(getattr(r, "signal_in_images", False)),
                "image_predictor": getattr(r, "image_predictor", None),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def truth_summary(truth_table: pd.DataFrame) -> dict:
    if truth_table.empty:
        return {}
    morph = truth_table[truth_table.cause == "morphology"]
    wrong = truth_table[truth_table.outcome == TRUTH_WRONG]
    signal = truth_table[truth_table.signal_in_images.astype(bool)]
    return {
        "morphology_kept": int(len(morph)),
        "morphology_found": int((morph.outcome == TRUTH_FOUND).sum()),
        "morphology_missed": sorted(morph.cytokine[morph.outcome == TRUTH_MISSED]),
        "wrongly_called": {c: cause for c, cause in zip(wrong.cytokine, wrong.cause, strict=True)},
        "wrongly_called_by_cause": {k: int(v) for k, v in wrong.cause.value_counts().items()},
        "morphology_with_signal_in_images": int((signal.cause == "morphology").sum()),
        "signal_in_images_not_morphology": {
            c: cause for c, cause in zip(signal.cytokine, signal.cause, strict=True) if cause != "morphology"
        },
    }


# ---- the stage ----------------------------------------------------------------------------------------


@dataclass
class Verdict:
    """Everything the report shows."""

    table: pd.DataFrame  # predictable.csv: one row per kept cytokine
    summary: pd.DataFrame  # every model and baseline per cytokine: means and intervals
    fold_scores: pd.DataFrame  # every model and baseline per fold
    hypotheses: pd.DataFrame
    truth: pd.DataFrame  # empty without truth.json
    nulls: dict  # cytokine -> {"conditional": null, "observed": F1, "refit": null, "refit_observed": F1}
    predictions: pd.DataFrame  # model and baseline out-of-fold predictions
    curves: pd.DataFrame
    wells: pd.DataFrame
    params: dict
    notes: list
    timing: dict


def refit_choice(table: pd.DataFrame, scope: str, cap: int) -> list[str]:
    """The cytokines the refit test runs on: `scope` (none, top, called, candidates, all), at most `cap` of
    them (0: no cap), those with the smallest conditional p (then the highest F1) first."""
    ranked = table[table.architecture.notna()].sort_values(["p_conditional", "f1"], ascending=[True, False])
    pick = {
        "none": ranked.iloc[0:0],
        "top": ranked,
        "called": ranked[ranked.predictable],
        "candidates": ranked[ranked.beats_baseline.astype(bool)],
        "all": ranked,
    }[scope]
    return list(pick.cytokine[:cap] if cap else pick.cytokine)


def _vit_pretrained(features_path: Path | None) -> bool | None:
    if features_path is None or not Path(features_path).is_file():
        return None
    with np.load(features_path) as z:
        return bool(z["pretrained"]) if "pretrained" in z else None


def compute(
    w: wrangle_mod.Wrangled,
    result: train.Result,
    p: params_mod.Params,
    inputs_factory=None,
    data: Path | None = None,
    vit_pretrained: bool | None = None,
    log=print,
) -> Verdict:
    """The verdict from wrangled data and the training grid's results. `inputs_factory(architectures)` gives
    `train.Inputs` for refits (None: no refits)."""
    vp = p.verdict
    timing: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    kept = list(wrangle_mod.kept_cytokines(w.cytokines))
    folds = result.folds
    preds = result.predictions.copy()
    preds = preds[preds.cytokine.isin(kept)]
    feats = baseline_features(w)
    if "embeddings" not in feats:
        notes.append("No embeddings.csv on the plates: the Part 1 (embeddings) baseline is left out.")
    base = baseline_predictions(folds[folds.cytokine.isin(kept)], w.labels, w.wells, feats)
    timing["baselines_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    both = pd.concat([preds, base], ignore_index=True)
    scores = score_predictions(both)
    summary, _ = summarize(both, w.wells, vp.n_boot, vp.level, vp.seed, scores=scores)
    timing["intervals_s"] = time.perf_counter() - t1
    # conditional (max-T) permutation test, every cytokine
    t2 = time.perf_counter()
    tests, nulls = [], {}
    for i, cytokine in enumerate(kept):
        cp = preds[preds.cytokine == cytokine]
        if cp.empty:
            continue
        rng = np.random.default_rng([vp.seed, i])
        observed, null, _ = conditional_test(cp, w.wells, vp.n_perm, rng, vp.statistic)
        tests.append(
            {
                "cytokine": cytokine,
                "p_conditional": permutation_p(null, observed),
                "n_conditional": len(null),
                "conditional_observed": observed,
            }
        )
        nulls[cytokine] = {"conditional": null, "observed": observed}
        # is there any signal in the images? the same test over image models and image-derived baselines
        ib = base[(base.cytokine == cytokine) & base.augmentation.isin(IMAGE_BASELINES)]
        obs_i, null_i, per_i = conditional_test(
            pd.concat([cp, ib], ignore_index=True),
            w.wells,
            vp.n_perm,
            np.random.default_rng([vp.seed, i, 1]),
            vp.statistic,
        )
        if len(per_i):
            top = per_i.idxmax()
            tests[-1].update(p_images=permutation_p(null_i, obs_i), image_predictor=f"{top[0]}/{top[1]}")
    tests = pd.DataFrame(tests)
    timing["conditional_test_s"] = time.perf_counter() - t2
    table = decide(summary, tests, kept, vp.alpha, vp.beat_on, "conditional", vp.statistic)
    # refit permutation test (the whole fit repeated) where asked
    t3 = time.perf_counter()
    chosen = refit_choice(table, vp.refit_scope, vp.refit_max) if inputs_factory is not None else []
    refits = []
    if chosen:
        inputs_cache: dict = {}
        for cytokine in chosen:
            r = table[table.cytokine == cytokine].iloc[0]
            arch = r.architecture
            aug = (
                cheapest(
                    tuple(
                        preds[
                            (preds.cytokine == cytokine) & (preds.architecture == arch)
                        ].augmentation.unique()
                    )
                )
                if vp.refit_augmentation == "cheapest"
                else r.augmentation
            )
            n = vp.n_perm_vit if arch in VIT_ARCHS else vp.n_perm_cnn
            if n < 1:
                continue
            kind = "vit" if arch in VIT_ARCHS else "cnn"
            try:
                if kind not in inputs_cache:
                    inputs_cache[kind] = inputs_factory((arch,))
                null, observed, seconds = refit_null(
                    inputs_cache[kind],
                    p.train,
                    cytokine,
                    arch,
                    aug,
                    n,
                    vp.seed + 7919 * (1 + kept.index(cytokine)),
                    vp.refit_stop_after,
                    vp.statistic,
                )
            except (ValueError, FileNotFoundError) as err:
                notes.append(f"refit test of {cytokine} skipped: {err}")
                continue
            log(
                f"verdict: refit null of {cytokine} ({arch}/{aug}): {len(null)} permutations, {seconds:.0f} s"
            )
            refits.append(
                {
                    "cytokine": cytokine,
                    "p_refit": permutation_p(null, observed),
                    "n_refit": len(null),
                    "refit_architecture": arch,
                    "refit_augmentation": aug,
                    "refit_observed": observed,
                    "refit_seconds": round(seconds, 1),
                }
            )
            nulls.setdefault(cytokine, {}).update(
                refit=null, refit_observed=observed, refit_model=f"{arch}/{aug}"
            )
    timing["refit_test_s"] = time.perf_counter() - t3
    if refits:
        tests = tests.merge(pd.DataFrame(refits), on="cytokine", how="left")
    table = decide(summary, tests, kept, vp.alpha, vp.beat_on, vp.test, vp.statistic)
    reported = pd.concat(
        [
            table[["architecture", "augmentation", "cytokine"]].dropna(),
            table[["best_baseline", "cytokine"]]
            .dropna()
            .assign(architecture=BASELINE_ARCH)
            .rename(columns={"best_baseline": "augmentation"})
            if "best_baseline" in table
            else None,
        ]
    )
    check_scores(scores, both, reported)
    # the study's claims
    model_means = evaluate.per_cytokine(scores[scores.architecture != BASELINE_ARCH])
    base_means = (
        scores[scores.architecture == BASELINE_ARCH]
        .groupby([*MODEL, "cytokine"], as_index=False)[METRICS]
        .mean()
    )
    hyp = hypotheses(model_means, base_means, p.evaluate.f1_cutoff, vp.alpha, vit_pretrained)
    truth = find_truth(data, list(w.wells.plate.astype(str).unique()))
    truth_table = score_truth(table, truth)
    timing["total_s"] = time.perf_counter() - t0
    return Verdict(
        table=table,
        summary=summary,
        fold_scores=scores,
        hypotheses=hyp,
        truth=truth_table,
        nulls=nulls,
        predictions=both,
        curves=result.curves,
        wells=w.wells,
        params=dataclasses.asdict(vp),
        notes=notes,
        timing={k: round(v, 2) for k, v in timing.items()},
    )


TABLE_COLUMNS = [
    "cytokine", "predictable", "architecture", "augmentation", "f1", "f1_lo", "f1_hi", "roc_auc",
    "roc_auc_lo", "roc_auc_hi", "average_precision", "average_precision_lo", "average_precision_hi",
    "prevalence", "mcc", "mcc_lo", "mcc_hi", "best_baseline", "best_baseline_f1", "best_baseline_f1_lo",
    "best_baseline_f1_hi", "best_baseline_auc_name", "best_baseline_roc_auc", "beats_baseline", "p", "q",
    "n_perm", "p_conditional", "n_conditional", "p_refit", "n_refit", "refit_architecture",
    "refit_augmentation", "refit_observed", "signal_in_images", "image_predictor", "image_predictor_f1",
    "image_predictor_roc_auc", "p_images", "q_images", "reason",
]  # fmt: skip


def save(v: Verdict, reports: Path, metrics: Path | None) -> list[Path]:
    """predictable.csv, hypotheses.csv, truth.csv and the per-model tables under reports/verdict/."""
    reports.mkdir(parents=True, exist_ok=True)
    detail = reports / "verdict"
    detail.mkdir(parents=True, exist_ok=True)
    extra = [c for c in v.table.columns if c.endswith("_f1") and c.split("_f1")[0] in BASELINES]
    cols = [c for c in TABLE_COLUMNS if c in v.table.columns] + extra
    v.table[cols].to_csv(reports / "predictable.csv", index=False)
    v.hypotheses.to_csv(reports / "hypotheses.csv", index=False)
    v.truth.to_csv(reports / "truth.csv", index=False)
    v.summary.to_csv(detail / "models_and_baselines.csv", index=False)
    v.fold_scores.to_csv(detail / "fold_scores.csv", index=False)
    long = v.summary.assign(model=lambda d: d.architecture + "/" + d.augmentation)[
        ["cytokine", "model", "architecture", "augmentation", "f1", "roc_auc"]
    ]
    long.to_csv(detail / "f1_models_and_baselines.csv", index=False)
    null_rows = []
    for cytokine, n in v.nulls.items():
        for kind in ("conditional", "refit"):
            if kind in n and len(n[kind]):
                obs = n["observed"] if kind == "conditional" else n["refit_observed"]
                null_rows.append(
                    pd.DataFrame({"cytokine": cytokine, "test": kind, "null": n[kind], "observed": obs})
                )
    nulls = (
        pd.concat(null_rows, ignore_index=True)
        if null_rows
        else pd.DataFrame(columns=["cytokine", "test", "null", "observed"])
    )
    nulls[nulls.test == "refit"].to_csv(detail / "refit_nulls.csv", index=False)
    # the conditional nulls are large: keep deciles only
    deciles = (
        nulls[nulls.test == "conditional"]
        .groupby("cytokine")
        .null.quantile([0.5, 0.9, 0.95, 0.99, 0.999])
        .unstack()
    )
    deciles.columns = [f"null_q{c}" for c in deciles.columns]
    deciles.to_csv(detail / "conditional_null_quantiles.csv")
    if metrics is not None:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(
            json.dumps(metrics_summary(v), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return [reports / "predictable.csv", reports / "hypotheses.csv", reports / "truth.csv"]


def metrics_summary(v: Verdict) -> dict:
    t = v.table
    out = {
        "alpha": v.params["alpha"],
        "test": v.params["test"],
        "n_cytokines_kept": int(len(t)),
        "n_predictable": int(t.predictable.sum()) if len(t) else 0,
        "predictable": sorted(t.cytokine[t.predictable]) if len(t) else [],
        "p_floor_conditional": round(1 / (v.params["n_perm"] + 1), 6),
        "seconds": v.timing,
    }
    ts = truth_summary(v.truth)
    if ts:
        out["truth"] = ts
    return out


def run(
    wrangled: Path,
    trained: Path,
    views: Path | None,
    vit_features: Path | None,
    data: Path | None,
    reports: Path,
    metrics: Path | None,
    p: params_mod.Params,
    log=print,
) -> Verdict:
    w = wrangle_mod.load(wrangled)
    result = train.load(trained)

    def inputs_factory(architectures: tuple[str, ...]) -> train.Inputs:
        if views is None or not Path(views).is_file():
            raise ValueError("no view bank (--views): cannot refit")
        needs_vit = any(a in VIT_ARCHS for a in architectures)
        pp = dataclasses.replace(p, train=dataclasses.replace(p.train, architectures=architectures))
        return train.load_inputs(wrangled, views, vit_features if needs_vit else None, pp)

    v = compute(w, result, p, inputs_factory, data, _vit_pretrained(vit_features), log=log)
    save(v, reports, metrics)
    from cytoops import report

    report.write(v, reports)
    t = v.table
    log(
        f"verdict: {int(t.predictable.sum())} of {len(t)} kept cytokines predictable "
        f"(q < {p.verdict.alpha}, beating every baseline on {p.verdict.beat_on}): "
        f"{', '.join(t.cytokine[t.predictable]) or 'none'} -> {reports / 'index.html'} "
        f"({v.timing['total_s']:.0f} s)"
    )
    ts = truth_summary(v.truth)
    if ts:
        log(
            f"verdict vs truth.json (SIMULATED plate): morphology found {ts['morphology_found']} of "
            f"{ts['morphology_kept']}; wrongly called: {ts['wrongly_called'] or 'none'}"
        )
    return v


def command(
    wrangled: Path = typer.Option(..., "--wrangled", help="Folder written by `cytoops wrangle`."),
    trained: Path = typer.Option(
        ..., "--trained", help="Folder written by `cytoops train` (folds.csv included)."
    ),
    views: Path | None = typer.Option(None, "--views", help="View bank (for the refit permutation test)."),
    vit_features: Path | None = typer.Option(None, "--features", help="ViT features (refits of a ViT head)."),
    data: Path | None = typer.Option(
        None, "--data", help="Plates folder: truth.json, where present, is scored."
    ),
    reports: Path = typer.Option(
        ..., "--reports", help="Folder for index.html, predictable.csv, hypotheses.csv."
    ),
    metrics: Path | None = typer.Option(None, "--metrics", help="verdict.json for `dvc metrics show`."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set verdict.n_perm_cnn=99"),
) -> None:
    """Say which cytokines images predict: baselines on the same folds, permutation tests, BH, the report."""
    p = params_mod.load(params_file, overrides)
    train.check_trained_folder(trained)  # one line, not a traceback, when nothing was trained
    run(
        wrangled,
        trained,
        views,
        vit_features,
        data,
        reports,
        metrics,
        p,
        log=lambda s: typer.echo(s, err=s.startswith("verdict: refit")),
    )


__all__ = [
    "Verdict",
    "baseline_features",
    "baseline_predictions",
    "benjamini_hochberg",
    "beats",
    "compute",
    "conditional_test",
    "count_nuclei",
    "decide",
    "exchangeable_strata",
    "find_truth",
    "fold_metrics",
    "holm",
    "hypotheses",
    "image_features",
    "permutation_p",
    "permuted_labels",
    "position_features",
    "refit_null",
    "run",
    "save",
    "score_predictions",
    "score_truth",
    "summarize",
    "weighted_metrics",
]
