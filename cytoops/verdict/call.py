"""verdict.call: the verdict table, one row per kept cytokine.

A cytokine is **predictable from images** when the permutation test (`permutation.conditional_test`, over
every image predictor: the study's architectures, ours, the profile and cell count) gives q < alpha after
Benjamini-Hochberg across the kept cytokines (`scipy.stats.false_discovery_control`), AND the best image
predictor's mean ROC AUC is above every image-blind baseline's (prevalence, position).

Beside the call, never as gates, each row says which family predicts best, and with paired cluster-bootstrap
intervals of the AUC difference: whether the study's best architecture adds anything over the morphological
profile, whether the best image predictor beats the Part 1 embeddings, and whether cell count alone does as
well as the best.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cytoops.params import architecture_kind
from cytoops.verdict.baselines import BASELINES, IMAGE_BLIND, IMAGE_READOUTS
from cytoops.verdict.metrics import METRICS

FAMILIES = {
    "cnn": "study CNN",
    "vit": "study ViT",
    "profile": "profile",
    "multitask": "multitask CNN",
    "cnn_all": "all-wells CNN",  # the Wider CNN on every labelled well, class-weighted
    **{name: name.replace("_", " ") for name in IMAGE_READOUTS},
}


def family(architecture: str) -> str:
    """The family of a predictor: a study kind, one of ours, or a baseline's name."""
    if architecture in BASELINES:
        return FAMILIES.get(architecture, architecture)
    return FAMILIES[architecture_kind(architecture)]


def image_predictors(summary: pd.DataFrame) -> pd.Series:
    """Mask of the rows of `summary` (or predictions) that read the thumbnails."""
    return ~summary.architecture.isin(BASELINES) | summary.architecture.isin(IMAGE_READOUTS)


def paired_difference(draws: dict, cytokine: str, a: tuple, b: tuple, level: float) -> tuple[float, float]:
    """Percentile interval of the AUC difference a - b over the shared bootstrap draws."""
    da, db = draws.get((cytokine, *a)), draws.get((cytokine, *b))
    if da is None or db is None:
        return np.nan, np.nan
    diff = da["roc_auc"] - db["roc_auc"]
    if np.isnan(diff).all():
        return np.nan, np.nan
    lo, hi = np.nanpercentile(diff, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def _best(frame: pd.DataFrame) -> pd.Series | None:
    if frame.empty or frame.roc_auc.isna().all():
        return None
    return frame.sort_values(
        ["roc_auc", "f1", "architecture", "augmentation"], ascending=[False, False, True, True]
    ).iloc[0]


def _compare(row: dict, name: str, best: pd.Series, other: pd.Series | None, draws, level) -> None:
    """Columns <name>_auc_diff, _lo, _hi: best image predictor minus `other`, paired."""
    if other is None:
        row.update({f"{name}_auc_diff": np.nan, f"{name}_lo": np.nan, f"{name}_hi": np.nan})
        return
    lo, hi = paired_difference(
        draws,
        row["cytokine"],
        (best.architecture, best.augmentation),
        (other.architecture, other.augmentation),
        level,
    )
    row.update({f"{name}_auc_diff": best.roc_auc - other.roc_auc, f"{name}_lo": lo, f"{name}_hi": hi})


def decide(
    summary: pd.DataFrame,
    draws: dict,
    tests: pd.DataFrame,
    kept: list[str],
    problems: dict[str, str],
    alpha: float,
    level: float,
) -> pd.DataFrame:
    """One row per kept cytokine. summary: `metrics.summarize` of every predictor; tests: cytokine, p,
    n_perm; problems: cytokine -> why it could not be cross-validated (reported, p = 1)."""
    images = summary[image_predictors(summary)]
    blind = summary[summary.architecture.isin(IMAGE_BLIND)]
    emb = summary[summary.architecture == "embeddings"]
    tests = tests.set_index("cytokine") if len(tests) else pd.DataFrame(columns=["p", "n_perm"])
    rows = [
        _cytokine_row(
            cytokine,
            images[images.cytokine == cytokine],
            blind[blind.cytokine == cytokine],
            emb[emb.cytokine == cytokine],
            tests,
            problems.get(cytokine),
            draws,
            level,
        )
        for cytokine in kept
    ]
    table = pd.DataFrame(rows)
    for col in ("p", "n_perm", "roc_auc", "best_blind_roc_auc", "reason", "beats_blind"):
        if col not in table:
            table[col] = np.nan
    p = table.p.astype(float).fillna(1.0).to_numpy()
    table["p"] = p
    table["q"] = stats.false_discovery_control(p, method="bh") if len(p) else []
    table["predictable"] = (table.q < alpha) & table.beats_blind.fillna(False).astype(bool)
    table["reason"] = [_reason(r, alpha) for r in table.itertuples()]
    if "best_vs_cell_count_lo" in table:
        table["cell_count_alone"] = table.best_vs_cell_count_lo <= 0  # the best does not beat cell count
    return table


def _cytokine_row(
    cytokine: str,
    images: pd.DataFrame,
    blind: pd.DataFrame,
    emb: pd.DataFrame,
    tests: pd.DataFrame,
    problem: str | None,
    draws: dict,
    level: float,
) -> dict:
    """One cytokine's row before the q: best image predictor and blind baseline, family AUCs, comparisons.

    images, blind, emb: the cytokine's rows of the summary; tests: p and n_perm by cytokine (it may lack
    one); problem: why it could not be cross-validated, if so.
    """
    row: dict = {"cytokine": cytokine}
    mine = images.assign(family=lambda d: [family(a) for a in d.architecture])
    best = _best(mine)
    b = _best(blind)
    if b is not None:
        row.update(best_blind=b.architecture, best_blind_roc_auc=b.roc_auc)
    if problem is not None or best is None:
        row.update(reason=problem if problem is not None else "no predictor could be scored on this cytokine")
        return row
    row.update(
        best_predictor=f"{best.architecture}/{best.augmentation}",
        best_family=best.family,
        **{k: best[k] for k in [*METRICS, "roc_auc_lo", "roc_auc_hi", "f1_lo", "f1_hi"] if k in best.index},
    )
    for fam, part in mine.groupby("family"):
        row[f"auc_{fam.replace(' ', '_')}"] = part.roc_auc.max()
    study = _best(mine[mine.family.isin([FAMILIES["cnn"], FAMILIES["vit"]])])
    prof = _best(mine[mine.family == FAMILIES["profile"]])
    count = _best(mine[mine.family == FAMILIES["cell_count"]])
    if study is not None and prof is not None:
        _compare(row, "study_vs_profile", study, prof, draws, level)
    _compare(row, "best_vs_embeddings", best, _best(emb), draws, level)
    _compare(row, "best_vs_cell_count", best, count, draws, level)
    if cytokine in tests.index:
        row.update(p=tests.loc[cytokine, "p"], n_perm=tests.loc[cytokine, "n_perm"])
    row["beats_blind"] = bool(b is None or best.roc_auc > b.roc_auc)
    return row


def _reason(r, alpha: float) -> str:
    """The reason of one row of the table (a namedtuple): its problem, or why it is (not) predictable."""
    if isinstance(r.reason, str):
        return r.reason
    if r.predictable:
        return f"q = {r.q:.2g} < {alpha}; AUC {r.roc_auc:.2f} > {r.best_blind} {r.best_blind_roc_auc:.2f}"
    if not r.beats_blind:
        return (
            f"the images do no better than {r.best_blind} (AUC {r.best_blind_roc_auc:.2f} vs {r.roc_auc:.2f})"
        )
    return f"not significant: q = {r.q:.2g} >= {alpha}"
