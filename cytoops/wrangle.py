"""wrangle: plates -> one table of wells, normalized images, binarized and class-balanced targets.

Pure core: `binarize`, `balance`, `wrangle`. The `command` reads the plates and writes the stage outputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from cytoops import tables
from cytoops.params import WrangleParams
from cytoops.params import load as load_params
from cytoops.plate import FORMATS, Plate, large_image_note, read_data, slugify, well_row_col

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wrangled:
    # one row per usable well (row i = images[i]):
    # plate, well, row, col, edge, treatment, role, concentration, group
    wells: pd.DataFrame
    images: (
        np.ndarray
    )  # (n_wells, C, S, S) float32, per plate and channel scaled so 0.1th..99.9th percentile -> 0..1
    channels: tuple[str, ...]
    labels: pd.DataFrame  # long: cytokine, slug, well_index, value, label (0/1), balanced (bool)
    cytokines: (
        pd.DataFrame
    )  # one row per cytokine: cytokine, slug, n_measured, n_pos, n_neg, n_balanced, kept, reason
    embeddings: (
        pd.DataFrame
    )  # one row per well (same order as wells), numeric columns only (none when absent)
    # one row per plate and channel: plate, channel, lo, hi (the values scaled to 0 and 1); a served model
    # scales raw thumbnails with them
    scaling: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=tables.SCALING))


def kept_cytokines(cytokines: pd.DataFrame) -> tuple[str, ...]:
    """The cytokines wrangle kept, from its cytokines table (in memory, or read back from cytokines.csv)."""
    return tuple(cytokines.cytokine[cytokines.kept.astype(bool)])


def binarize(
    values: pd.Series, method: str, threshold: float, negative: pd.Series | None = None
) -> pd.Series:
    """Responder (1) or not (0) per well; NaN where the readout is missing.

    threshold: value > threshold (readouts already normalized, as in the study).
    fold_change: log2(value / median of the negative-control wells) > threshold.
    robust_z: (value - median NC) / (1.4826 * MAD of NC) > threshold.
    """
    if method == "threshold":
        score = values
    else:
        if negative is None or not negative.any():
            raise ValueError(
                f"binarize method {method!r} needs negative_control wells in layout.csv; none found"
            )
        control = values[negative].dropna()
        if control.empty:
            raise ValueError("no measured negative-control wells")
        center = float(control.median())
        if method == "fold_change":
            if center <= 0 or (values.dropna() <= 0).any():
                raise ValueError(
                    "fold_change needs positive raw readouts and a positive negative-control median"
                )
            score = np.log2(values / center)
        elif method == "robust_z":
            mad = 1.4826 * float((control - center).abs().median())
            if mad == 0:
                raise ValueError("robust_z: the negative controls have zero spread (MAD = 0)")
            score = (values - center) / mad
        else:
            raise ValueError(f"unknown binarize method {method!r}")
    return (score > threshold).astype(float).where(values.notna())


def balance(labels: pd.Series, rng: np.random.Generator) -> pd.Index:
    """Seeded undersampling of the majority class down to the minority's size; returns the kept index."""
    labels = labels.dropna()
    pos, neg = labels.index[labels == 1], labels.index[labels == 0]
    n = min(len(pos), len(neg))
    keep = np.concatenate([rng.choice(pos, n, replace=False), rng.choice(neg, n, replace=False)])
    return labels.index[labels.index.isin(keep)]


def scaling_constants(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of one plate (n_wells, C, S, S): its 0.1th and 99.9th percentiles (lo, hi)."""
    lo, hi = np.percentile(images, [0.1, 99.9], axis=(0, 2, 3))
    return lo, hi


def scale(images: np.ndarray, lo, hi) -> np.ndarray:
    """(n, C, S, S) -> float32 with lo -> 0 and hi -> 1 per channel (not clipped)."""
    lo = np.asarray(lo, dtype=np.float64)[None, :, None, None]
    span = np.maximum(np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64).ravel(), 1e-6)
    return ((images - lo) / span[None, :, None, None]).astype(np.float32)


def normalize_images(images: np.ndarray) -> np.ndarray:
    """Per-channel robust scaling of one plate: 0.1th percentile -> 0, 99.9th -> 1 (not clipped)."""
    return scale(images, *scaling_constants(images))


def _well_table(plate: Plate, wells: list[str]) -> pd.DataFrame:
    rows, cols = zip(*(well_row_col(w) for w in wells), strict=True) if wells else ((), ())
    n_rows, n_cols = FORMATS[plate.format]
    table = pd.DataFrame({"plate": plate.plate_id, "well": wells, "row": rows, "col": cols})
    table["edge"] = (
        (table.row == 0) | (table.col == 0) | (table.row == n_rows - 1) | (table.col == n_cols - 1)
    )
    layout = plate.layout if plate.layout is not None else pd.DataFrame(index=pd.Index([], name="well"))
    layout = layout.reindex(wells)
    table["treatment"] = layout.get("treatment", pd.Series(index=wells, dtype=object)).to_numpy()
    table["role"] = layout.get("role", pd.Series(index=wells, dtype=object)).fillna("sample").to_numpy()
    table["concentration"] = layout.get("concentration", pd.Series(index=wells, dtype=float)).to_numpy()
    # Folds keep a treatment's wells together; without a layout every well is its own group.
    table["group"] = np.where(
        table.treatment.notna(),
        "treatment:" + table.treatment.astype(str),
        "well:" + table.plate + "/" + table.well,
    )
    return table


def wrangle(plates: list[Plate], params: WrangleParams) -> Wrangled:
    """The plates' usable wells as one table, their scaled images, and each cytokine's binarized labels."""
    channels = _shared_channels(plates)
    well_tables, images, readouts, embeddings, scaling = zip(
        *(_plate_parts(p, channels) for p in plates), strict=True
    )
    wells = pd.concat(well_tables, ignore_index=True)
    values = pd.concat(readouts, ignore_index=True)  # cytokines absent on a plate are NaN there
    present = [e for e in embeddings if e is not None]
    emb = (
        pd.concat(present, ignore_index=True)
        if len(present) == len(plates)
        else pd.DataFrame(index=wells.index)
    )
    labels, summary = _labels(values, wells.role == "negative_control", params)
    return Wrangled(
        wells=wells,
        images=np.concatenate(images),
        channels=channels,
        labels=labels,
        cytokines=summary,
        embeddings=emb,
        scaling=pd.DataFrame([row for rows in scaling for row in rows], columns=tables.SCALING),
    )


def _shared_channels(plates: list[Plate]) -> tuple[str, ...]:
    """The channels all plates share; ValueError when there is no plate or two plates differ."""
    if not plates:
        raise ValueError("no plates to wrangle")
    channels = plates[0].channels
    for p in plates[1:]:
        if p.channels != channels:
            raise ValueError(
                f"plate {p.plate_id} has channels {p.channels}, plate {plates[0].plate_id} {channels}"
            )
    return channels


def _plate_parts(
    p: Plate, channels: tuple[str, ...]
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, pd.DataFrame | None, list[dict]]:
    """(well table, scaled images, readouts, embeddings or None, scaling rows) of one plate's usable wells."""
    wells = list(p.usable_wells)
    index = [p.wells.index(w) for w in wells]
    lo, hi = scaling_constants(p.images)
    scaling = [
        {"plate": p.plate_id, "channel": c, "lo": float(a), "hi": float(b)}
        for c, a, b in zip(channels, lo, hi, strict=True)
    ]
    embeddings = None if p.embeddings is None else p.embeddings.reindex(wells).reset_index(drop=True)
    return (
        _well_table(p, wells),
        scale(p.images, lo, hi)[index],
        p.readouts.loc[wells].reset_index(drop=True),
        embeddings,
        scaling,
    )


def _labels(
    values: pd.DataFrame, negative: pd.Series, params: WrangleParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(long labels table, one summary row per cytokine) of every cytokine column of `values`."""
    rng = np.random.default_rng(params.seed)
    label_frames, summary = [], []
    for name in values.columns:
        row, frame = _cytokine_labels(name, values[name], negative, params, rng)
        summary.append(row)
        if frame is not None:
            label_frames.append(frame)
    labels = (
        pd.concat(label_frames, ignore_index=True) if label_frames else pd.DataFrame(columns=tables.LABELS)
    )
    return labels, pd.DataFrame(summary)


def _cytokine_labels(
    name: str, v: pd.Series, negative: pd.Series, params: WrangleParams, rng: np.random.Generator
) -> tuple[dict, pd.DataFrame | None]:
    """(one cytokine's summary row, its labels of measured wells; None when it cannot be binarized)."""
    slug = slugify(name)
    row = {"cytokine": name, "slug": slug, "n_measured": int(v.notna().sum())}
    try:
        y = binarize(v, params.method, params.threshold, negative)
    except ValueError as err:
        return {**row, "n_pos": 0, "n_neg": 0, "n_balanced": 0, "kept": False, "reason": str(err)}, None
    kept_index = balance(y, rng)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    n_bal = len(kept_index)
    kept = n_bal >= params.min_wells
    reason = (
        ""
        if kept
        else f"{n_bal} balanced wells < min_wells {params.min_wells} ({n_pos} responders, {n_neg} not)"
    )
    row = {**row, "n_pos": n_pos, "n_neg": n_neg, "n_balanced": n_bal, "kept": kept, "reason": reason}
    measured = y.dropna()
    frame = pd.DataFrame(
        {
            "cytokine": name,
            "slug": slug,
            "well_index": measured.index.to_numpy(),
            "value": v[measured.index].to_numpy(),
            "label": measured.to_numpy().astype(int),
            "balanced": measured.index.isin(kept_index),
        }
    )
    return row, frame


# ---- stage I/O -------------------------------------------------------------------------------------------


def save(w: Wrangled, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "images.npy", w.images)
    w.wells.assign(channels=",".join(w.channels)).to_csv(out / "wells.csv", index=False)
    w.labels.to_csv(out / "labels.csv", index=False)
    w.cytokines.to_csv(out / "cytokines.csv", index=False)
    w.scaling.to_csv(out / "scaling.csv", index=False)
    # plate and well lead, so the file has a header even for plates without embeddings
    pd.concat([w.wells[["plate", "well"]], w.embeddings], axis=1).to_csv(out / "embeddings.csv", index=False)


def load(out: Path) -> Wrangled:
    wells = tables.read(out / "wells.csv")
    channels = tuple(str(wells.pop("channels").iloc[0]).split(",")) if len(wells) else ()
    return Wrangled(
        wells=wells,
        images=np.load(out / "images.npy"),
        channels=channels,
        labels=tables.read(out / "labels.csv"),
        cytokines=tables.read(out / "cytokines.csv", empty_is_missing=False),
        embeddings=tables.read(out / "embeddings.csv").drop(columns=["plate", "well"]),
        scaling=load_scaling(out)
        if (out / "scaling.csv").is_file()
        else pd.DataFrame(columns=tables.SCALING),
    )


def load_scaling(out: Path) -> pd.DataFrame:
    """scaling.csv of a wrangle output folder (written since the served models needed it)."""
    path = Path(out) / "scaling.csv"
    if not path.is_file():
        raise ValueError(f"{path} does not exist: rerun the wrangle stage (dvc repro -f wrangle)")
    return tables.read(path)


def run(data: Path, out: Path, p: WrangleParams) -> Wrangled:
    plates = read_data(data, image_size=p.image_size)
    note = large_image_note(plates, p.image_size)
    if note:
        log.warning(f"wrangle: {note}")
    result = wrangle(plates, p)
    save(result, out)
    return result


def command(
    data: Path = typer.Option(
        ..., "--data", help="Folder of plates (data/<plate-id>/...), as in docs/plate-format.md."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for the stage outputs (images.npy, wells.csv, labels.csv, ...)."
    ),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set wrangle.min_wells=10"),
) -> None:
    """Binarize each cytokine, balance classes, drop cytokines under the well cut-off."""
    p = load_params(params_file, overrides).wrangle
    result = run(data, out, p)
    kept = kept_cytokines(result.cytokines)
    log.info(
        f"wrangle: {len(result.wells)} wells, {len(result.cytokines)} cytokines, {len(kept)} kept "
        f"(>= {p.min_wells} balanced wells), {len(result.cytokines) - len(kept)} dropped -> {out}"
    )
