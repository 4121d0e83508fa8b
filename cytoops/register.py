"""register: what the verdict and cross-validation chose, refit on all its wells, in the model registry.

Per kept cytokine, versions of `cytoops-<slug>`:
- its best CNN (wide_cnn or deep_cnn, any augmentation, by mean CV F1): alias `best-cnn`, moved (by default)
  only to a version whose CV F1 is at least the current one's on the same data version (`tracking.promote`);
- where the verdict called the cytokine predictable, the predictor that earned the call (predictable.csv's
  `best_predictor`, of any image family: a study CNN or ViT, the profile model, the multitask or all-wells
  CNN, cell count): alias `champion` (the best CNN's own version when that is the best predictor). A
  `champion` left on a cytokine the verdict no longer calls predictable is removed, and the command says so.

Each model is refit by `refit` with the recipe that cross-validated it, and logged as a pyfunc that answers
P(responder) for raw thumbnails (`servable`) in the nested run of its (architecture, augmentation) (cell
count, a baseline, in the pipeline's run); its version's tags say its family, CV F1, CV ROC AUC with its
interval, q, the data version and the source run. `tracking.log_models: all` also logs every other
cross-validated model of the study; `none` logs none. `best_cnns`, `read_verdict` and `champion_rows` are the
core; the rest is the edge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from cytoops import cvresult, dataset, registry, tables, tracking, wrangle
from cytoops.params import ARCHITECTURES, CNN_KINDS, Params
from cytoops.params import load as load_params
from cytoops.plate import slugify
from cytoops.refit import CELL_COUNT, Refit, Refitter, epochs_for
from cytoops.registry import ALIAS, BEST_ALIAS, model_name
from cytoops.store import TrackingError, connect, retry

log = logging.getLogger(__name__)

CNNS = tuple(a for a, kind in ARCHITECTURES.items() if kind == "cnn")  # what `best-cnn` may be
VERDICT_COLUMNS = ("cytokine", "predictable", "best_predictor")


# ---- core --------------------------------------------------------------------------------


def best_cnns(means: pd.DataFrame, fits: pd.DataFrame, kept, default_epochs: int) -> pd.DataFrame:
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


def all_models(means: pd.DataFrame, fits: pd.DataFrame, kept, default_epochs: int) -> pd.DataFrame:
    """Every study (architecture, augmentation, kept cytokine) cross-validated (`log_models: all`)."""
    study = [a for a, kind in ARCHITECTURES.items() if kind in ("cnn", "vit")]
    m = means[means.cytokine.isin(list(kept)) & means.architecture.isin(study)].copy().reset_index(drop=True)
    return m.assign(
        epochs=[
            epochs_for(fits, r.architecture, r.augmentation, r.cytokine, default_epochs)
            for r in m.itertuples()
        ]
    )


def read_verdict(path: Path) -> pd.DataFrame:
    """The verdict's reports/predictable.csv: one row per kept cytokine with `predictable` (True/False) and
    `best_predictor` ("architecture/augmentation" of its best image predictor), read typed."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run the verdict stage (dvc repro verdict) first")
    table = tables.read(path, empty_is_missing=False)
    missing = [c for c in VERDICT_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{path} has no column {', '.join(missing)}: expected {', '.join(VERDICT_COLUMNS)} (rerun the "
            "verdict stage: dvc repro -f verdict)"
        )
    return table


def champion_rows(verdict: pd.DataFrame) -> pd.DataFrame:
    """The predictable cytokines and the predictor that earned each call: family (architecture or cell_count),
    augmentation, and the verdict's figures for its version tags."""
    called = verdict[verdict.predictable.astype(bool)].copy()
    parts = called.best_predictor.astype(str).str.split("/", n=1)
    called["family"] = parts.str[0]
    called["augmentation"] = parts.str[1].fillna("none")
    return called.reset_index(drop=True)


# ---- the values register reads -----------------------------------------------------------------


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
    verdict: pd.DataFrame  # the verdict's table (predictable.csv): the call and best predictor per cytokine
    scaling: pd.DataFrame  # wrangle's channel constants per plate: a served model scales raw thumbnails so
    normalization: dict | None = None  # the profile's per-plate statistics (`profile.load_normalization`)

    @property
    def predictable(self) -> dict[str, bool]:
        return dict(zip(self.verdict.cytokine, self.verdict.predictable.astype(bool), strict=True))


def load_evidence(
    trained: Path,
    wrangled: Path,
    views: Path,
    vit_features: Path | None,
    profile_table: Path | None,
    profile_stats: Path | None,
    scores: Path,
    verdict: Path,
    p: Params,
) -> Evidence:
    """The Evidence from the stage files; ViT features and the profile only where their files exist."""
    from cytoops import profile

    table = read_verdict(verdict)
    have = {*CNN_KINDS, "multitask"}  # what needs no file beyond the view bank
    vit = vit_features if vit_features is not None and Path(vit_features).exists() else None
    prof = profile_table if profile_table is not None and Path(profile_table).exists() else None
    have |= {"vit"} if vit is not None else set()
    have |= {"profile"} if prof is not None else set()
    archs = tuple(a for a in p.train.architectures if ARCHITECTURES.get(a) in have) or CNNS[:1]
    p_inputs = dataclasses.replace(p, train=dataclasses.replace(p.train, architectures=archs))
    stats = profile_stats if prof is not None and profile_stats is not None else None
    normalization = profile.load_normalization(stats) if stats is not None and Path(stats).is_file() else None
    return Evidence(
        inputs=dataset.load_inputs(wrangled, views, vit, p_inputs, prof),
        result=cvresult.load(trained),
        means=tables.read(scores),
        verdict=table,
        scaling=wrangle.load_scaling(wrangled),
        normalization=normalization,
    )


# ---- the stage ----------------------------------------------------------------------------------


def register(run: Provenance, evidence: Evidence, p: Params) -> dict:
    """Refit, log and register under the open parent run: every kept cytokine's best CNN (@best-cnn) and each
    predictable cytokine's best predictor (@champion); return the listing."""
    kept, mode = list(evidence.inputs.kept), p.tracking.log_models
    fits = evidence.result.fits
    cnns = best_cnns(evidence.means, fits, kept, p.train.epochs)
    champions = champion_rows(evidence.verdict)
    listing = _listing(run.tracked, mode, kept, cnns)
    if mode == "none":
        listing["registered"] = [_unlogged_entry(r, evidence.predictable) for r in cnns.itertuples()]
        log.info(f"register: tracking.log_models is none: {len(cnns)} best CNNs chosen, none logged")
        return listing
    todo = all_models(evidence.means, fits, kept, p.train.epochs) if mode == "all" else cnns
    refitter = Refitter(evidence.inputs, evidence.scaling, evidence.normalization, fits, p)
    best_of = {(r.cytokine, r.architecture, r.augmentation) for r in cnns.itertuples()}
    called = {r.cytokine: r for r in champions.itertuples()}
    with _quiet_mlflow():
        for r in todo.sort_values(["architecture", "augmentation", "cytokine"]).itertuples():
            if (r.cytokine, r.architecture, r.augmentation) in best_of:
                _best_cnn(r, refitter, run, p, called.get(r.cytokine), listing)
            else:
                refit = refitter.refit(r.architecture, r.augmentation, r.cytokine)
                _log(refit, run, p, _scores(r, None, r.cytokine in called))
        for cytokine, c in called.items():
            entry = next((e for e in listing["registered"] if e["cytokine"] == cytokine), None)
            if entry is None or entry.get("champion_version") is None:
                _champion(c, refitter, run, p, listing)
        for cytokine in sorted(set(kept) - set(called)):
            _drop_champion(cytokine, listing)
    log.info(
        f"register: {len(listing['registered'])} best CNNs registered (@{BEST_ALIAS}), "
        f"{len(listing['champions'])} champions (@{ALIAS}: the verdict's best predictor) ({mode})"
    )
    return listing


def _best_cnn(r, refitter: Refitter, run: Provenance, p: Params, called, listing: dict) -> None:
    """Refit, log, register a cytokine's best CNN (@best-cnn), @champion too when it is the best predictor."""
    fitted = refitter.refit(r.architecture, r.augmentation, r.cytokine)
    is_best = called is not None and (called.family, called.augmentation) == (r.architecture, r.augmentation)
    info, tags = _log(fitted, run, p, _scores(r, called if is_best else None, called is not None))
    client, name = _client(), model_name(r.cytokine)
    version = _register(info, r.cytokine, tags)
    best, promoted = _promote_best_cnn(client, name, version, tags, p.tracking.promote)
    entry = {
        **{k: tags[k] for k in ("cytokine", "slug", "architecture", "augmentation", "cv_f1", "epochs")},
        **{k: tags[k] for k in ("n_wells", "source_run_id")},
        "registered_model": name,
        "version": str(version.version),
        "best_cnn_version": str(best.version),
        "promoted": promoted,
        "predictable": called is not None,
        "champion_version": None,
        "champion_removed": None,
        "model_uri": info.model_uri,
    }
    line = f"register: {r.cytokine}: best CNN {r.architecture}/{r.augmentation} (CV F1 {float(r.f1):.3f})"
    line += f" -> {name} v{version.version}" + (f" @{BEST_ALIAS}" if promoted else f" (kept v{best.version})")
    if is_best:
        retry(client.set_registered_model_alias, name, ALIAS, version.version)
        entry["champion_version"] = str(version.version)
        listing["champions"].append(_champion_entry(r.cytokine, called, version, info))
        line += f", @{ALIAS}: the verdict's best predictor"
    listing["registered"].append(entry)
    log.info(line)


def _champion(c, refitter: Refitter, run: Provenance, p: Params, listing: dict) -> None:
    """Refit, log and register a predictable cytokine's best predictor of any family as its @champion."""
    try:
        fitted = refitter.refit(c.family, c.augmentation, c.cytokine)
    except ValueError as err:
        reason = f"{c.best_predictor}: {err}"
        listing["not_registered"].append({"cytokine": c.cytokine, "reason": f"champion {reason}"})
        _say_unavailable(c.cytokine, reason)
        return
    try:
        info, tags = _log(fitted, run, p, _scores(None, c, True))
    except ValueError as err:  # servable.build: a family that cannot be served says why
        listing["not_registered"].append(
            {"cytokine": c.cytokine, "reason": f"champion {c.best_predictor}: {err}"}
        )
        _say_unavailable(c.cytokine, f"{c.best_predictor}: {err}")
        return
    version = _register(info, c.cytokine, tags)
    client = _client()
    retry(client.set_registered_model_alias, model_name(c.cytokine), ALIAS, version.version)
    with contextlib.suppress(_mlflow_error()):  # the tag is absent unless an earlier run set it
        client.delete_registered_model_tag(model_name(c.cytokine), registry.UNAVAILABLE_TAG)
    for entry in listing["registered"]:
        if entry["cytokine"] == c.cytokine:
            entry["champion_version"] = str(version.version)
    listing["champions"].append(_champion_entry(c.cytokine, c, version, info))
    log.info(
        f"register: {c.cytokine}: predictable, best predictor {c.best_predictor} (CV ROC AUC "
        f"{float(c.roc_auc):.2f}) refit on {fitted.n_wells} wells -> {model_name(c.cytokine)} "
        f"v{version.version} @{ALIAS}"
    )


def _say_unavailable(cytokine: str, reason: str) -> None:
    """A predictable cytokine whose best predictor could not be refit or served: said on screen and in the
    registry (`cytoops best-model` reads it), never replaced silently by another model."""
    client, name = _client(), model_name(cytokine)
    log.warning(f"register: {cytokine}: no @{ALIAS}: its best predictor {reason}")
    if registry.alias_version(client, name, ALIAS) is not None:
        retry(client.delete_registered_model_alias, name, ALIAS)
    with contextlib.suppress(_mlflow_error()):  # no registered model yet (no best CNN): said above
        client.set_registered_model_tag(name, registry.UNAVAILABLE_TAG, reason[:500])


def _drop_champion(cytokine: str, listing: dict) -> None:
    client, name = _client(), model_name(cytokine)
    had = registry.alias_version(client, name, ALIAS)
    if had is None:
        return
    retry(client.delete_registered_model_alias, name, ALIAS)
    for entry in listing["registered"]:
        if entry["cytokine"] == cytokine:
            entry["champion_removed"] = str(had.version)
    log.info(
        f"register: {cytokine}: not predictable: @{ALIAS} removed from v{had.version} (the verdict no longer "
        f"calls {cytokine} predictable)"
    )


def _champion_entry(cytokine: str, c, version, info) -> dict:
    return {
        "cytokine": cytokine,
        "family": c.family,
        "augmentation": c.augmentation,
        "version": str(version.version),
        "cv_roc_auc": registry.tag_number(getattr(c, "roc_auc", None)),  # null where not measured
        "model_uri": info.model_uri,
    }


# ---- logging and registering ----------------------------------------------------------------------


def _mlflow_error() -> type[Exception]:
    from mlflow.exceptions import MlflowException

    return MlflowException


def _client():
    import mlflow

    return mlflow.MlflowClient()


def _scores(r, called, predictable: bool) -> dict:
    """Version tags of what chose a model: its CV F1 (study models) and, for the verdict's best predictor, the
    verdict's CV ROC AUC with its interval and q."""
    tags = {"predictable": str(predictable).lower()}
    tags["cv_f1"] = registry.tag_text(getattr(r, "f1", None))
    tags["cv_roc_auc"] = registry.tag_text(getattr(r, "roc_auc", None))
    if called is not None:
        for key in ("roc_auc", "roc_auc_lo", "roc_auc_hi"):
            tags[f"cv_{key}"] = registry.tag_text(getattr(called, key, None))
        tags["q"] = registry.tag_text(getattr(called, "q", None))
        tags["best_predictor"] = str(called.best_predictor)
    return tags


def _log(fitted: Refit, run: Provenance, p: Params, scores: dict) -> tuple:
    """Log a refit model in the nested run of its (architecture, augmentation), or the pipeline's run for a
    baseline family; returns (the model info, its tags)."""
    import mlflow.pyfunc

    from cytoops import servable

    tracked, key = run.tracked, f"{fitted.family}/{fitted.augmentation}"
    nested = tracked.nested.get(key)
    if nested is None and fitted.family != CELL_COUNT:
        raise TrackingError(f"the track stage logged no nested run for {key}: rerun it (dvc repro -f track)")
    tags = _tags(fitted, run, p, scores, nested or tracked.run_id)
    with tempfile.TemporaryDirectory() as folder:
        served = servable.build(
            fitted.family, fitted.fitted, fitted.recipe, Path(folder), cytokine=fitted.cytokine
        )
        kwargs = served.log_kwargs()
        kwargs["metadata"]["cytoops"].update({k: str(v) for k, v in tags.items()})
        sizes = {"epochs": fitted.epochs, "n_wells": fitted.n_wells, "n_images": fitted.n_images}
        with tracking.active_run(nested, nested=True) if nested else contextlib.nullcontext():
            info = retry(
                mlflow.pyfunc.log_model,
                name=f"model-{tags['slug']}",
                params={k: str(v) for k, v in sizes.items()},
                tags={"cytokine": fitted.cytokine, "family": fitted.family},
                **kwargs,
            )
    return info, tags


def _tags(fitted: Refit, run: Provenance, p: Params, scores: dict, source_run: str) -> dict:
    """The tags of a refit model's registered version: what it is, how sure, where it came from."""
    r = fitted.recipe
    return {
        "cytokine": fitted.cytokine,
        "slug": slugify(fitted.cytokine),
        "family": fitted.family,
        "architecture": fitted.family,
        "augmentation": fitted.augmentation,
        **scores,
        "epochs": fitted.epochs if fitted.epochs is not None else "n/a",
        "n_wells": fitted.n_wells,
        "n_images": fitted.n_images,
        "image_size": r.image_size,
        "channels": ",".join(r.plate_channels),
        "model_channels": ",".join(r.channels),
        "wrangle_method": p.wrangle.method,
        "wrangle_threshold": p.wrangle.threshold,
        "source_run_id": source_run,
        "pipeline_run_id": run.tracked.run_id,
        "data_version": run.data_version,
        "git_commit": run.git_commit,
        "output": "P(responder) per thumbnail (column p_responder), from raw thumbnails (cytoops.servable)",
    }


def _register(info, cytokine: str, tags: dict):
    import mlflow

    name = model_name(cytokine)
    version = retry(mlflow.register_model, info.model_uri, name, tags={k: str(v) for k, v in tags.items()})
    retry(_client().set_registered_model_tag, name, "cytokine", cytokine)
    return version


def _promote_best_cnn(client, name: str, version, tags: dict, promote: str):
    """Move @best-cnn to `version` unless `promote` is best and the current one scored higher on the same
    data: (the version holding @best-cnn, whether it moved)."""
    current = registry.alias_version(client, name, BEST_ALIAS)
    if promote == "best" and current is not None and current.version != version.version:
        same_data = current.tags.get("data_version") == str(tags.get("data_version"))
        theirs, ours = registry.tag_number(current.tags.get("cv_f1")), registry.tag_number(tags["cv_f1"])
        if same_data and theirs is not None and ours is not None and theirs > ours:
            return current, False
    retry(client.set_registered_model_alias, name, BEST_ALIAS, version.version)
    return version, True


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow's own event lines off the screen while register logs and registers (model registered, version
    created, artifact download bars, the note that a pyfunc is cloudpickled): register says what it did in one
    line per model, and MLflow's errors still raise. MLflow writes them to whatever sys.stderr is at the
    time (its disable_logging() is undone by its own internals during log_model)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _listing(tracked: tracking.Tracked, mode: str, kept: list[str], cnns: pd.DataFrame) -> dict:
    """The listing register writes, before anything is registered."""
    return {
        "tracking_uri": tracked.tracking_uri,
        "experiment": tracked.experiment,
        "pipeline_run_id": tracked.run_id,
        "log_models": mode,
        "registered": [],  # every kept cytokine's best CNN, alias best-cnn
        "champions": [],  # each predictable cytokine's best predictor, alias champion
        "not_registered": [
            {"cytokine": c, "reason": "no CNN was cross-validated on it (train.architectures)"}
            for c in kept
            if c not in set(cnns.cytokine)
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


def write(listing: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(listing, indent=2) + "\n")


# ---- command ----------------------------------------------------------------------------------


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
        None, "--features", help="ViT features (for a ViT best predictor, and log_models: all)."
    ),
    profile_table: Path | None = typer.Option(
        None,
        "--profile",
        help="Per-well profile of `cytoops profile`: for a profile or cell-count champion.",
    ),
    profile_stats: Path | None = typer.Option(
        None, "--profile-stats", help="Normalization statistics of `cytoops profile`: for a profile champion."
    ),
    scores: Path = typer.Option(
        Path("reports/f1_per_cytokine.csv"), "--scores", help="Mean F1 per model and cytokine."
    ),
    verdict: Path = typer.Option(
        Path("reports/predictable.csv"),
        "--verdict",
        help="The verdict's predictable.csv: a predictable cytokine's best predictor becomes its @champion.",
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
    """Refit each kept cytokine's best CNN (cytoops-<slug>@best-cnn) and each predictable cytokine's best
    predictor of any family (@champion) on all their wells; log them to MLflow as pyfuncs answering
    P(responder) for raw thumbnails; write the listing."""
    p = load_params(params_file, overrides)
    tracked = tracking.Tracked.load(run_file)
    connect(p.tracking.experiment)
    commit = tracking.git_info().get("git_commit", "")
    run = Provenance(tracked, tracking.data_version(data_dvc), commit)
    evidence = load_evidence(
        trained, wrangled, views, vit_features, profile_table, profile_stats, scores, verdict, p
    )
    with tracking.resume(tracked, "register"):
        listing = register(run, evidence, p)
    write(listing, out)
    log.info(f"register: listing -> {out}")
