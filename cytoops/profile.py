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
- Normalization (pycytominer's mad_robustize statistics): to the plate's negative-control wells; each
  plate's statistics are kept (`Normalization`, the stage's `--stats` file) so a served model normalizes a
  new well as its training plate was. This uses no cytokine label (like wrangle's per-plate image scaling,
  which every model shares); feature selection is fitted inside each training fold (`fit`).
- Model: standardized L1 logistic regression with class weights, its strength chosen by an inner 3-fold
  cross-validation (ROC AUC) on the training fold's wells only (`fit`). The inner split is by well,
  not by treatment: it only picks the penalty, and grouped inner folds often hold one class.

Pure core: `segment`, `measure_well`, `profile_plates` (the table and each plate's `Normalization`), `fit`
(a `ProfileModel`, plain numbers: a served model stores it as JSON), `fit_predict`. `command` reads and
writes files.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from cytoops import linear, machine
from cytoops.linear import Linear

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


def prepared(image: np.ndarray) -> np.ndarray:
    """One well as the measurements read it: float64, clipped to 0..1 (texture needs values in [0, 1])."""
    return np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)


def cell_count(image: np.ndarray, channels: tuple[str, ...]) -> int:
    """The nuclei the profile segments in one well (C, S, S), scaled 0..1: its `cell_count`."""
    return int(segment(prepared(image), channels)[0].max())


def measure_well(image: np.ndarray, channels: tuple[str, ...]) -> dict[str, float]:
    """One well (C, S, S), scaled 0..1: cell count, coverage and per-object medians and spreads."""
    image = prepared(image)
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


def measure(
    images: np.ndarray, channels: tuple[str, ...], progress=None, memo: dict | None = None, workers: int = 1
) -> pd.DataFrame:
    """Raw per-well measurements (row i = well i of (N, C, S, S) images scaled 0..1), not normalized.

    `workers` processes measure chunks of `CHUNK` wells side by side (0: one per CPU core); each well is
    measured alone, so the table is the same to the last bit whatever the number. `memo` (a dict the caller
    keeps) remembers each table by its images' content and channels, so that several models reading one
    plate measure it once (`cytoops predict` with one profile champion per cytokine); every call gets its
    own copy."""
    if "nucleus" not in channels:
        raise ValueError(f"the profile segments nuclei on a 'nucleus' channel; the plates have {channels}")
    key = _content_key(images, channels) if memo is not None else None
    if key is not None and key in memo:
        return memo[key].copy()
    chunks = [images[i : i + CHUNK] for i in range(0, len(images), CHUNK)]
    n = min(machine.cores() if workers == 0 else workers, len(chunks))
    if n <= 1:
        rows = _gather((_measure_chunk(chunk, channels) for chunk in chunks), progress)
    else:  # spawned, not forked: the caller may hold TensorFlow's threads
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n, mp_context=context) as pool:
            rows = _gather(pool.map(_measure_chunk, chunks, itertools.repeat(channels)), progress)
    table = pd.DataFrame(rows)
    if key is not None:
        memo[key] = table.copy()
    return table


CHUNK = 8  # wells a worker measures per task: the bar moves often, and the pool's overhead stays small


def _measure_chunk(images: np.ndarray, channels: tuple[str, ...]) -> list[dict[str, float]]:
    return [measure_well(image, channels) for image in images]


def _gather(parts, progress) -> list[dict[str, float]]:
    rows = []
    for part in parts:
        rows += part
        if progress is not None:
            progress(len(part))
    return rows


def _content_key(images: np.ndarray, channels: tuple[str, ...]) -> tuple:
    x = np.ascontiguousarray(images)
    return hashlib.sha256(x.tobytes()).hexdigest(), x.shape, str(x.dtype), tuple(channels)


@dataclass(frozen=True)
class Normalization:
    """How one plate's raw measurements become profile features: a missing value is `fill` (the median over
    the training wells), then (x - center) / scale per column. mad_robustize (pycytominer's RobustMAD, to the
    negative-control wells): center = their median, scale = 1.4826 x their MAD + 1e-6; standardize
    (scikit-learn's StandardScaler, to all the plate's wells, when it has fewer than `MIN_CONTROLS`
    controls): their mean and standard deviation."""

    method: str
    n_reference: int  # the wells the statistics come from
    columns: tuple[str, ...]
    fill: np.ndarray
    center: np.ndarray
    scale: np.ndarray

    def apply(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Normalized features of raw measurements (any index; a missing column is all `fill`)."""
        x = raw.reindex(columns=list(self.columns)).to_numpy(dtype=np.float64)
        x = np.where(np.isnan(x), self.fill[None, :], x)
        return pd.DataFrame((x - self.center) / self.scale, columns=list(self.columns), index=raw.index)

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "n_reference": self.n_reference,
            "columns": list(self.columns),
            **{k: getattr(self, k).tolist() for k in ("fill", "center", "scale")},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        arrays = {k: np.asarray(d[k], dtype=np.float64) for k in ("fill", "center", "scale")}
        if {len(v) for v in arrays.values()} != {len(d["columns"])}:
            raise ValueError("stored profile normalization: fill, center and scale differ from its columns")
        return cls(d["method"], int(d["n_reference"]), tuple(d["columns"]), **arrays)


MIN_CONTROLS = 3  # negative-control wells a plate needs to be normalized to them


def fit_normalization(raw: pd.DataFrame, roles, fill: pd.Series) -> Normalization:
    """The statistics of one plate's raw measurements (missing values already filled with `fill`): to its
    negative-control wells when it has `MIN_CONTROLS`, else to all its wells (as pycytominer's `normalize`
    fits them: its RobustMAD, scikit-learn's StandardScaler)."""
    from pycytominer.operations.transform import RobustMAD
    from sklearn.preprocessing import StandardScaler

    controls = np.asarray(roles).astype(str) == "negative_control"
    columns = tuple(raw.columns)
    if controls.sum() >= MIN_CONTROLS:
        mad = RobustMAD(epsilon=1e-6).fit(raw[controls])
        method, n = "mad_robustize", int(controls.sum())
        center, scale = mad.median.to_numpy(float), mad.mad.to_numpy(float) + mad.epsilon
    else:
        std = StandardScaler().fit(raw)
        method, n, center, scale = "standardize", len(raw), std.mean_, std.scale_
    return Normalization(
        method, n, columns, fill.reindex(list(columns)).to_numpy(float), np.asarray(center), np.asarray(scale)
    )


def training_normalization(plates: dict[str, Normalization]) -> Normalization:
    """The statistics a served profile model uses for one well: its training plate's; over several plates,
    the median of theirs (of the plates normalized to controls, when any was)."""
    if not plates:
        raise ValueError("no plate normalization to serve the profile with: rerun the profile stage")
    norms = list(plates.values())
    robust = [n for n in norms if n.method == "mad_robustize"]
    norms = robust or norms
    columns = norms[0].columns
    if any(n.columns != columns for n in norms):
        raise ValueError("the plates' profile normalizations have different columns: rerun the profile stage")
    if len(norms) == 1:
        return norms[0]
    med = {k: np.median([getattr(n, k) for n in norms], axis=0) for k in ("fill", "center", "scale")}
    return Normalization(norms[0].method, sum(n.n_reference for n in norms), columns, **med)


@dataclass(frozen=True)
class Profiled:
    table: pd.DataFrame  # META, COUNT (raw), then the normalized features kept
    normalization: dict[str, Normalization]  # per plate: how its features were made


def profile_plates(
    images: np.ndarray, wells: pd.DataFrame, channels: tuple[str, ...], progress=None, workers: int = 1
) -> Profiled:
    """Per-well profile (row i = well i): META columns, `cell_count`, then features normalized per plate to
    its negative-control wells (robust z: median and MAD of the controls; standardized to the plate when it
    has fewer than 3 controls), with each plate's statistics. Features that are constant or missing on a
    plate are dropped. `workers` as in `measure`."""
    raw = measure(images, channels, progress, workers=workers)
    raw = raw.loc[:, raw.notna().mean() >= 0.9]  # measurements most wells lack (no objects) are not features
    fill = raw.median()
    raw = raw.fillna(fill)
    features = [c for c in raw.columns if c != COUNT]
    meta = wells[["plate", "well"]].astype(str).reset_index(drop=True)
    meta["role"] = wells.role.astype(str).to_numpy() if "role" in wells else "sample"
    parts, norms = [], {}
    for plate in meta.plate.unique():
        on = (meta.plate == plate).to_numpy()
        norms[plate] = fit_normalization(raw.loc[on, features], meta.role[on], fill)
        parts.append(norms[plate].apply(raw.loc[on, features]))
    out = pd.concat([meta, pd.concat(parts).sort_index()], axis=1)
    out.insert(3, COUNT, raw[COUNT].to_numpy())
    values = out[features].replace([np.inf, -np.inf], np.nan)
    keep = [c for c in features if values[c].notna().all() and values[c].std() > 0]
    return Profiled(out[[*META, COUNT, *keep]], norms)


def profile_wells(images: np.ndarray, wells: pd.DataFrame, channels: tuple[str, ...], progress=None):
    """The profile table of `profile_plates`."""
    return profile_plates(images, wells, channels, progress).table


def features_of(raw: pd.DataFrame, norm: Normalization) -> pd.DataFrame:
    """Profile features of raw measurements (`measure`): normalized by `norm`, with the raw cell count."""
    out = norm.apply(raw)
    count = raw[COUNT] if COUNT in raw else pd.Series(np.nan, index=raw.index)
    out.insert(0, COUNT, count.to_numpy(float))
    return out


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


@dataclass(frozen=True)
class ProfileModel:
    """A fitted profile model: the feature columns it kept and its standardized logistic regression."""

    columns: tuple[str, ...]
    linear: Linear

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        """P(responder) of each row of a profile table (or `features_of`) holding `columns`."""
        missing = [c for c in self.columns if c not in x.columns]
        if missing:
            raise ValueError(
                f"the profile model reads {len(missing)} columns these wells lack: {missing[:3]}"
            )
        return self.linear.probability(x[list(self.columns)].to_numpy(np.float64))

    def as_dict(self) -> dict:
        return {"columns": list(self.columns), "linear": self.linear.as_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> ProfileModel:
        return cls(tuple(d["columns"]), Linear.from_dict(d["linear"]))


def fit(x_train: pd.DataFrame, y_train: np.ndarray, seed: int) -> ProfileModel:
    """An L1 logistic regression on the training wells' profile features.

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
    return ProfileModel(tuple(columns), linear.from_pipeline(model))


def fit_predict(x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame, seed: int) -> np.ndarray:
    """P(responder) of the test wells from the model `fit` makes of the training wells only."""
    return fit(x_train, y_train, seed).predict_proba(x_test)


# ---- stage I/O -------------------------------------------------------------------------------------------


def save(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(path, index=False)


def load(path: Path) -> pd.DataFrame:
    table = pd.read_parquet(path)
    for c in META:
        table[c] = table[c].astype(str)
    return table


def save_normalization(plates: dict[str, Normalization], path: Path) -> None:
    """Each plate's normalization statistics as JSON (a served profile model carries its plate's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"plates": {plate: n.as_dict() for plate, n in plates.items()}}
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")


def load_normalization(path: Path) -> dict[str, Normalization]:
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
        return {plate: Normalization.from_dict(d) for plate, d in body["plates"].items()}
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not the profile stage's normalization file ({err}): rerun profile"
        ) from None


def command(
    wrangled: Path = typer.Option(..., "--wrangled", help="Folder written by `cytoops wrangle`."),
    out: Path = typer.Option(..., "--out", help="Parquet file for the per-well profile."),
    stats: Path = typer.Option(
        ..., "--stats", help="JSON of each plate's normalization statistics (a served profile model's)."
    ),
    workers: int = typer.Option(
        0, "--workers", min=0, help="Processes measuring wells side by side; 0 = one per CPU core."
    ),
) -> None:
    """Segment nuclei and cells, measure them (cp-measure), aggregate per well, normalize to the controls."""
    from tqdm import tqdm

    from cytoops import wrangle

    w = wrangle.load(wrangled)
    with tqdm(total=len(w.images), desc="profile", unit="well") as bar:
        profiled = profile_plates(w.images, w.wells, w.channels, progress=bar.update, workers=workers)
    save(profiled.table, out)
    save_normalization(profiled.normalization, stats)
    n_features = len(feature_columns(profiled.table))
    log.info(f"profile: {len(profiled.table)} wells x {n_features} features -> {out} (statistics: {stats})")
