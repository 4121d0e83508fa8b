"""predict: score the wells of new plates with the registered champions (the study's "test on data from
another experiment before deploying").

Each champion is loaded from the registry (`models:/cytoops-<slug>@champion`; a cytokine without one, which
the verdict did not call predictable, falls back to its best CNN `@best-cnn`, with a note) and scores the
plate's raw images through its served model's `plate_probabilities` (`cytoops.serving`), whatever its family
(`cytoops.servable`): resized to its size, its training plate's channels in order, checked as a served request
is, scaled per plate and channel as wrangle scales a plate; a profile model normalizes its features to this
plate's negative controls when layout.csv has them, else with its training plate's statistics, and says
which. A cytokine that cannot be scored is skipped and named, with why, on stderr and in the notes file;
nothing scored is one error line. A plate needs no cytokines.csv; where it has one, the readouts are binarized
with the champion's wrangle method and threshold and each cytokine's F1 and ROC AUC with interval and
calibration on this plate are reported beside its cross-validated estimate (`cytoops.transfer`).

`plate_images`, `labels_for` and `score` are the core; `command` is the edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from cytoops import evaluate, store, transfer, wrangle
from cytoops.plate import Plate, read_data, slugify
from cytoops.registry import PREFIX, TRANSFER_TAGS, champion, registered_names, tag_number, tag_text

log = logging.getLogger(__name__)
NOTES = [
    "cytokine",
    "registered_model",
    "version",
    "alias",
    "family",
    "plate",
    "status",
    "normalization",
    "note",
]


@dataclass(frozen=True)
class Champion:
    cytokine: str
    registered_model: str
    version: str
    alias: str
    method: str
    threshold: float
    note: str  # why this version (e.g. no @champion: its best CNN), or ""
    tags: dict  # the registered version's tags (family, cv_roc_auc, channels, image_size, ...)


def plate_inputs(plate: Plate, channels: tuple[str, ...]) -> np.ndarray:
    """(n_wells, S, S, C) float32: the plate's images scaled as wrangle scales them, in the CNN's channels."""
    images = wrangle.normalize_images(plate_images(plate, channels))
    return np.moveaxis(images, 1, -1).astype(np.float32)


def plate_images(plate: Plate, channels: tuple[str, ...]) -> np.ndarray:
    """(n_wells, C, S, S): the plate's raw images (as read, resized) in the model's channels and order."""
    missing = [c for c in channels if c not in plate.channels]
    if missing:
        raise ValueError(
            f"plate {plate.plate_id} has channels {list(plate.channels)}; "
            f"the model was trained on {list(channels)}"
        )
    return plate.images[:, [plate.channels.index(c) for c in channels]]


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
    try:
        return wrangle.binarize(values, method, threshold, _roles(plate).eq("negative_control")), ""
    except ValueError as err:
        return nan, str(err)


def _roles(plate: Plate) -> pd.Series:
    if plate.layout is None or "role" not in plate.layout:
        return pd.Series("sample", index=list(plate.wells))
    return plate.layout.role.reindex(list(plate.wells)).fillna("sample").astype(str)


def _clusters(plate: Plate) -> np.ndarray:
    """The bootstrap's unit per well: its treatment (layout.csv), else the well itself."""
    wells = pd.Series(list(plate.wells), index=list(plate.wells))
    if plate.layout is None or "treatment" not in plate.layout:
        treatment = pd.Series(np.nan, index=wells.index)
    else:
        treatment = plate.layout.treatment.reindex(wells.index)
    unit = np.where(treatment.notna(), "treatment:" + treatment.astype(str), "well:" + wells)
    return (plate.plate_id + "|" + pd.Series(unit)).to_numpy()


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


def _champions(client, cytokines: list[str]) -> tuple[list[Champion], list[dict]]:
    """The champions to score and the cytokines skipped (a notes row each: why)."""
    from mlflow.exceptions import MlflowException

    names = cytokines or [n[len(PREFIX) :] for n in registered_names(client)]
    out, skipped = [], []
    for name in names:
        try:
            info = champion(client, name)
            version = store.retry(client.get_model_version, info["registered_model"], info["version"])
        except (store.TrackingError, MlflowException) as err:
            skipped.append(_note(name, None, "skipped", " ".join(str(err).split())[:300]))
            continue
        out.append(
            Champion(
                info["cytokine"],
                info["registered_model"],
                info["version"],
                info["alias"],
                info["wrangle_method"] or "threshold",
                float(info["wrangle_threshold"] or 0.0),
                info["note"],
                dict(version.tags),
            )
        )
    return out, skipped


def _note(cytokine: str, ch: Champion | None, status: str, note: str, plate: str = "", how: str = "") -> dict:
    return {
        "cytokine": cytokine,
        "registered_model": ch.registered_model if ch else "",
        "version": ch.version if ch else "",
        "alias": ch.alias if ch else "",
        "family": _family(ch) if ch else "",
        "plate": plate,
        "status": status,
        "normalization": how,
        "note": note,
    }


def _family(ch: Champion) -> str:
    return ch.tags.get("family") or ch.tags.get("architecture") or ""


class _KerasScorer:
    """A CNN registered as a bare Keras model (before the pyfunc existed): its two logits."""

    def __init__(self, model, channels: tuple[str, ...], image_size: int):
        from cytoops.serving import Recipe

        n = len(channels)
        self.model, self.recipe = model, Recipe(channels, channels, image_size, (0.0,) * n, (1.0,) * n)

    def plate_probabilities(self, images: np.ndarray, roles=None, memo=None) -> tuple[np.ndarray, str]:
        from cytoops.serving import check_thumbnails, probability

        x = wrangle.normalize_images(check_thumbnails(images, len(self.recipe.channels)))
        logits = self.model.predict(np.moveaxis(x, 1, -1), verbose=0, batch_size=256)
        return probability(np.asarray(logits)), ""


def load_scorer(ch: Champion):
    """The served model of a registered version (its `recipe` and `plate_probabilities`), or a Keras model
    registered before the pyfunc existed. A TrackingError (one line) when it cannot be loaded."""
    import mlflow

    uri = f"models:/{ch.registered_model}@{ch.alias}"
    try:
        if "keras" in mlflow.models.get_model_info(uri).flavors:
            channels, size = ch.tags.get("channels", ""), ch.tags.get("image_size", "")
            if not channels or not size.isdigit():
                raise ValueError("a bare Keras model without channels/image_size tags")
            return _KerasScorer(mlflow.keras.load_model(uri), tuple(channels.split(",")), int(size))
        model = mlflow.pyfunc.load_model(uri).unwrap_python_model()
        if not hasattr(model, "plate_probabilities"):
            raise ValueError(f"{type(model).__name__} is not a cytoops served model")
        return model
    except Exception as err:  # noqa: BLE001 - Keras/MLflow raise many types for a broken model; one line here
        raise store.TrackingError(
            f"{ch.registered_model} v{ch.version} (alias {ch.alias}) cannot be loaded "
            f"({type(err).__name__}: {' '.join(str(err).split())[:300]}); fix: register a model again "
            f"(cytoops run, or dvc repro) or move the alias to a version that loads"
        ) from None


def _score_champion(
    ch: Champion, scorer, plates: list[Plate], cutoff: float, memo: dict
) -> tuple[list, list]:
    """(per-well frames, notes rows) of one champion on every plate; ValueError when a plate cannot be read
    by it (its channels, its image check). `memo` is shared by every champion: a plate is measured once."""
    frames, notes = [], []
    for plate in plates:
        log.info(
            f"predict: {ch.cytokine} ({_family(ch) or 'model'}) on {plate.plate_id}, {len(plate.wells)} wells"
        )
        roles = _roles(plate).to_numpy() if plate.layout is not None else None
        images = plate_images(plate, scorer.recipe.plate_channels)
        prob, how = scorer.plate_probabilities(images, roles, memo)
        labels, _ = labels_for(plate, ch.cytokine, ch.method, ch.threshold)
        frames.append(
            pd.DataFrame(
                {
                    "plate": plate.plate_id,
                    "well": list(plate.wells),
                    "cytokine": ch.cytokine,
                    "model": f"{ch.registered_model}/{ch.version}",
                    "prob": np.asarray(prob).round(6),
                    "call": (np.asarray(prob) >= cutoff).astype(int),
                    "label": labels.to_numpy(),
                    "cluster": _clusters(plate),
                }
            )
        )
        notes.append(_note(ch.cytokine, ch, "scored", ch.note, plate.plate_id, how))
    return frames, notes


def check_out(out: Path) -> Path:
    """--out must be a file path (its folder is made); one line when it is a folder."""
    if out.is_dir():
        raise ValueError(
            f"--out {out} is a folder: give the CSV file to write, e.g. {out / 'predictions.csv'}"
        )
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"--out {out}: {out.parent} is a file, not a folder")
    return out


def command(
    data_dir: Path = typer.Argument(..., help="Data folder of plates (cytokines.csv optional)."),
    cytokines: list[str] = typer.Option(
        [], "--cytokine", help="Only this cytokine (repeatable); default: every champion."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="CSV of probability and call per well and cytokine. Beside it: <name>_notes.csv (each cytokine "
        "scored or skipped, and why; how a profile was normalized); on plates with cytokines.csv also "
        "<name>_f1.csv, <name>_transfer.csv (ROC AUC with 95% interval, F1, Brier score, beside the CV ROC "
        "AUC), <name>_reliability.csv and <name>_transfer.png.",
    ),
    cutoff: float = typer.Option(0.5, "--cutoff", help="Call a well a responder when P(responder) >= this."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap of the ROC AUC interval."),
    record: bool = typer.Option(
        True,
        "--record/--no-record",
        help="On labelled plates, keep each scored version's ROC AUC here as its tags (transfer_*): "
        "`cytoops best-model` shows it.",
    ),
) -> None:
    """Score every well of new plates with the registered champions (any family); name every cytokine that
    cannot be scored; with readouts, report per cytokine ROC AUC with interval, F1 and calibration beside the
    cross-validated estimate."""
    import mlflow

    check_out(out)
    store.connect()
    champions, notes = _champions(mlflow.MlflowClient(), list(cytokines))
    plates_by_size: dict[int, list[Plate]] = {}
    frames, memo = [], {}  # memo: a plate's profile measurements, shared by every profile champion
    for ch in champions:
        try:
            scorer = load_scorer(ch)
        except store.TrackingError as err:
            notes.append(_note(ch.cytokine, ch, "skipped", str(err)))
            continue
        size = scorer.recipe.image_size
        if size not in plates_by_size:
            plates_by_size[size] = read_data(data_dir, image_size=size, require_readouts=False)
        try:
            scored, scored_notes = _score_champion(ch, scorer, plates_by_size[size], cutoff, memo)
        except ValueError as err:
            notes.append(_note(ch.cytokine, ch, "skipped", str(err)))
            continue
        frames += scored
        notes += scored_notes
    notes = pd.DataFrame(notes, columns=NOTES)
    skipped = notes[notes.status == "skipped"]
    if not frames:
        if skipped.empty:
            raise store.TrackingError(
                "no champion is registered: run the pipeline (dvc repro, or cytoops run) first"
            )
        why = "; ".join(f"{r.cytokine}: {r.note}" for r in skipped.itertuples())
        raise store.TrackingError(f"predict: nothing could be scored: {why}")
    moved = _write(frames, notes, champions, out, cutoff, seed)
    if record and moved is not None:
        _record(
            mlflow.MlflowClient(), champions, moved, sorted({p for f in frames for p in f.plate.unique()})
        )


def _record(client, champions: list[Champion], moved: pd.DataFrame, plates: list[str]) -> None:
    """Each scored version's ROC AUC on these plates as its tags: the registry remembers where a model was
    tested before it was deployed (`cytoops best-model` shows it)."""
    by_cytokine = {ch.cytokine: ch for ch in champions}
    for r in moved.itertuples():
        ch = by_cytokine.get(r.cytokine)
        if ch is None or pd.isna(r.roc_auc):
            continue
        tags = {tag: tag_text(getattr(r, tag.removeprefix("transfer_"))) for tag in TRANSFER_TAGS}
        tags["transfer_n_wells"] = str(int(r.n_wells))
        tags["transfer_plates"] = ",".join(plates)[:500]
        for key, value in tags.items():
            store.retry(client.set_model_version_tag, ch.registered_model, ch.version, key, value)
    log.info(f"predict: the ROC AUC on {', '.join(plates)} is kept on each scored version (transfer_* tags)")


def _write(
    frames: list, notes: pd.DataFrame, champions: list[Champion], out: Path, cutoff: float, seed: int
) -> pd.DataFrame | None:
    table = pd.concat(frames, ignore_index=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.drop(columns="cluster").to_csv(out, index=False)
    notes_file = out.with_name(out.stem + "_notes.csv")
    notes.to_csv(notes_file, index=False)
    for r in notes.itertuples():
        if r.status == "skipped":
            log.warning(f"predict: skipped {r.cytokine}: {r.note}")
    for ch in champions:
        if ch.note and ch.cytokine in set(table.cytokine):
            log.warning(f"note: {ch.note}")
    for r in notes[notes.normalization.astype(bool)].itertuples():
        log.info(f"predict: {r.cytokine} on {r.plate}: {r.normalization}")
    n_wells = table[["plate", "well"]].drop_duplicates().shape[0]
    n_scored = table.cytokine.nunique()
    n_skipped = int((notes.status == "skipped").sum())
    log.info(
        f"predict: {n_wells} wells x {n_scored} cytokines -> {out}"
        + (f"; {n_skipped} skipped (see {notes_file})" if n_skipped else f" (notes: {notes_file})")
    )
    if not table.label.notna().any():
        return None
    scores = score(table, cutoff)
    f1_file = out.with_name(out.stem + "_f1.csv")
    scores.to_csv(f1_file, index=False)
    deployed = pd.DataFrame(
        [
            {"cytokine": ch.cytokine, "family": _family(ch), **{k: tag_number(ch.tags.get(k)) for k in _CV}}
            for ch in champions
        ],
        columns=["cytokine", "family", *_CV],
    ).astype(dict.fromkeys(_CV, float))  # None (not measured) -> NaN
    moved, curves = transfer.table(table, deployed, cutoff, seed)
    moved.to_csv(out.with_name(out.stem + "_transfer.csv"), index=False)
    curves.to_csv(out.with_name(out.stem + "_reliability.csv"), index=False)
    png = transfer.figure(moved, curves, out.with_name(out.stem + "_transfer.png"))
    for r in scores.itertuples():
        f1 = "n/a (no readouts)" if r.n_wells == 0 else f"{r.f1:.3f}"
        log.info(f"  {r.cytokine:<16} F1 {f1} on {r.n_wells} wells ({r.n_responders} responders), {r.model}")
    for r in moved.itertuples():
        cv = "" if pd.isna(r.cv_roc_auc) else f" (cross-validated {r.cv_roc_auc:.3f})"
        log.info(f"  {r.cytokine:<16} ROC AUC {r.roc_auc:.3f} ({r.roc_auc_lo:.3f}-{r.roc_auc_hi:.3f}){cv}")
    log.info(f"predict: F1 per cytokine -> {f1_file}; transfer -> {png.with_suffix('.csv')}, {png}")
    return moved


_CV = ("cv_roc_auc", "cv_roc_auc_lo", "cv_roc_auc_hi")
