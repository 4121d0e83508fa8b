"""verdict.transfer: does it hold on another plate? A leave-one-plate-out estimate beside the within-plate
one.

When the wrangled wells come from two or more plates, every family the verdict can fit itself is refit per
kept cytokine on every other plate's labelled wells and scored on the held-out plate's labelled wells: the
morphological profile's model (`profile.fit_predict`), cell count, the Part 1 embeddings where the plates
carry them, and the image-blind baselines (prevalence, position; `baselines.fit_predict`). ROC AUC per
held-out plate and pooled: the mean over held-out plates (as the within-plate AUC is a mean over folds), with
the verdict's cluster-bootstrap interval (treatment groups resampled within each held-out plate,
`metrics.summarize`).

The trainer's models (the study's CNNs and ViTs, the multitask and all-wells CNNs) are not re-trained here
(the verdict does not import the trainer): their rows say so in the `note` column. On one plate there is no
estimate: an empty table, and NaN in predictable.csv's `lopo_*` columns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cytoops import profile, tables
from cytoops.params import VerdictParams
from cytoops.verdict import baselines, call, metrics

REFIT = ("profile", "cell_count", "embeddings", "prevalence", "position")  # architectures refit per plate
POOLED = "pooled"  # the held_out_plate of the mean over held-out plates
COLUMNS = ["cytokine", "family", "predictor", "held_out_plate", "n_wells", "roc_auc", "lo", "hi", "note"]
TABLE_COLUMNS = ["lopo_roc_auc", "lopo_lo", "lopo_hi"]  # predictable.csv: the best predictor's pooled row
NOT_RETRAINED = "not re-trained per plate (a trainer's model): within-plate estimate only"
NO_PROFILE_TABLE = "no profile table (--profile): not refit per plate"


def plates(wells: pd.DataFrame) -> list[str]:
    """The plates of the wells table, in the order they come."""
    return list(dict.fromkeys(wells.plate.astype(str)))


def splits(plate_of: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(held-out plate, training positions, test positions) for each plate in `plate_of` (one per well):
    the test positions are that plate's wells, the training positions every other plate's."""
    plate_of = np.asarray(plate_of).astype(str)
    return [
        (plate, np.flatnonzero(plate_of != plate), np.flatnonzero(plate_of == plate))
        for plate in dict.fromkeys(plate_of)
    ]


def refit_features(
    features: dict[str, pd.DataFrame | None], profile_table: pd.DataFrame | None
) -> dict[str, pd.DataFrame | None]:
    """`baselines.baseline_features` plus the profile's features under `profile` (row i = well i)."""
    out = dict(features)
    if profile_table is not None:
        out["profile"] = profile_table[profile.feature_columns(profile_table)].reset_index(drop=True)
    return {name: out[name] for name in REFIT if name in out}


def _fit(
    name: str, table: pd.DataFrame | None, train: np.ndarray, y: np.ndarray, test: np.ndarray, seed: int
) -> np.ndarray:
    """P(responder) of the wells `test` from the predictor `name` fitted on the wells `train` (labels y)."""
    if table is None:  # prevalence: a constant
        return np.full(len(test), 0.5)
    if name == "profile":
        return profile.fit_predict(table.iloc[train], y, table.iloc[test], seed)
    x = table.to_numpy(float)
    return baselines.fit_predict(x[train], y, x[test])


def _unfit(y_train: np.ndarray, y_test: np.ndarray) -> str:
    """Why a held-out plate cannot be scored ("" when it can): each side needs both classes."""
    if len(np.unique(y_train)) < 2:
        return "the other plates' labelled wells hold one class: not fitted"
    if len(np.unique(y_test)) < 2:
        return "the held-out plate's labelled wells hold one class: no AUC"
    return ""


def predictions(
    wells: pd.DataFrame,
    labels: pd.DataFrame,
    kept: list[str],
    features: dict[str, pd.DataFrame | None],
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(out-of-plate probabilities, rows (`COLUMNS`) of the held-out plates that could not be scored).

    The probabilities are in the layout of train's predictions (`tables.PREDICTIONS`): repeat 0, fold = the
    held-out plate's position in `plates(wells)`, augmentation "none". Every labelled well of a kept cytokine
    is predicted by each predictor of `features` fitted on the labelled wells of every other plate, unless
    either side holds one class (then the plate is a row of the second table, with the reason).
    """
    plate_of = wells.plate.astype(str).to_numpy()
    fold_of = {p: i for i, p in enumerate(plates(wells))}
    out, missing = [], []
    for cytokine in kept:
        lab = labels[labels.cytokine == cytokine]
        idx, y = lab.well_index.to_numpy(int), lab.label.to_numpy(int)
        balanced = lab.balanced.astype(bool).to_numpy()
        for plate, trn, tst in splits(plate_of[idx]):
            why = _unfit(y[trn], y[tst])
            for name, table in features.items():
                if why:
                    missing.append(
                        {"cytokine": cytokine, "family": call.family(name), "predictor": f"{name}/none",
                         "held_out_plate": plate, "n_wells": len(tst), "note": why}
                    )  # fmt: skip
                    continue
                prob = _fit(name, table, idx[trn], y[trn], idx[tst], seed)
                out.append(
                    pd.DataFrame(
                        {
                            "architecture": name,
                            "augmentation": baselines.NO_AUGMENTATION,
                            "cytokine": cytokine,
                            "repeat": 0,
                            "fold": fold_of[plate],
                            "well_index": idx[tst],
                            "plate": plate,
                            "well": wells.well.to_numpy()[idx[tst]],
                            "label": y[tst],
                            "balanced": balanced[tst],
                            "prob": prob,
                        }
                    )
                )
    preds = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=tables.PREDICTIONS)
    return preds, pd.DataFrame(missing, columns=COLUMNS)


def estimate(preds: pd.DataFrame, wells: pd.DataFrame, vp: VerdictParams) -> pd.DataFrame:
    """ROC AUC with its cluster-bootstrap interval per predictor, cytokine and held-out plate, and pooled."""
    if preds.empty:
        return pd.DataFrame(columns=COLUMNS)
    order = plates(wells)
    rows = []
    parts = [(POOLED, preds), *((order[int(f)], g) for f, g in preds.groupby("fold", sort=True))]
    for held_out, part in parts:
        summary, _ = metrics.summarize(part, wells, vp.n_boot, vp.level, vp.seed)
        n_wells = part.groupby(["architecture", "cytokine"]).well_index.nunique()
        for r in summary.itertuples(index=False):
            rows.append(
                {
                    "cytokine": r.cytokine,
                    "family": call.family(r.architecture),
                    "predictor": f"{r.architecture}/{r.augmentation}",
                    "held_out_plate": held_out,
                    "n_wells": int(n_wells[(r.architecture, r.cytokine)]),
                    "roc_auc": r.roc_auc,
                    "lo": getattr(r, "roc_auc_lo", np.nan),
                    "hi": getattr(r, "roc_auc_hi", np.nan),
                    "note": "",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def not_refit(trained: pd.DataFrame, refit: dict) -> pd.DataFrame:
    """One row per cytokine and family of `trained` (cytokine, architecture) that was not refit per plate."""
    rows = []
    for r in trained[~trained.architecture.isin(list(refit))].itertuples(index=False):
        note = NO_PROFILE_TABLE if r.architecture == "profile" else NOT_RETRAINED
        rows.append({"cytokine": r.cytokine, "family": call.family(r.architecture), "note": note})
    frame = pd.DataFrame(rows, columns=["cytokine", "family", "note"]).drop_duplicates()
    return frame.assign(predictor="", held_out_plate=POOLED, n_wells=np.nan).reindex(columns=COLUMNS)


def leave_one_plate_out(
    wells: pd.DataFrame,
    labels: pd.DataFrame,
    kept: list[str],
    features: dict[str, pd.DataFrame | None],
    trained: pd.DataFrame,
    vp: VerdictParams,
) -> pd.DataFrame:
    """The table of leave_one_plate_out.csv (`COLUMNS`); empty when the wells come from one plate.

    features: the refit predictors (`refit_features`); trained: the (cytokine, architecture) pairs of train's
    predictions, whose families that are not refit get a row with a note, never a number.
    """
    if len(plates(wells)) < 2:
        return pd.DataFrame(columns=COLUMNS)
    preds, missing = predictions(wells, labels, kept, features, vp.seed)
    parts = [f for f in (estimate(preds, wells, vp), missing, not_refit(trained, features)) if len(f)]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    rank = {c: i for i, c in enumerate(kept)}
    table["_c"] = table.cytokine.map(rank)
    table["_p"] = table.held_out_plate == POOLED
    return (
        table.sort_values(["_c", "family", "predictor", "_p", "held_out_plate"], kind="mergesort")
        .drop(columns=["_c", "_p"])
        .reset_index(drop=True)
    )


def attach(table: pd.DataFrame, lopo: pd.DataFrame) -> pd.DataFrame:
    """The verdict table with `lopo_roc_auc`, `lopo_lo`, `lopo_hi`: the pooled leave-one-plate-out estimate of
    each cytokine's best image predictor when it was refit per plate, NaN otherwise (and on one plate)."""
    pooled = lopo[(lopo.held_out_plate == POOLED) & lopo.roc_auc.notna()].set_index(["cytokine", "predictor"])
    nothing = pd.Series(np.nan, index=table.index)
    keys = list(zip(table.get("cytokine", nothing), table.get("best_predictor", nothing), strict=True))
    out = table.copy()
    for column, source in zip(TABLE_COLUMNS, ("roc_auc", "lo", "hi"), strict=True):
        out[column] = [float(pooled.at[k, source]) if k in pooled.index else np.nan for k in keys]
    return out
