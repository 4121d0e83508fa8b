"""registry: the MLflow model registry's read side: each cytokine's registered model and its aliases.

`cytoops-<slug>` is a kept cytokine's registered model; its alias `best-cnn` marks its best CNN and, when the
verdict called the cytokine predictable, `champion` marks the model that earned the call (`register` sets
them). `champion` says what the registry holds for a cytokine; `predict` and `cytoops best-model` read it.
"""

from __future__ import annotations

import json

import typer

from cytoops.plate import slugify
from cytoops.store import TrackingError, connect, retry

PREFIX = "cytoops-"
ALIAS = "champion"  # the verdict's best predictor of a cytokine it called predictable (any image family)
SCORE_TAGS = ("cv_f1", "cv_roc_auc", "cv_roc_auc_lo", "cv_roc_auc_hi", "q")  # how sure, on each version
TRANSFER_TAGS = ("transfer_roc_auc", "transfer_roc_auc_lo", "transfer_roc_auc_hi")  # set by `cytoops predict`
UNAVAILABLE_TAG = "champion_unavailable"  # on a registered model: why its best predictor could not be served
BEST_ALIAS = "best-cnn"  # the best CNN of every kept cytokine, predictable or not


def model_name(cytokine: str) -> str:
    """Registered model name of a cytokine (its name as in the plate, or its slug)."""
    return PREFIX + slugify(cytokine)


def alias_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return retry(client.get_model_version_by_alias, name, alias)
    except MlflowException:
        return None


def registered_names(client) -> list[str]:
    names, token = [], None
    while True:
        page = retry(
            client.search_registered_models,
            filter_string=f"name LIKE '{PREFIX}%'",
            max_results=200,
            page_token=token,
        )
        names += [m.name for m in page]
        token = page.token
        if not token:
            return sorted(names)


def resolve_name(client, cytokine: str) -> str:
    """The registered model of a cytokine named as in the plate or by its slug (any letter case)."""
    try:
        wanted = model_name(cytokine)
    except ValueError as err:
        raise TrackingError(str(err)) from None
    names = registered_names(client)
    for name in names:
        if name == wanted:
            return name
    for name in names:
        if name.lower() == wanted.lower():
            return name
    have = ", ".join(n[len(PREFIX) :] for n in names) or "none"
    raise TrackingError(f"no registered model {wanted} for {cytokine!r}; registered cytokines: {have}")


def champion(client, cytokine: str) -> dict:
    """What the registry says about a cytokine's champion; when it has none (the verdict did not call it
    predictable), its best CNN (@best-cnn), with a `note` saying so."""
    name = resolve_name(client, cytokine)
    alias, note = ALIAS, ""
    mv = alias_version(client, name, ALIAS)
    if mv is None:
        mv = alias_version(client, name, BEST_ALIAS)
        if mv is None:
            raise TrackingError(f"{name} has no version with the alias {ALIAS!r} or {BEST_ALIAS!r}")
        alias = BEST_ALIAS
        unavailable = retry(client.get_registered_model, name).tags.get(UNAVAILABLE_TAG)
        why = (
            f"the verdict called {cytokine} predictable, but its best predictor could not be served: "
            f"{unavailable}"
            if unavailable
            else f"the verdict did not call {cytokine} predictable"
        )
        note = (
            f"{name} has no @{ALIAS} ({why}): using its best CNN, @{BEST_ALIAS} (v{mv.version}); its calls "
            "may be no better than chance"
        )
    tags = dict(mv.tags)
    return {
        "cytokine": tags.get("cytokine", cytokine),
        "registered_model": name,
        "version": str(mv.version),
        "alias": alias,
        "note": note,
        "model_uri": f"models:/{name}@{alias}",
        "family": tags.get("family", tags.get("architecture")),
        "architecture": tags.get("architecture"),
        "augmentation": tags.get("augmentation"),
        **{key: tag_number(tags.get(key)) for key in (*SCORE_TAGS, *TRANSFER_TAGS)},
        "transfer_plates": tags.get("transfer_plates"),
        "epochs": int(tags["epochs"]) if tags.get("epochs", "").isdigit() else None,
        "n_wells": int(tags["n_wells"]) if tags.get("n_wells", "").isdigit() else None,
        "channels": tags.get("channels", "").split(",") if tags.get("channels") else [],
        "image_size": int(tags["image_size"]) if tags.get("image_size", "").isdigit() else None,
        "wrangle_method": tags.get("wrangle_method"),
        "wrangle_threshold": float(tags["wrangle_threshold"]) if tags.get("wrangle_threshold") else None,
        "source_run_id": tags.get("source_run_id"),
        "pipeline_run_id": tags.get("pipeline_run_id"),
        "data_version": tags.get("data_version"),
        "run_id": mv.run_id,
    }


def tag_number(text: str | None) -> float | None:
    """A number kept as a version tag (`tag_text`), or None where it was not measured."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if value != value else value  # NaN: not measured


def tag_text(value) -> str:
    """A number as a version tag: four decimals, or 'nan' where it was not measured."""
    number = tag_number(value)
    return "nan" if number is None else str(round(number, 4))


def how_sure(info: dict) -> str:
    """The cross-validated figures a version was chosen on, as one phrase."""
    parts = []
    if info.get("cv_roc_auc") is not None:
        interval = (
            f" ({info['cv_roc_auc_lo']:.2f}-{info['cv_roc_auc_hi']:.2f})"
            if info.get("cv_roc_auc_lo") is not None and info.get("cv_roc_auc_hi") is not None
            else ""
        )
        parts.append(f"CV ROC AUC {info['cv_roc_auc']:.2f}{interval}")
    if info.get("q") is not None:
        parts.append(f"q {info['q']:.3g}")
    if info.get("cv_f1") is not None:
        parts.append(f"CV F1 {info['cv_f1']:.2f}")
    return ", ".join(parts) or "no cross-validated score recorded"


def best_model_command(
    cytokine: str = typer.Argument(
        ..., help="Cytokine as named in the plate (IL-6, TNF-α) or its slug (TNF-alpha)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    """The registered champion of a cytokine (else its best CNN, said so): model URI, version, architecture,
    augmentation, CV F1."""
    import mlflow

    connect()
    info = champion(mlflow.MlflowClient(), cytokine)
    if info["note"]:
        typer.echo(f"note: {info['note']}", err=True)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{info['cytokine']}: {info['model_uri']} (version {info['version']})")
    typer.echo(f"  {info['family']} ({info['architecture']}/{info['augmentation']}): {how_sure(info)}")
    epochs = f"{info['epochs']} epochs on " if info["epochs"] else ""
    typer.echo(
        f"  refit {epochs}{info['n_wells']} wells, channels {','.join(info['channels'])}, "
        f"{info['image_size']}x{info['image_size']}"
    )
    if info.get("transfer_roc_auc") is not None:
        typer.echo(
            f"  on another plate ({info['transfer_plates']}): ROC AUC {info['transfer_roc_auc']:.2f} "
            f"({info['transfer_roc_auc_lo']:.2f}-{info['transfer_roc_auc_hi']:.2f}) (cytoops predict)"
        )
    else:
        typer.echo("  not yet tested on another plate: run `cytoops predict` on a labelled plate")
    typer.echo(f"  source run {info['source_run_id']} (pipeline run {info['pipeline_run_id']})")
