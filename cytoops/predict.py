"""predict: score the wells of new plates with the registered champions (the study's "test on data from
another experiment before deploying").

Each champion is loaded from the registry (`models:/cytoops-<slug>@champion`; a cytokine without one, which
the verdict did not call predictable, falls back to its best CNN `@best-cnn`, with a note) and reads the plate
as it was trained: thumbnails resized to its image size, scaled per plate and channel as wrangle scales them
(`wrangle.normalize_images`), its channels in its order. A plate needs no cytokines.csv; where it has one, the
readouts are binarized with the champion's wrangle method and threshold and F1 is reported per cytokine.

`plate_inputs`, `labels_for` and `score` are the core; `command` is the edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from cytoops import evaluate, store, wrangle
from cytoops.plate import Plate, read_data, slugify
from cytoops.registry import champion, registered_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    cytokine: str
    registered_model: str
    version: str
    alias: str
    channels: tuple[str, ...]
    image_size: int
    method: str
    threshold: float


def plate_inputs(plate: Plate, channels: tuple[str, ...]) -> np.ndarray:
    """(n_wells, S, S, C) float32: the plate's images scaled as wrangle scales them, in the champion's
    channels."""
    missing = [c for c in channels if c not in plate.channels]
    if missing:
        raise ValueError(
            f"plate {plate.plate_id} has channels {list(plate.channels)}; "
            f"the champion was trained on {list(channels)}"
        )
    images = wrangle.normalize_images(plate.images)
    picks = [plate.channels.index(c) for c in channels]
    return np.moveaxis(images[:, picks], 1, -1).astype(np.float32)


def labels_for(plate: Plate, cytokine: str, method: str, threshold: float) -> tuple[pd.Series, str]:
    """Responder (1/0, NaN when not measured) per well with an image, binarized as the champion's training
    data was; and why there are none ('' when there are)."""
    nan = pd.Series(np.nan, index=list(plate.wells))
    if plate.readouts is None:
        return nan, "no cytokines.csv"
    column = next(
        (c for c in plate.readouts.columns if slugify(c).lower() == slugify(cytokine).lower()), None
    )
    if column is None:
        return nan, f"no {cytokine} column in cytokines.csv"
    values = plate.readouts[column].reindex(list(plate.wells))
    role = (
        plate.layout.role.reindex(list(plate.wells))
        if plate.layout is not None
        else pd.Series("sample", index=values.index)
    )
    try:
        return wrangle.binarize(values, method, threshold, role.eq("negative_control")), ""
    except ValueError as err:
        return nan, str(err)


def score(table: pd.DataFrame, cutoff: float = 0.5) -> pd.DataFrame:
    """F1 and friends per cytokine over the wells that have a label (all of them, not class-balanced)."""
    rows = []
    for (cytokine, model), g in table.groupby(["cytokine", "model"], sort=True):
        g = g[g.label.notna()]
        row = {
            "cytokine": cytokine,
            "model": model,
            "n_wells": len(g),
            "n_responders": int(g.label.sum()) if len(g) else 0,
        }
        if len(g):
            row.update(evaluate.fold_scores(g.label.to_numpy().astype(int), g.prob.to_numpy(), cutoff))
        rows.append(row)
    return pd.DataFrame(rows, columns=["cytokine", "model", "n_wells", "n_responders", *evaluate.METRICS])


def _champions(client, cytokines: list[str]) -> list[Champion]:
    names = cytokines or [n[len("cytoops-") :] for n in registered_names(client)]
    out = []
    for name in names:
        try:
            info = champion(client, name)
        except store.TrackingError:
            if cytokines:
                raise
            continue  # a model with neither a champion nor a best-cnn version: skipped when not asked for
        if info["note"]:
            log.warning(f"note: {info['note']}")
        if not info["channels"] or not info["image_size"]:
            raise store.TrackingError(
                f"{info['registered_model']} v{info['version']} has no channels/image_size tags"
            )
        out.append(
            Champion(
                info["cytokine"],
                info["registered_model"],
                info["version"],
                info["alias"],
                tuple(info["channels"]),
                int(info["image_size"]),
                info["wrangle_method"] or "threshold",
                float(info["wrangle_threshold"] or 0.0),
            )
        )
    if not out:
        raise store.TrackingError(
            "no champion is registered: run the pipeline (dvc repro, or cytoops run) first"
        )
    return out


def load_scorer(ch: Champion):
    """P(responder) for inputs made by `plate_inputs`, from a registered model: the CNN inside the pyfunc
    `register` logs (the plate scaled by its own percentiles, not the training plate's), or a Keras model
    registered before the pyfunc existed (its two logits). A TrackingError (one line) when the registry's
    copy cannot be loaded."""
    import mlflow

    from cytoops.serving import probability  # here: importing serving defines its MLflow model class

    uri = f"models:/{ch.registered_model}@{ch.alias}"
    try:
        flavors = mlflow.models.get_model_info(uri).flavors
        if "keras" in flavors:
            model = mlflow.keras.load_model(uri)
            return lambda x: probability(np.asarray(model.predict(x, verbose=0, batch_size=256)))
        return mlflow.pyfunc.load_model(uri).unwrap_python_model().probabilities
    except Exception as err:  # noqa: BLE001 - Keras/MLflow raise many types for a broken model; one line here
        raise store.TrackingError(
            f"{ch.registered_model} v{ch.version} (alias {ch.alias}) cannot be loaded "
            f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); fix: register a model again "
            f"(cytoops run, or dvc repro) or move the alias to a version that loads"
        ) from None


def command(
    data_dir: Path = typer.Argument(..., help="Data folder of plates (cytokines.csv optional)."),
    cytokines: list[str] = typer.Option(
        [], "--cytokine", help="Only this cytokine (repeatable); default: every champion."
    ),
    out: Path = typer.Option(..., "--out", help="CSV of probability and call per well and cytokine."),
    cutoff: float = typer.Option(0.5, "--cutoff", help="Call a well a responder when P(responder) >= this."),
) -> None:
    """Score every well of new plates with the registered champions; with readouts, also F1 per cytokine
    (written next to --out as <name>_f1.csv)."""
    import mlflow

    store.connect()
    client = mlflow.MlflowClient()
    champions = _champions(client, list(cytokines))
    plates_by_size: dict[int, list[Plate]] = {}
    frames = []
    for ch in champions:
        if ch.image_size not in plates_by_size:
            plates_by_size[ch.image_size] = read_data(
                data_dir, image_size=ch.image_size, require_readouts=False
            )
        scorer = load_scorer(ch)
        for plate in plates_by_size[ch.image_size]:
            prob = scorer(plate_inputs(plate, ch.channels))
            labels, _ = labels_for(plate, ch.cytokine, ch.method, ch.threshold)
            frames.append(
                pd.DataFrame(
                    {
                        "plate": plate.plate_id,
                        "well": list(plate.wells),
                        "cytokine": ch.cytokine,
                        "model": f"{ch.registered_model}/{ch.version}",
                        "prob": prob.round(6),
                        "call": (prob >= cutoff).astype(int),
                        "label": labels.to_numpy(),
                    }
                )
            )
    table = pd.concat(frames, ignore_index=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    n_wells = table[["plate", "well"]].drop_duplicates().shape[0]
    log.info(f"predict: {n_wells} wells x {len(champions)} cytokines -> {out}")
    if table.label.notna().any():
        scores = score(table, cutoff)
        f1_file = out.with_name(out.stem + "_f1.csv")
        scores.to_csv(f1_file, index=False)
        for r in scores.itertuples():
            f1 = "n/a (no readouts)" if r.n_wells == 0 else f"{r.f1:.3f}"
            log.info(
                f"  {r.cytokine:<16} F1 {f1} on {r.n_wells} wells ({r.n_responders} responders), {r.model}"
            )
        log.info(f"predict: F1 per cytokine -> {f1_file}")
