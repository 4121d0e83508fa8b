"""register: each kept cytokine's best CNN in the MLflow model registry, its champion, `cytoops best-model`.

The best CNN of a cytokine is its CNN (wide_cnn or deep_cnn, any augmentation) with the highest mean
cross-validated F1. Cross-validation kept no model (each fold's model saw half the wells), so it is refit on
all the cytokine's balanced wells, with its augmentation's views and the epoch count its folds chose (the
median best epoch, rounded up: the refit sees more wells than a fold did), then logged in the nested run of
its (architecture, augmentation) as a pyfunc that answers P(responder) for raw thumbnails (`cytoops.serving`),
registered as `cytoops-<slug>` and given the alias `best-cnn` (by default only when its CV F1 is at least the
current best-cnn's on the same data version: `tracking.promote`). Only a cytokine the verdict called
predictable (reports/predictable.csv) also gets the alias `champion` on that version; a `champion` left on a
cytokine the verdict no longer calls predictable is removed, and the command says so. `tracking.log_models:
all` also refits and logs every other model; a ViT model is logged as its trained head with a reference to its
backbone (`serving.load_vit` puts them together); `none` logs none.

`choose_champions` and `refit` are the core (no MLflow); the rest is the edge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import io
import json
import logging
import math
import types
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from cytoops import augment, cvresult, dataset, registry, tables, tracking, wrangle
from cytoops.fitter import Fitter
from cytoops.params import ARCHITECTURES, Params
from cytoops.params import load as load_params
from cytoops.plate import slugify
from cytoops.registry import ALIAS, BEST_ALIAS, model_name
from cytoops.store import TrackingError, connect, retry

log = logging.getLogger(__name__)

CNNS = tuple(a for a, kind in ARCHITECTURES.items() if kind == "cnn")  # what may be registered
OUTPUT = "P(responder) per thumbnail (column p_responder), from raw thumbnails (cytoops.serving)"


# ---- core --------------------------------------------------------------------------------


def choose_champions(means: pd.DataFrame, fits: pd.DataFrame, kept, default_epochs: int) -> pd.DataFrame:
    """Per kept cytokine, the CNN (architecture, augmentation) with the highest mean CV F1 (ties: higher ROC
    AUC, then name order), and the epochs to refit it: the median best epoch of its folds, rounded up."""
    m = means[means.architecture.isin(CNNS) & means.cytokine.isin(list(kept)) & means.f1.notna()].copy()
    if "roc_auc" not in m.columns:
        m["roc_auc"] = np.nan
    m = m.sort_values(
        ["cytokine", "f1", "roc_auc", "architecture", "augmentation"],
        ascending=[True, False, False, True, True],
        na_position="last",
    )
    best = m.groupby("cytokine", sort=True).head(1).reset_index(drop=True)
    return best.assign(
        epochs=[
            epochs_for(fits, r.architecture, r.augmentation, r.cytokine, default_epochs)
            for r in best.itertuples()
        ]
    )


def read_verdict(path: Path) -> dict[str, bool]:
    """Cytokine -> predictable, from the verdict's reports/predictable.csv (columns cytokine, predictable:
    True/False)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run the verdict stage (dvc repro verdict) first")
    table = tables.read(path, empty_is_missing=False)
    missing = [c for c in ("cytokine", "predictable") if c not in table.columns]
    if missing:
        raise ValueError(f"{path} has no column {', '.join(missing)}: expected cytokine, predictable")
    return dict(zip(table.cytokine, table.predictable, strict=True))


def all_models(means: pd.DataFrame, fits: pd.DataFrame, kept, default_epochs: int) -> pd.DataFrame:
    """Every (architecture, augmentation, kept cytokine) that was cross-validated (`log_models: all`)."""
    m = means[means.cytokine.isin(list(kept))].copy().reset_index(drop=True)
    return m.assign(
        epochs=[
            epochs_for(fits, r.architecture, r.augmentation, r.cytokine, default_epochs)
            for r in m.itertuples()
        ]
    )


def epochs_for(fits: pd.DataFrame, architecture: str, augmentation: str, cytokine: str, default: int) -> int:
    pick = (
        (fits.architecture == architecture)
        & (fits.augmentation == augmentation)
        & (fits.cytokine == cytokine)
    )
    best = pd.to_numeric(fits.loc[pick, "best_epoch"], errors="coerce").dropna()
    return max(1, math.ceil(float(best.median()))) if len(best) else default


def training_set(inputs: dataset.Inputs, source: np.ndarray, cytokine: str, augmentation: str):
    """All balanced wells of a cytokine under its augmentation's views: (x, y, example, n_wells)."""
    rows = inputs.labels[(inputs.labels.cytokine == cytokine) & inputs.labels.balanced]
    wells = rows.well_index.to_numpy().astype(int)
    label_of = dict(zip(wells, rows.label.to_numpy().astype(int), strict=True))
    x, src = augment.training_views(source, inputs.bank.views, augmentation, wells)
    y = np.array([label_of[s] for s in src])
    example = np.asarray(augment.identity_view(source, inputs.bank.views, wells[:1]), dtype=np.float32)
    return np.asarray(x, dtype=np.float32), y, example, len(wells)


def refit(fitter: Fitter, architecture: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    """A fresh seeded model of `architecture` trained on (x, y) for exactly `epochs` epochs by the loop that
    cross-validated it (`fitter.Fitter`; no held-out data: the folds chose the epoch count). The model is the
    fitter's: log it before the next refit."""
    model, _, _ = fitter.fit(architecture, x, y, None, None, seed, epochs=epochs)
    return model


def refit_seed(architecture: str, augmentation: str, cytokine: str, base: int) -> int:
    """The refit's own seed, from its name (repeat -1 and fold -1: never a cross-validation unit's)."""
    return cvresult.Unit(architecture, augmentation, cytokine, -1, -1).seed(base)


# ---- edge: logging and registering ------------------------------------------------------------


def _requirements() -> list[str]:
    reqs = []
    for dist in ("keras", "tensorflow", "tensorflow-cpu"):
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return reqs


def _keras_flavor():
    """mlflow.keras for `Model.log`, which makes the model folder before saving into it:
    `mlflow.keras.log_model(..., input_example=...)` fails in MLflow 3.17 (FileNotFoundError on
    .../model/input_example.json: its save_model writes the example before making the folder; mlflow#16183).
    Everything else is mlflow.keras.log_model's own path: same `Model.log`, same flavor, same files."""
    import mlflow.keras

    def save_model(path, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        return mlflow.keras.save_model(path=path, **kwargs)

    return types.SimpleNamespace(__name__=mlflow.keras.__name__, save_model=save_model)


def log_keras_model(model, *, name: str, example: np.ndarray, meta: dict, params: dict, tags: dict):
    """Log a trained Keras model in the active run, as `mlflow.keras.log_model(name=...)` does: weights
    without the optimizer's state (a third of the size), a signature and an input example; pinned
    requirements (no slow inference of them)."""
    import keras
    from mlflow.models import Model, infer_signature

    copy = type(model).from_config(model.get_config())  # the same layers, not compiled: no optimizer state
    copy.set_weights(model.get_weights())
    signature = infer_signature(example, np.asarray(copy.predict(example, verbose=0)))
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()  # MLflow checks the input example with a verbose predict
    try:
        return retry(
            Model.log,
            artifact_path=None,
            name=name,
            flavor=_keras_flavor(),
            model=copy,
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(),
            metadata={"cytoops": meta},
            params={k: str(v) for k, v in params.items()},
            tags={k: str(v) for k, v in tags.items()},
        )
    finally:
        if interactive:
            keras.config.enable_interactive_logging()


def log_cnn_model(model, *, name: str, recipe, meta: dict, params: dict, tags: dict):
    """Log a trained CNN in the active run as a pyfunc that answers P(responder) for raw thumbnails
    (`serving.ThumbnailModel`, the Keras model an artifact of it); pinned requirements. No signature: it takes
    uint16 or float thumbnails in either channel layout (the model's description says how)."""
    import tempfile

    import mlflow.pyfunc

    from cytoops import serving

    with tempfile.TemporaryDirectory() as folder:
        keras_file = serving.save_keras(model, Path(folder))
        return retry(
            mlflow.pyfunc.log_model,
            name=name,
            python_model=serving.ThumbnailModel(recipe),
            artifacts={serving.KERAS_ARTIFACT: str(keras_file)},
            pip_requirements=_requirements(),
            metadata={"cytoops": {**meta, "serving": recipe.as_dict()}},
            params={k: str(v) for k, v in params.items()},
            tags={k: str(v) for k, v in tags.items()},
        )


def register_version(info, cytokine: str, tags: dict, promote: str, predictable: bool) -> dict:
    """Register a logged model as `cytoops-<slug>`; move the alias `best-cnn` to it when `promote` allows;
    `champion` follows `best-cnn` when the verdict called the cytokine predictable, else it is removed."""
    import mlflow

    client = mlflow.MlflowClient()
    name = model_name(cytokine)
    tags = {k: str(v) for k, v in {**tags, "predictable": str(predictable).lower()}.items()}
    version = retry(mlflow.register_model, info.model_uri, name, tags=tags)
    retry(client.set_registered_model_tag, name, "cytokine", cytokine)
    current = registry.alias_version(client, name, BEST_ALIAS)
    keep = None
    if promote == "best" and current is not None and current.version != version.version:
        same_data = current.tags.get("data_version") == tags.get("data_version")
        try:
            theirs = float(current.tags.get("cv_f1", "nan"))
        except ValueError:
            theirs = math.nan
        if same_data and not math.isnan(theirs) and theirs > float(tags["cv_f1"]):
            keep = current
    if keep is None:
        retry(client.set_registered_model_alias, name, BEST_ALIAS, version.version)
    best = keep or version
    had_champion = registry.alias_version(client, name, ALIAS)
    if predictable:
        retry(client.set_registered_model_alias, name, ALIAS, best.version)
    elif had_champion is not None:
        retry(client.delete_registered_model_alias, name, ALIAS)
    return {
        "registered_model": name,
        "version": str(version.version),
        "best_cnn_version": str(best.version),
        "promoted": keep is None,
        "predictable": predictable,
        "champion_version": str(best.version) if predictable else None,
        "champion_removed": str(had_champion.version)
        if had_champion is not None and not predictable
        else None,
        "model_uri": info.model_uri,
    }


def _vit_meta(inputs: dataset.Inputs, p: Params) -> dict:
    from cytoops import models

    weights = inputs.vit.weights if inputs.vit is not None else "random"
    if weights != "random" and Path(weights).exists():
        weights = str(Path(weights).resolve())
    return {
        "weights": weights,
        "seed": p.features.seed,
        "layers": models.ModelParams().vit_layers,
        "image_size": int(inputs.bank.images.shape[-1]),
        "input": "features.to_vit_input(images): channels-last actin, mito, nucleus as RGB in [-1, 1]",
    }


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where the registered models come from: the pipeline's MLflow runs, the data version and the commit."""

    tracked: tracking.Tracked
    data_version: str = "untracked"
    git_commit: str = ""


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What register decides from and refits on, as values (`cytoops run` passes them in memory; the DVC stage
    reads them from the files dvc.yaml names, `load_evidence`)."""

    inputs: dataset.Inputs  # the plate: wells, labels, views, ViT features, profile
    result: cvresult.Result  # cross-validation: fits (best epochs), failures
    means: pd.DataFrame  # evaluate's mean scores per model and cytokine (f1_per_cytokine.csv)
    predictable: dict[str, bool]  # the verdict's call per cytokine (predictable.csv)
    scaling: pd.DataFrame  # wrangle's channel constants per plate: a served model scales raw thumbnails so
    source: str = "the verdict"  # where `predictable` came from, for the log


def load_evidence(
    trained: Path,
    wrangled: Path,
    views: Path,
    vit_features: Path | None,
    scores: Path,
    verdict: Path,
    p: Params,
) -> Evidence:
    """The Evidence from the stage files; the ViT features only where the file exists (else no ViT refits)."""
    predictable = read_verdict(verdict)
    vit = vit_features if vit_features is not None and Path(vit_features).exists() else None
    readable = {"cnn", "vit"} if vit is not None else {"cnn"}
    archs = tuple(a for a in p.train.architectures if ARCHITECTURES.get(a) in readable) or CNNS[:1]
    p_inputs = dataclasses.replace(p, train=dataclasses.replace(p.train, architectures=archs))
    return Evidence(
        inputs=dataset.load_inputs(wrangled, views, vit, p_inputs),
        result=cvresult.load(trained),
        means=tables.read(scores),
        predictable=predictable,
        scaling=wrangle.load_scaling(wrangled),
        source=str(verdict),
    )


def register(run: Provenance, evidence: Evidence, p: Params) -> dict:
    """Refit, log and register, under the open parent run; return the listing. Only the cytokines the verdict
    called predictable get the alias `champion`."""
    tracked, predictable = run.tracked, evidence.predictable
    kept = list(evidence.inputs.kept)
    mode = p.tracking.log_models
    champions = choose_champions(evidence.means, evidence.result.fits, kept, p.train.epochs)
    listing = _listing(tracked, mode, kept, champions)
    for cytokine in sorted(set(champions.cytokine) - set(predictable)):
        log.info(f"register: {cytokine} is not in {evidence.source}: counted not predictable (no @{ALIAS})")
    if mode == "none":
        listing["registered"] = [_unlogged_entry(r, predictable) for r in champions.itertuples()]
        log.info(f"register: tracking.log_models is none: {len(champions)} best CNNs chosen, none logged")
        return listing
    means, fits = evidence.means, evidence.result.fits
    todo = all_models(means, fits, kept, p.train.epochs) if mode == "all" else champions
    source = _Sources(evidence, p)
    champion_of = {(r.cytokine, r.architecture, r.augmentation) for r in champions.itertuples()}
    fitter = Fitter(p.train)
    with _quiet_mlflow():
        for (architecture, augmentation), group in todo.groupby(["architecture", "augmentation"], sort=True):
            key = f"{architecture}/{augmentation}"
            if key not in tracked.nested:
                raise TrackingError(
                    f"the track stage logged no nested run for {key}: rerun it (dvc repro -f track)"
                )
            with tracking.active_run(tracked.nested[key], nested=True):
                for r in group.itertuples():
                    is_champion = (r.cytokine, architecture, augmentation) in champion_of
                    _refit_and_log(r, fitter, source, run, p, is_champion, predictable, listing)
    log.info(
        f"register: {len(listing['registered'])} best CNNs registered (@{BEST_ALIAS}), "
        f"{len(listing['champions'])} of them @{ALIAS} (predictable) ({mode})"
    )
    return listing


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow's own event lines off the screen while register logs and registers (model registered, version
    created, artifact download bars, the note that a pyfunc is cloudpickled): register says what it did in one
    line per cytokine, and MLflow's errors still raise. MLflow writes them to whatever sys.stderr is at the
    time (its disable_logging() is undone by its own internals during log_model)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _listing(tracked: tracking.Tracked, mode: str, kept: list[str], champions: pd.DataFrame) -> dict:
    """The listing register writes, before anything is registered."""
    return {
        "tracking_uri": tracked.tracking_uri,
        "experiment": tracked.experiment,
        "pipeline_run_id": tracked.run_id,
        "log_models": mode,
        "registered": [],  # every kept cytokine's best CNN, alias best-cnn
        "champions": [],  # cytokines whose best CNN is also @champion (the verdict called them predictable)
        "not_registered": [
            {"cytokine": c, "reason": "no CNN was cross-validated on it (train.architectures)"}
            for c in kept
            if c not in set(champions.cytokine)
        ],
    }


def _unlogged_entry(r, predictable: dict[str, bool]) -> dict:
    """A best CNN's listing entry under log_models: none (chosen, not logged)."""
    return {
        "cytokine": r.cytokine,
        "architecture": r.architecture,
        "augmentation": r.augmentation,
        "cv_f1": round(float(r.f1), 4),
        "predictable": bool(predictable.get(r.cytokine, False)),
        "registered_model": None,
    }


class _Sources:
    """What the refits read: the plate's inputs, the CNN view bank (made once), the ViT features, scaling."""

    def __init__(self, evidence: Evidence, p: Params):
        self.inputs = evidence.inputs
        self.scaling = evidence.scaling
        self.channels = list(p.train.cnn_channels)
        self.image_size = int(self.inputs.bank.images.shape[-1])
        self.vit_meta = _vit_meta(self.inputs, p) if self.inputs.vit is not None else None
        self._cnn_bank = None

    def of(self, architecture: str) -> np.ndarray:
        """The array an architecture's refit reads: CNN views of the chosen channels, or ViT features."""
        from cytoops import models

        if models.get(architecture).kind == "cnn":
            if self._cnn_bank is None:
                self._cnn_bank = dataset.cnn_view_bank(self.inputs, tuple(self.channels))
            return self._cnn_bank
        vit = self.inputs.vit
        if vit is None or vit.views != self.inputs.bank.views:
            raise ValueError(f"{architecture} needs the ViT features of these views: pass --features")
        return vit.values


def _refit_and_log(
    r,
    fitter,
    source: _Sources,
    run: Provenance,
    p: Params,
    is_champion: bool,
    predictable,
    listing: dict,
) -> None:
    """Refit one (architecture, augmentation, cytokine) row, log it in the open nested run and, for a
    cytokine's best CNN, register it (aliases best-cnn and, if predictable, champion); say what was done."""
    from cytoops import models, serving

    architecture, augmentation, kind = r.architecture, r.augmentation, models.get(r.architecture).kind
    x, y, example, n_wells = training_set(source.inputs, source.of(architecture), r.cytokine, augmentation)
    seed = refit_seed(architecture, augmentation, r.cytokine, p.train.seed)
    model = refit(fitter, architecture, x, y, int(r.epochs), seed)
    tags = _tags(r, kind, n_wells, len(x), source, run, p)
    meta = {k: (v if isinstance(v, int | float | str) else str(v)) for k, v in tags.items()}
    if kind == "cnn":
        meta["channels"] = source.channels
    else:
        meta["backbone"] = source.vit_meta
    logged = {
        "name": f"model-{tags['slug']}",
        "meta": meta,
        "params": {"epochs": int(r.epochs), "n_wells": n_wells, "n_images": len(x)},
        "tags": {"cytokine": r.cytokine, "champion_candidate": str(is_champion).lower()},
    }
    if kind == "cnn":
        recipe = serving.recipe(source.scaling, source.inputs.channels, source.channels, source.image_size)
        info = log_cnn_model(model, recipe=recipe, **logged)
    else:
        info = log_keras_model(model, example=example, **logged)
    line = (
        f"register: {r.cytokine}: {architecture}/{augmentation} (CV F1 {float(r.f1):.3f}), "
        f"{int(r.epochs)} epochs on {n_wells} wells"
    )
    if is_champion:
        called = bool(predictable.get(r.cytokine, False))
        entry = register_version(info, r.cytokine, tags, p.tracking.promote, called)
        keys = (
            "cytokine",
            "slug",
            "architecture",
            "augmentation",
            "cv_f1",
            "epochs",
            "n_wells",
            "source_run_id",
        )
        listing["registered"].append({**{k: tags[k] for k in keys}, **entry})
        if called:
            listing["champions"].append(r.cytokine)
        line += _registered_note(entry, r.cytokine, called)
    log.info(line)


def _tags(r, kind: str, n_wells: int, n_images: int, source: _Sources, run: Provenance, p: Params) -> dict:
    """The tags of a refit model (and of its registered version): where it came from and what it reads."""
    tracked = run.tracked
    return {
        "cytokine": r.cytokine,
        "slug": slugify(r.cytokine),
        "cv_f1": round(float(r.f1), 4),
        "cv_roc_auc": round(float(r.roc_auc), 4)
        if hasattr(r, "roc_auc") and not pd.isna(r.roc_auc)
        else "nan",
        "architecture": r.architecture,
        "augmentation": r.augmentation,
        "epochs": int(r.epochs),
        "n_wells": n_wells,
        "n_images": n_images,
        "image_size": source.image_size,
        "channels": ",".join(source.channels) if kind == "cnn" else "actin,mito,nucleus (ViT features)",
        "wrangle_method": p.wrangle.method,
        "wrangle_threshold": p.wrangle.threshold,
        "source_run_id": tracked.nested[f"{r.architecture}/{r.augmentation}"],
        "pipeline_run_id": tracked.run_id,
        "data_version": run.data_version,
        "git_commit": run.git_commit,
        "output": OUTPUT if kind == "cnn" else "P(responder) (sigmoid) of the ViT features",
    }


def _registered_note(entry: dict, cytokine: str, called: bool) -> str:
    """What happened to the aliases, for register's line about one cytokine."""
    held = "" if entry["promoted"] else f" (kept v{entry['best_cnn_version']}: higher CV F1)"
    note = f" -> {entry['registered_model']} v{entry['version']}" + (
        f" @{BEST_ALIAS}" if entry["promoted"] else held
    )
    if called:
        return note + f"; predictable: @{ALIAS} = v{entry['champion_version']}"
    if entry["champion_removed"]:
        return note + (
            f"; not predictable: @{ALIAS} removed from v{entry['champion_removed']} "
            f"(the verdict no longer calls {cytokine} predictable)"
        )
    return note + f"; not predictable: no @{ALIAS}"


def write(listing: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(listing, indent=2) + "\n")


# ---- commands --------------------------------------------------------------------------------


def command(
    run_file: Path = typer.Option(
        Path("work/track/run.json"), "--run", help="Run ids written by `cytoops track`."
    ),
    trained: Path = typer.Option(Path("work/train"), "--trained", help="Folder written by `cytoops train`."),
    wrangled: Path = typer.Option(
        Path("work/wrangle"), "--wrangled", help="Folder written by `cytoops wrangle`."
    ),
    views: Path = typer.Option(
        Path("work/augment/views.npz"), "--views", help="View bank of `cytoops augment`."
    ),
    vit_features: Path | None = typer.Option(
        None, "--features", help="ViT features (needed by log_models: all)."
    ),
    scores: Path = typer.Option(
        Path("reports/f1_per_cytokine.csv"), "--scores", help="Mean F1 per model and cytokine."
    ),
    verdict: Path = typer.Option(
        Path("reports/predictable.csv"),
        "--verdict",
        help="The verdict's predictable.csv (cytokine, predictable): only predictable ones get @champion.",
    ),
    data_dvc: Path = typer.Option(
        Path("data.dvc"), "--data-dvc", help="The .dvc file of the data (its md5 is a tag)."
    ),
    out: Path = typer.Option(
        Path("work/register/registered.json"), "--out", help="The listing of what was registered."
    ),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set tracking.log_models=all"),
) -> None:
    """Refit each kept cytokine's best CNN on all its wells, log it to MLflow (a pyfunc answering P(responder)
    for raw thumbnails), register it as cytoops-<slug>@best-cnn, and @champion when the verdict called the
    cytokine predictable; write the listing."""
    p = load_params(params_file, overrides)
    tracked = tracking.Tracked.load(run_file)
    connect(p.tracking.experiment)
    commit = tracking.git_info().get("git_commit", "")
    run = Provenance(tracked, tracking.data_version(data_dvc), commit)
    evidence = load_evidence(trained, wrangled, views, vit_features, scores, verdict, p)
    with tracking.resume(tracked, "register"):
        listing = register(run, evidence, p)
    write(listing, out)
    log.info(f"register: listing -> {out}")
