"""profile: a CellProfiler-style morphological profile per well, and the regularized model that reads it.

The field's answer on tens to hundreds of wells (Way lab; Caicedo et al. 2017): segment, measure, aggregate
per well, normalize to the plate's negative controls, select features, fit a regularized linear model.

- Segmentation (scikit-image): nuclei from the nucleus channel (Otsu threshold of the smoothed channel, split
  by a watershed seeded at local maxima); cells grown from the nuclei by up to `CELL_GROWTH` px inside the
  actin foreground; cytoplasm = cell minus nucleus.
- Measurements (cp-measure, CellProfiler's own measurement code as a library): per nucleus, size and shape
  and intensity and texture of the nucleus channel; per cell, size and shape, intensity and texture of actin
  and mito, radial distribution of mito, actin-mito Pearson correlation. At 64 px a well holds 10-50 cells,
  so per-object Zernike and granularity spectra are left out (noise at this resolution, and slow).
- Aggregation: per well, the median and the standard deviation of every per-object measurement, plus the
  cell count and the fraction of the well covered by cells.
- Normalization (pycytominer `normalize`, mad_robustize): to the plate's negative-control wells. This uses
  no cytokine label (like wrangle's per-plate image scaling, which every model shares); feature selection
  is fitted inside each training fold (`fit_predict`).
- Model: standardized L2 logistic regression with class weights, its strength chosen by an inner 3-fold
  cross-validation (ROC AUC) on the training fold's wells only (`fit_predict`). The inner split is by well,
  not by treatment: it only picks the penalty, and grouped inner folds often hold one class.

Pure core: `segment`, `measure_well`, `profile_wells`, `fit_predict`. `command` reads and writes files.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import typer

log = logging.getLogger(__name__)

CELL_GROWTH = 5  # px a cell may extend beyond its nucleus (cell bodies are ~2-3 nuclear radii at 64 px)
META = ["plate", "well", "role"]
COUNT = "cell_count"  # the one-feature baseline reads this column


def segment(image: np.ndarray, channels: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(nuclei, cells) label images of one well (C, S, S), scaled 0..1; 0 is background."""
    from scipy import ndimage
    from skimage import feature, filters, measure, segmentation

    nucleus = filters.gaussian(image[channels.index("nucleus")], 1.0)
    if np.ptp(nucleus) <= 1e-6:
        empty = np.zeros(nucleus.shape, dtype=np.int32)
        return empty, empty
    mask = nucleus > filters.threshold_otsu(nucleus)
    mask = ndimage.binary_opening(mask)
    peaks = feature.peak_local_max(nucleus, min_distance=2, labels=measure.label(mask))
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    nuclei = segmentation.watershed(-nucleus, markers, mask=mask).astype(np.int32)
    grown = segmentation.expand_labels(nuclei, CELL_GROWTH)
    if "actin" in channels:
        actin = filters.gaussian(image[channels.index("actin")], 1.0)
        if np.ptp(actin) > 1e-6:
            grown = np.where((actin > filters.threshold_otsu(actin)) | (nuclei > 0), grown, 0)
    return nuclei, grown.astype(np.int32)


def _objects(labels: np.ndarray, image: np.ndarray, channels, measured: dict[str, tuple[str, ...]], prefix):
    """Per-object measurements of one object set: {feature name: values per object}."""
    from cp_measure.bulk import get_core_measurements, get_correlation_measurements

    core, corr = get_core_measurements(), get_correlation_measurements()
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty objects give NaN measurements; they are aggregated as NaN
        for name, value in core["sizeshape"](labels, None, calculate_advanced=False).items():
            out[f"{prefix}_{name}"] = value
        for kind, names in measured.items():
            for channel in names:
                pixels = image[channels.index(channel)]
                kwargs = {"gray_levels": 64} if kind == "texture" else {}
                for name, value in core[kind](labels, pixels, **kwargs).items():
                    out[f"{prefix}_{channel}_{name}"] = value
        if prefix == "Cells" and {"actin", "mito"} <= set(channels):
            pair = corr["pearson"](image[channels.index("actin")], image[channels.index("mito")], labels)
            for name, value in pair.items():
                out[f"{prefix}_actin_mito_{name}"] = value
    return out


def measure_well(image: np.ndarray, channels: tuple[str, ...]) -> dict[str, float]:
    """One well (C, S, S), scaled 0..1: cell count, coverage and per-object medians and spreads."""
    image = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)  # texture needs values in [0, 1]
    nuclei, cells = segment(image, channels)
    row: dict[str, float] = {COUNT: float(nuclei.max()), "cell_coverage": float((cells > 0).mean())}
    for ch in channels:
        row[f"well_mean_{ch}"] = float(image[channels.index(ch)].mean())
    if nuclei.max() == 0:
        return row
    others = tuple(c for c in channels if c != "nucleus")
    sets = {
        "Nuclei": (nuclei, {"intensity": ("nucleus",), "texture": ("nucleus",)}),
        "Cells": (cells, {"intensity": others, "texture": others, "radial_distribution": others[-1:]}),
    }
    for prefix, (labels, measured) in sets.items():
        for name, values in _objects(labels, image, channels, measured, prefix).items():
            values = np.asarray(values, dtype=float)
            values = values[np.isfinite(values)]
            row[f"{name}_median"] = float(np.median(values)) if len(values) else np.nan
            row[f"{name}_sd"] = float(np.std(values)) if len(values) > 1 else np.nan
    return row


def profile_wells(images: np.ndarray, wells: pd.DataFrame, channels: tuple[str, ...], progress=None):
    """Per-well profile (row i = well i): META columns, `cell_count`, then features normalized per plate to
    its negative-control wells (robust z: median and MAD of the controls; standardized to the plate when it
    has fewer than 3 controls). Features that are constant or missing on a plate are dropped."""
    from pycytominer import normalize

    if "nucleus" not in channels:
        raise ValueError(f"the profile segments nuclei on a 'nucleus' channel; the plates have {channels}")
    rows = []
    for i in range(len(images)):
        rows.append(measure_well(images[i], channels))
        if progress is not None:
            progress(1)
    raw = pd.DataFrame(rows)
    raw = raw.loc[:, raw.notna().mean() >= 0.9]  # measurements most wells lack (no objects) are not features
    raw = raw.fillna(raw.median())
    features = [c for c in raw.columns if c != COUNT]
    meta = wells[["plate", "well"]].astype(str).reset_index(drop=True)
    meta["role"] = wells.role.astype(str).to_numpy() if "role" in wells else "sample"
    parts = []
    for plate in meta.plate.unique():
        on = (meta.plate == plate).to_numpy()
        frame = pd.concat(
            [meta[on].reset_index(drop=True), raw.loc[on, features].reset_index(drop=True)], axis=1
        )
        controls = int((frame.role == "negative_control").sum())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            normed = normalize(
                frame,
                features=features,
                meta_features=META,
                samples="role == 'negative_control'" if controls >= 3 else "all",
                method="mad_robustize" if controls >= 3 else "standardize",
                mad_robustize_epsilon=1e-6,
            )
        parts.append(normed.set_index(meta.index[on]))
    out = pd.concat(parts).sort_index()
    out.insert(3, COUNT, raw[COUNT].to_numpy())
    values = out[features].replace([np.inf, -np.inf], np.nan)
    keep = [c for c in features if values[c].notna().all() and values[c].std() > 0]
    return out[[*META, COUNT, *keep]]


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in META]


def _select(x: pd.DataFrame) -> list[str]:
    """pycytominer's variance and correlation filters, fitted on the rows given (a training fold)."""
    from pycytominer import feature_select

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kept = feature_select(
            x,
            features=list(x.columns),
            operation=["variance_threshold", "correlation_threshold"],
            corr_threshold=0.95,
        )
    return list(kept.columns)


def fit_predict(x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame, seed: int) -> np.ndarray:
    """P(responder) of the test wells from an L2 logistic regression fitted on the training wells only.

    Feature selection, scaling and the regularization strength (inner 3-fold CV on ROC AUC) all
    see the training wells alone; classes are weighted so that every labelled well can be used.
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_train = np.asarray(y_train).astype(int)
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training wells hold one class only")
    columns = _select(x_train)
    n_inner = min(3, int(np.bincount(y_train).min()))
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=np.logspace(-2, 1, 7),
            penalty="l1",
            solver="liblinear",
            cv=StratifiedKFold(max(n_inner, 2), shuffle=True, random_state=seed),
            scoring="roc_auc",
            class_weight="balanced",
            max_iter=5000,
            random_state=seed,  # liblinear shuffles: seeded, so a refit gives the same numbers
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter at the weakest penalties
        model.fit(x_train[columns].to_numpy(), y_train)
    return model.predict_proba(x_test[columns].to_numpy())[:, 1]


# ---- stage I/O -------------------------------------------------------------------------------------------


def save(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)


def load(path: Path) -> pd.DataFrame:
    table = pd.read_parquet(path)
    for c in META:
        table[c] = table[c].astype(str)
    return table


def command(
    wrangled: Path = typer.Option(..., "--wrangled", help="Folder written by `cytoops wrangle`."),
    out: Path = typer.Option(..., "--out", help="Parquet file for the per-well profile."),
) -> None:
    """Segment nuclei and cells, measure them (cp-measure), aggregate per well, normalize to the controls."""
    from tqdm import tqdm

    from cytoops import wrangle

    w = wrangle.load(wrangled)
    with tqdm(total=len(w.images), desc="profile", unit="well") as bar:
        table = profile_wells(w.images, w.wells, w.channels, progress=bar.update)
    save(table, out)
    log.info(f"profile: {len(table)} wells x {len(feature_columns(table))} features -> {out}")
