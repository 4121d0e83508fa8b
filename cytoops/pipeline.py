"""`cytoops run`: every stage in one process, the same code `dvc repro` runs stage by stage.

For users without DVC and for `mlflow run`. The outputs land under one folder, laid out as dvc.yaml lays
out the repository: wrangle/, augment/views.npz, features/vit.npz, train/, reports/, metrics/summary.json.
Each stage's values pass to the next in memory (the files are written for the user and for reruns, never
read back); the values are those the stages read from the files under `dvc repro`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import typer

from cytoops import augment, cvresult, dataset, evaluate, features, profile, train, wrangle
from cytoops.params import Params, architecture_kind
from cytoops.params import load as load_params
from cytoops.verdict import stage as verdict_stage
from cytoops.verdict.result import Verdict

log = logging.getLogger(__name__)


def prepare(data: Path, out: Path, p: Params) -> wrangle.Wrangled:
    """Read and wrangle the plates, then stop with one line (ValueError) when nothing could be trained: no
    cytokine kept, or too few treatment groups for the folds. Nothing here opens an MLflow run."""
    w = wrangle.run(data, out / "wrangle", p.wrangle)
    kept = wrangle.kept_cytokines(w.cytokines)
    log.info(f"wrangle: {len(w.wells)} wells, {len(kept)} of {len(w.cytokines)} cytokines kept")
    train.check_trainable(kept, w.labels, w.wells, p.train, out / "wrangle" / "cytokines.csv")
    return w


@dataclass(frozen=True)
class Outcome:
    """What the stages made, as values: what `cytoops run` hands track and register (nothing read back)."""

    inputs: dataset.Inputs
    result: cvresult.Result
    summary: dict
    means: pd.DataFrame
    verdict: Verdict
    scaling: pd.DataFrame
    normalization: dict | None  # the profile's per-plate statistics, where the profile ran


def run_all(data: Path, out: Path, p: Params) -> Outcome:
    return run_rest(prepare(data, out, p), data, out, p)


def run_rest(w: wrangle.Wrangled, data: Path, out: Path, p: Params) -> Outcome:
    """Every stage after wrangle; stops with one line quoting failures.csv when no unit was trained."""
    bank = augment.make_bank(w.images, p.augment.strategies)
    augment.save(bank, out / "augment" / "views.npz")
    vit = None
    if any(architecture_kind(a) == "vit" for a in p.train.architectures):
        if p.features.vit_weights is None:
            log.warning(features.RANDOM_BACKBONE_WARNING)
        vit = features.compute(bank, p.features)
        features.save(vit, out / "features" / "vit.npz")
    table, normalization = None, None
    if "profile" in p.train.architectures:
        profile_path = out / "profile" / "profile.parquet"
        profiled = profile.profile_plates(w.images, w.wells, w.channels, workers=0)
        table, normalization = profiled.table, profiled.normalization
        profile.save(table, profile_path)
        profile.save_normalization(profiled.normalization, out / "profile" / "normalization.json")
        log.info(f"profile: {len(w.wells)} wells measured -> {profile_path}")
    inputs = dataset.make_inputs(w, bank, vit, table, p)
    result = train.cross_validate(inputs, p.train, cache=out / "cache" / "train")
    cvresult.save(result, out / "train")
    cvresult.check_trained(result.fits, result.failures, out / "train" / "failures.csv")
    reports = out / "reports"
    summary, means = evaluate.run(result, w.cytokines, reports, out / "metrics" / "summary.json", p.evaluate)
    vit_pretrained = vit.pretrained if vit is not None else None
    v = verdict_stage.run(
        w, result, table, vit_pretrained, data, reports, out / "metrics" / "verdict.json", p
    )
    return Outcome(inputs, result, summary, means, v, w.scaling, normalization)


def track_and_register(tracked, outcome: Outcome, data_dvc: Path, out: Path, p: Params) -> None:
    """Under the open parent run `tracked`: log the run's values to MLflow and register each cytokine's
    models, as the track and register stages do from their files."""
    from cytoops import register, tracking

    reports, summary_file = out / "reports", out / "metrics" / "summary.json"
    evaluated = tracking.Evaluated(
        result=outcome.result,
        means=outcome.means,
        summary=outcome.summary,
        predictable=outcome.verdict.table,
        artifacts=tracking.report_artifacts(reports, summary_file),
    )
    tracking.log_results(tracked, evaluated, p)
    tracked.save(out / "track" / "run.json")
    evidence = register.Evidence(
        inputs=outcome.inputs,
        result=outcome.result,
        means=outcome.means,
        verdict=outcome.verdict.table,
        scaling=outcome.scaling,
        normalization=outcome.normalization,
    )
    commit = tracking.git_info().get("git_commit", "")
    run = register.Provenance(tracked, tracking.data_version(data_dvc), commit)
    register.write(register.register(run, evidence, p), out / "register" / "registered.json")


def command(
    data: Path = typer.Option(..., "--data", help="Folder of plates (data/<plate-id>/...)."),
    out: Path = typer.Option(..., "--out", help="Folder for every output of every stage."),
    params_file: Path | None = typer.Option(
        None, "--params", help="params.yaml to read (default: built-in defaults)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a param, repeatable: --set train.epochs=5"
    ),
    track: bool = typer.Option(True, "--track/--no-track", help="Log to MLflow and register the champions."),
) -> None:
    """Run wrangle, augment, features, train and evaluate in-process (no DVC needed); then log the run to
    MLflow and register each cytokine's champion (as the DVC stages track and register do)."""
    from cytoops import store, tracking

    p = load_params(params_file, overrides)
    if not track:
        outcome = run_all(data, out, p)
    else:
        s = store.connect(p.tracking.experiment)  # a store that does not answer fails here, before training
        # the plate is read (and rejected, if it must be) before the run opens: no FAILED run for a bad plate
        w = prepare(data, out, p)
        data_dvc = Path(data).resolve().parent / f"{Path(data).resolve().name}.dvc"
        with tracking.pipeline_run(s, p, data_dvc=data_dvc, stage="run") as tracked:
            outcome = run_rest(w, data, out, p)
            track_and_register(tracked, outcome, data_dvc, out, p)
    summary = outcome.summary
    log.info(
        json.dumps(
            {k: summary[k] for k in ("best_model", "n_cytokines_kept", "n_cytokines_predicted_by_any")}
        )
    )
