"""verdict.baselines: simple predictors fitted on the very same folds as the models.

- prevalence: a constant (ROC AUC 0.5): what knowing nothing gives;
- position: logistic regression on the well's row, column, edge flag and distance from the plate centre
  (a plate artefact, e.g. evaporation at the edge, reads without an image);
- cell_count: logistic regression on the number of nuclei in the well (the profile's segmentation, or a
  count of nuclear peaks without a profile): the simplest read-out of an image (Seal et al. 2026);
- embeddings: logistic regression on the plate's `embeddings.csv` (the study's "Part 1"), where present.

prevalence and position see no image: they are what "predictable from images" must beat. cell_count reads
the thumbnails, so it is one of the image predictors of the call and a column of its own.
Every baseline is fitted on the training fold's labelled wells only, with classes weighted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cytoops import linear, tables, wrangle
from cytoops.linear import Linear

BASELINES = ("prevalence", "position", "cell_count", "embeddings")  # their predictions' architecture
NO_AUGMENTATION = "none"  # a baseline reads each well once
IMAGE_BLIND = ("prevalence", "position")  # what "predictable from images" must beat
IMAGE_READOUTS = ("cell_count",)  # baselines that read the thumbnails: image predictors of the call


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


def position_features(wells: pd.DataFrame) -> pd.DataFrame:
    """Per well: row, column, edge flag and distance from the plate centre (rows and columns separately)."""
    row, col = wells.row.to_numpy(float), wells.col.to_numpy(float)
    return pd.DataFrame(
        {
            "row": row,
            "col": col,
            "edge": wells.edge.to_numpy(float),
            "row_from_centre": np.abs(row - (row.max() + row.min()) / 2) if len(row) else row,
            "col_from_centre": np.abs(col - (col.max() + col.min()) / 2) if len(col) else col,
        }
    )


def fit_linear(x_train: np.ndarray, y_train: np.ndarray) -> Linear:
    """Standardized, class-weighted logistic regression of two classes; a missing value is its column's
    training mean. As plain numbers (`linear.Linear`): a served cell-count model stores it as JSON."""
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training wells hold one class only")
    mean = np.nanmean(x_train, axis=0)
    fill = np.where(np.isnan(mean), 0.0, mean)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    model.fit(np.where(np.isnan(x_train), fill, x_train), y_train)
    return linear.from_pipeline(model)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """`fit_linear` on the training fold, applied to the test wells; constant on one class."""
    if len(np.unique(y_train)) < 2:
        return np.full(len(x_test), float(np.mean(y_train)) if len(y_train) else 0.5)
    return fit_linear(x_train, y_train).probability(x_test)


def count_cells(images: np.ndarray, channels: tuple[str, ...], counter: str) -> np.ndarray:
    """Nuclei per well of (N, C, S, S) scaled images: `segmentation` counts the profile's nuclei
    (`profile.cell_count`), `peaks` counts nuclear peaks (`count_nuclei`)."""
    if "nucleus" not in channels:
        raise ValueError(f"cell count reads a 'nucleus' channel; the images have {channels}")
    if counter == "segmentation":
        from cytoops import profile

        return np.array([float(profile.cell_count(im, channels)) for im in images])
    if counter == "peaks":
        k = channels.index("nucleus")
        return np.array([float(count_nuclei(im[k])) for im in images])
    raise ValueError(f"unknown cell counter {counter!r}: segmentation or peaks")


def baseline_predictions(
    folds: pd.DataFrame, labels: pd.DataFrame, wells: pd.DataFrame, features: dict[str, pd.DataFrame | None]
) -> pd.DataFrame:
    """Out-of-fold probabilities of every baseline on the given folds, in the layout of the model predictions.

    `folds` (train's folds.csv: cytokine, repeat, well_index, fold, balanced) lists every labelled well of a
    cytokine; `features` maps a baseline name to a per-well table (row i = well i), `None` for prevalence.
    Rows carry the baseline's name as architecture and augmentation "none".
    """
    lab = labels.set_index(["cytokine", "well_index"]).label
    out = []
    for (cytokine, repeat), f in folds.groupby(["cytokine", "repeat"], sort=False):
        idx = f.well_index.to_numpy()
        y = lab.loc[cytokine].reindex(idx).to_numpy().astype(int)
        fold_of, balanced = f.fold.to_numpy(), f.balanced.astype(bool).to_numpy()
        for fold in np.unique(fold_of):
            test, trn = fold_of == fold, fold_of != fold
            for name, table in features.items():
                if table is None:
                    prob = np.full(int(test.sum()), 0.5)
                else:
                    x = table.to_numpy(float)
                    prob = fit_predict(x[idx[trn]], y[trn], x[idx[test]])
                out.append(
                    pd.DataFrame(
                        {
                            "architecture": name,
                            "augmentation": NO_AUGMENTATION,
                            "cytokine": cytokine,
                            "repeat": repeat,
                            "fold": fold,
                            "well_index": idx[test],
                            "plate": wells.plate.to_numpy()[idx[test]],
                            "well": wells.well.to_numpy()[idx[test]],
                            "label": y[test],
                            "balanced": balanced[test],
                            "prob": prob,
                        }
                    )
                )
    columns = tables.PREDICTIONS
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=columns)


def baseline_features(
    w: wrangle.Wrangled, profile: pd.DataFrame | None = None
) -> dict[str, pd.DataFrame | None]:
    """The baselines this data allows (embeddings only when the plates carry them)."""
    if profile is not None:
        count = profile[["cell_count"]].reset_index(drop=True).astype(float)
    elif "nucleus" in w.channels:
        count = pd.DataFrame({"cell_count": count_cells(w.images, w.channels, "peaks")})
    else:
        count = None
    feats: dict[str, pd.DataFrame | None] = {"prevalence": None, "position": position_features(w.wells)}
    if count is not None:
        feats["cell_count"] = count
    emb = w.embeddings.select_dtypes("number") if len(w.embeddings.columns) else pd.DataFrame()
    if emb.shape[1] and not emb.isna().all().all():
        feats["embeddings"] = emb.reset_index(drop=True)
    return feats
