"""verdict.permutation: the calibrated test behind the call.

H0: the images say nothing about the label beyond the well's position on the plate. Every image predictor's
out-of-fold probabilities are held fixed and the test-fold labels are permuted within cells of (plate, test
fold, ring: edge / next-to-edge / inner), by treatment group (`exchangeable_strata`). The statistic is the
best predictor's mean per-fold ROC AUC, recomputed as the maximum over all predictors in every permutation
(max-T), so picking the best predictor is part of the null. Under H0 each test fold's predictions come from
wells whose labels the test fold never touched, and within a ring the labels are exchangeable, so the test
is exact: p = (b + 1) / (n + 1). Permuting within rings is what makes a plate artefact (edge wells that both
look different and read differently) not count as "predictable from images".
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cytoops.verdict.metrics import MODEL

RINGS = 3  # edge, next-to-edge, inner


def ring(wells: pd.DataFrame) -> np.ndarray:
    """Distance of each well from the nearest plate edge, in wells, capped at RINGS - 1 (per plate)."""
    out = np.zeros(len(wells), dtype=int)
    for _, part in wells.groupby(wells.plate.astype(str), sort=False):
        row, col = part.row.to_numpy(int), part.col.to_numpy(int)
        n_rows, n_cols = row.max() + 1, col.max() + 1
        dist = np.minimum.reduce([row, col, n_rows - 1 - row, n_cols - 1 - col])
        out[wells.index.get_indexer(part.index)] = np.minimum(dist, RINGS - 1)
    return out


def permutation_p(null: np.ndarray, observed: float) -> float:
    """Empirical p = (b + 1) / (n + 1), b = permutations whose statistic reaches the observed one."""
    null = np.asarray(null, dtype=float)
    null = null[~np.isnan(null)]
    b = int(np.sum(null >= observed - 1e-12))
    return (b + 1) / (len(null) + 1)


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
    predictions: pd.DataFrame, wells: pd.DataFrame, n_perm: int, rng: np.random.Generator
) -> tuple[float, np.ndarray, pd.Series]:
    """Max-T permutation test of one cytokine's out-of-fold predictions, every predictor at once.

    `predictions` holds every image predictor of ONE cytokine (all repeats and folds), each scored on the
    same test wells; a predictor missing a fold is left out. Labels move within (plate, ring, the well's fold
    in every repeat), so each fold keeps its count of responders; the per-fold ROC AUC is Mann-Whitney on
    ranks, vectorized over the permutations. Returns (observed max mean AUC, null of the max (n_perm,),
    mean AUC per predictor).
    """
    units = predictions[["repeat", "fold"]].drop_duplicates()
    n_units_of = predictions.drop_duplicates([*MODEL, "repeat", "fold"]).groupby(MODEL).size()
    complete = [k for k, n in n_units_of.items() if n == len(units)]
    predictions = predictions[pd.MultiIndex.from_frame(predictions[MODEL]).isin(complete)]
    all_wells = np.sort(predictions.well_index.unique())
    pos = {w_: i for i, w_ in enumerate(all_wells)}
    label = (
        predictions.drop_duplicates("well_index").set_index("well_index").label.reindex(all_wells).to_numpy()
    )
    fold_table = (
        predictions.drop_duplicates(["well_index", "repeat"])
        .pivot(index="well_index", columns="repeat", values="fold")
        .reindex(all_wells)
    )
    rings = ring(wells)[all_wells]
    cells = fold_table.astype(str).agg("/".join, axis=1).to_numpy() + "|ring" + rings.astype(str)
    strata = exchangeable_strata(wells.plate.to_numpy()[all_wells], wells.group.to_numpy()[all_wells], cells)
    y_perm = permuted_labels(label, strata, n_perm, rng)
    total_obs = np.zeros(len(complete))
    total_null = np.zeros((n_perm, len(complete)))
    n_units = 0
    for _, u in predictions.groupby(["repeat", "fold"], sort=True):
        test_wells = np.sort(u.well_index.unique())
        cols = np.array([pos[w_] for w_ in test_wells])
        prob = np.zeros((len(complete), len(test_wells)), dtype=np.float64)
        for m, (arch, aug) in enumerate(complete):
            g = u[(u.architecture == arch) & (u.augmentation == aug)]
            prob[m, np.searchsorted(test_wells, g.well_index.to_numpy())] = g.prob.to_numpy()
        y_obs, y_null = label[cols].astype(np.float64), y_perm[:, cols].astype(np.float64)
        n_pos = y_obs.sum()
        n_neg = len(cols) - n_pos
        if n_pos == 0 or n_neg == 0:
            continue  # AUC undefined on this fold (as in evaluate.fold_scores): left out of the mean
        ranks = stats.rankdata(prob, axis=1)  # AUC = (sum of positives' mid-ranks - P(P+1)/2) / (P N)
        offset, scale = n_pos * (n_pos + 1) / 2, n_pos * n_neg
        total_obs += (ranks @ y_obs - offset) / scale
        total_null += (y_null @ ranks.T - offset) / scale
        n_units += 1
    per_model = pd.Series(
        total_obs / max(n_units, 1),
        index=pd.MultiIndex.from_tuples(complete, names=MODEL)
        if complete
        else pd.MultiIndex.from_tuples([], names=MODEL),
        dtype=float,
    )
    if not complete or not n_units:
        return np.nan, np.array([]), per_model
    return float(per_model.max()), (total_null / n_units).max(axis=1), per_model
