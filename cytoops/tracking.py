"""tracking: MLflow runs: one parent run per pipeline execution, one nested run per model, what each logs.

Every MLflow call of cytoops lives here or in the `register`/`predict` commands: the cores (wrangle, augment,
train, evaluate) never import MLflow. `cytoops track` (a DVC stage after evaluate, or the tail of
`cytoops run`) reads what train and evaluate wrote and logs it:

- the parent run (one per pipeline execution; the run `mlflow run` made when there is one): every param of
  params.yaml (`Params.flat()`), tags `git_commit`, `data_version` (md5 of data.dvc), `dvc_exp_name`, the
  summary metrics, and the figures and summary files as artifacts;
- a nested run per (architecture, augmentation): params `architecture`, `augmentation` and the training
  params; metrics `f1_<slug>` (mean over folds, one per kept cytokine), `roc_auc_<slug>`, `mean_f1`,
  `mean_roc_auc`, `n_predicted`; learning curves `loss_<slug>_f<fold>` and `val_loss_<slug>_f<fold>` with
  step = epoch (`_r<repeat>` before `_f` when train.repeats > 1), sent with `log_batch`.

The store and its robustness (retry, locks, dead runs) are `store`'s; the registry's read side is
`registry`'s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import typer
import yaml

from cytoops import cvresult, tables
from cytoops.params import Params
from cytoops.params import load as load_params
from cytoops.plate import slugify
from cytoops.store import (
    STORE_FILE,
    Store,
    TrackingError,
    connect,
    git,
    one_line,
    owner_tags,
    resolve_uri,
    retry,
    sqlite_path,
)

log = logging.getLogger(__name__)

TAG_ROLE = "cytoops.role"  # pipeline | cv (a nested run per architecture x augmentation)
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
CURVE_KEYS = ("loss", "val_loss")


# ---- runs --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill PID` (SIGTERM) ends the runs as KILLED, like Ctrl-C, instead of leaving them RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def active_run(run_id: str | None = None, *, nested: bool = False, tags: dict | None = None, **start_kwargs):
    """mlflow.start_run that always ends: FINISHED, FAILED on an exception, KILLED on Ctrl-C or SIGTERM.
    The run carries this process's host and pid, so that a later start can tell if it died."""
    import mlflow

    run = retry(
        mlflow.start_run, run_id=run_id, nested=nested, tags={**(tags or {}), **owner_tags()}, **start_kwargs
    )
    try:
        with _sigterm_as_interrupt():
            yield run
    except KeyboardInterrupt:
        _end(run.info.run_id, "KILLED")
        raise
    except BaseException:
        _end(run.info.run_id, "FAILED")
        raise
    _end(run.info.run_id, "FINISHED")


def _end(run_id: str, status: str) -> None:
    import mlflow

    try:
        retry(mlflow.MlflowClient().set_terminated, run_id, status)
    except Exception as err:  # noqa: BLE001 - the store may be what failed: say so, do not mask the cause
        log.warning(f"mlflow: could not mark run {run_id} {status}: {one_line(err)}")
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        with contextlib.suppress(Exception):  # pops the run first, then writes the status (already written)
            mlflow.end_run(status)


def git_info(cwd: Path | None = None) -> dict[str, str]:
    cwd = Path(cwd or Path.cwd())
    commit = git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {}
    dirty = git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower()}


def data_version(data_dvc: Path | None) -> str:
    """The md5 DVC recorded for the data (data.dvc), or 'untracked'."""
    if data_dvc is None or not Path(data_dvc).is_file():
        return "untracked"
    try:
        outs = (yaml.safe_load(Path(data_dvc).read_text()) or {}).get("outs") or []
        return str(outs[0]["md5"]) if outs and outs[0].get("md5") else "untracked"
    except (yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError):
        return "untracked"


def _param_value(value: object) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def log_params(client, run_id: str, values: dict[str, object]) -> None:
    """log_batch of params not yet on the run (MLflow params are write-once; a resumed run keeps its own)."""
    from mlflow.entities import Param

    have = retry(client.get_run, run_id).data.params
    todo = [Param(k, _param_value(v)) for k, v in values.items() if k not in have]
    for i in range(0, len(todo), MAX_PARAMS_PER_BATCH):
        retry(client.log_batch, run_id, params=todo[i : i + MAX_PARAMS_PER_BATCH])


def log_metrics(client, run_id: str, metrics: list) -> None:
    for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        retry(client.log_batch, run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])


def metric_key(*parts: str) -> str:
    """Parts joined by '_', each kept to what MLflow accepts in a key (slugs already are)."""
    return "_".join(re.sub(r"[^A-Za-z0-9_.\-]", "_", str(p)) for p in parts)


@dataclass
class Tracked:
    """What `cytoops track` logged, for `cytoops register` (work/track/run.json)."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    run_id: str  # the parent run
    nested: dict[str, str] = field(default_factory=dict)  # "architecture/augmentation" -> run id

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Tracked:
        if not Path(path).is_file():
            raise TrackingError(f"{path} does not exist: run `cytoops track` (the DVC stage track) first")
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise TrackingError(
                f"{path} is not a run.json written by `cytoops track` ({type(err).__name__}); fix: rerun it "
                f"(dvc repro -f track)"
            ) from None


@contextlib.contextmanager
def pipeline_run(store: Store, p: Params, *, data_dvc: Path | None, stage: str) -> Iterator[Tracked]:
    """The parent run of one pipeline execution, open for the block: the run `mlflow run` made (MLFLOW_RUN_ID)
    when there is one, else a new one named after the DVC experiment when there is one."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    # taken out of the environment: a nested start_run would otherwise resume the parent instead
    run_id = os.environ.pop("MLFLOW_RUN_ID", None) or None
    exp_name = os.environ.get("DVC_EXP_NAME")
    tags = {
        TAG_ROLE: "pipeline",
        "cytoops.stage": stage,
        "data_version": data_version(data_dvc),
        **git_info(),
        **({"dvc_exp_name": exp_name} if exp_name else {}),
        **(
            {"dvc_exp_baseline": os.environ["DVC_EXP_BASELINE_REV"]}
            if os.environ.get("DVC_EXP_BASELINE_REV")
            else {}
        ),
    }
    start: dict = {}
    try:
        if run_id is None:
            start = {
                "experiment_id": store.experiment_id,
                "run_name": f"dvc:{exp_name}" if exp_name else "pipeline",
            }
        else:
            existing = retry(client.get_run, run_id)
            if existing.info.experiment_id != store.experiment_id:
                log.warning(
                    f"mlflow: run {run_id} (made by `mlflow run`) is in experiment "
                    f"{existing.info.experiment_id}, not {store.experiment!r}: use "
                    f"`mlflow run --experiment-name {store.experiment}` to keep "
                    "them together",
                )
        with active_run(run_id, tags=tags, **start) as run:
            parent = run.info.run_id
            log_params(client, parent, p.flat())
            log.info(f"mlflow: run {parent} in experiment {store.experiment!r} at {store.uri}")
            yield Tracked(store.uri, store.experiment, run.info.experiment_id, parent)
    except MlflowException as err:
        raise TrackingError(f"MLflow ({store.uri}): {one_line(err)}") from None


@contextlib.contextmanager
def resume(tracked: Tracked, stage: str) -> Iterator[Tracked]:
    """Reopen the parent run `cytoops track` logged (the register stage adds its models to it)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    store_uri = resolve_uri()
    if store_uri != tracked.tracking_uri:
        raise TrackingError(
            f"the track stage logged to {tracked.tracking_uri} but the store is now {store_uri}: "
            "set MLFLOW_TRACKING_URI back, or rerun the track stage (dvc repro -f track)"
        )
    other = os.environ.pop(
        "MLFLOW_RUN_ID", None
    )  # `mlflow run -e register` made a run: point it at the parent
    try:
        if other and other != tracked.run_id:
            retry(mlflow.MlflowClient().set_tag, other, "cytoops.logged_to", tracked.run_id)
        with active_run(tracked.run_id, tags={f"cytoops.stage.{stage}": "done"}):
            yield tracked
    except MlflowException as err:
        raise TrackingError(f"MLflow ({tracked.tracking_uri}): {one_line(err)}") from None


# ---- what gets logged --------------------------------------------------------------------------------------


def model_metrics(
    means: pd.DataFrame, architecture: str, augmentation: str, f1_cutoff: float
) -> dict[str, float]:
    """Per-model metrics, the same names in every nested run (the chart view compares them as they are):
    f1_<slug> and roc_auc_<slug> per cytokine; mean_f1 and mean_roc_auc over cytokines; n_predicted, the
    cytokines with F1 >= evaluate.f1_cutoff."""
    g = means[(means.architecture == architecture) & (means.augmentation == augmentation)]
    out: dict[str, float] = {}
    for r in g.itertuples():
        slug = slugify(r.cytokine)
        out[metric_key("f1", slug)] = float(r.f1)
        if "roc_auc" in g.columns and not pd.isna(r.roc_auc):
            out[metric_key("roc_auc", slug)] = float(r.roc_auc)
    if len(g):
        out["mean_f1"] = float(g.f1.mean())
        if "roc_auc" in g.columns and g.roc_auc.notna().any():
            out["mean_roc_auc"] = float(g.roc_auc.mean())
        out["n_predicted"] = float((g.f1 >= f1_cutoff).sum())
    return out


def headline_metrics(means: pd.DataFrame, predictable: pd.DataFrame | None) -> tuple[dict[str, float], dict]:
    """The parent run's headline: cytokines predictable (from the verdict, when it ran), the best family
    (the architecture with the highest median over cytokines of its best augmentation's ROC AUC, a tag), the
    median over cytokines of the best model's ROC AUC and mean F1. Returns (metrics, tags)."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    if predictable is not None and "predictable" in predictable.columns:
        calls = predictable.predictable.astype(str).str.lower().eq("true")
        metrics["n_predictable"] = float(calls.sum())
        tags["predictable"] = ", ".join(predictable.cytokine[calls].astype(str)) or "none"
    if len(means) and "roc_auc" in means.columns and means.roc_auc.notna().any():
        best = means.groupby("cytokine").roc_auc.max()
        metrics["median_best_roc_auc"] = float(best.median())
        family = means.groupby(["architecture", "cytokine"]).roc_auc.max().groupby("architecture").median()
        tags["best_family"] = str(family.idxmax())
        metrics["best_family_median_roc_auc"] = float(family.max())
    if len(means):
        metrics["median_best_f1"] = float(means.groupby("cytokine").f1.max().median())
    return metrics, tags


def curve_metrics(
    curves: pd.DataFrame, architecture: str, augmentation: str, repeats: int, timestamp: int
) -> list:
    """Learning curves as MLflow Metric rows: loss_<slug>_f<fold> and val_loss_<slug>_f<fold>, step =
    epoch."""
    from mlflow.entities import Metric

    c = curves[(curves.architecture == architecture) & (curves.augmentation == augmentation)]
    rows = []
    for (cytokine, repeat, fold), g in c.groupby(["cytokine", "repeat", "fold"], sort=True):
        where = (f"r{int(repeat)}",) if repeats > 1 else ()
        for key in CURVE_KEYS:
            name = metric_key(key, slugify(cytokine), *where, f"f{int(fold)}")
            rows += [
                Metric(name, float(v), timestamp, int(e))
                for e, v in zip(g.epoch, g[key], strict=True)
                if not pd.isna(v)
            ]
    return rows


def training_params(p: Params) -> dict[str, object]:
    return {**asdict(p.train), "image_size": p.wrangle.image_size, "strategies": p.augment.strategies}


@dataclass(frozen=True)
class Evaluated:
    """What the track stage logs, as values (`cytoops run` passes them in memory; the DVC stage reads them
    from the files dvc.yaml names, `load_evaluated`)."""

    result: cvresult.Result  # cross-validation: fits, curves, failures
    means: pd.DataFrame  # evaluate's mean scores per model and cytokine (f1_per_cytokine.csv)
    summary: dict  # evaluate's summary (summary.json)
    predictable: pd.DataFrame | None  # the verdict's table (predictable.csv), None before the verdict ran
    artifacts: tuple[Path, ...]  # figures and tables logged to the parent run under reports/


def report_artifacts(reports: Path, summary_file: Path) -> tuple[Path, ...]:
    """The figures and tables of a reports folder that the parent run keeps (those that exist)."""
    verdict_files = ("index.html", "predictable.csv", "hypotheses.csv", "truth.csv")  # when the verdict ran
    files = sorted(Path(reports).glob("*.png")) + [Path(reports) / "f1_per_cytokine.csv", Path(summary_file)]
    files += [Path(reports) / name for name in verdict_files]
    return tuple(f for f in files if f.is_file())


def load_evaluated(trained: Path, reports: Path, summary_file: Path) -> Evaluated:
    predictable_csv = Path(reports) / "predictable.csv"
    return Evaluated(
        result=cvresult.load(trained),
        means=tables.read(Path(reports) / "f1_per_cytokine.csv"),
        summary=json.loads(Path(summary_file).read_text()),
        predictable=tables.read(predictable_csv) if predictable_csv.is_file() else None,
        artifacts=report_artifacts(reports, summary_file),
    )


def log_results(tracked: Tracked, evaluated: Evaluated, p: Params) -> Tracked:
    """Under the open parent run: a nested run per (architecture, augmentation) with its params, per-cytokine
    F1 and learning curves; the parent's summary metrics and the figures. Returns `tracked` with the ids."""
    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    result, means, summary = evaluated.result, evaluated.means, evaluated.summary
    now = int(time.time() * 1000)
    models = sorted({(a, g) for a, g in zip(result.fits.architecture, result.fits.augmentation, strict=True)})
    models += sorted(
        {(a, g) for a, g in zip(means.architecture, means.augmentation, strict=True)} - set(models)
    )
    failures = result.failures
    for architecture, augmentation in models:
        name = f"{architecture}/{augmentation}"
        fits = result.fits[
            (result.fits.architecture == architecture) & (result.fits.augmentation == augmentation)
        ]
        with active_run(
            nested=True,
            run_name=name,
            experiment_id=tracked.experiment_id,
            tags={TAG_ROLE: "cv", "architecture": architecture, "augmentation": augmentation},
        ) as run:
            run_id = run.info.run_id
            log_params(
                client,
                run_id,
                {"architecture": architecture, "augmentation": augmentation, **training_params(p)},
            )
            values = model_metrics(means, architecture, augmentation, p.evaluate.f1_cutoff)
            values["n_fits"] = float(len(fits))
            values["n_failed_fits"] = float(
                ((failures.architecture == architecture) & (failures.augmentation == augmentation)).sum()
            )
            values["fit_seconds"] = (
                float(pd.to_numeric(fits.seconds, errors="coerce").sum()) if len(fits) else 0.0
            )
            metrics = [Metric(k, v, now, 0) for k, v in values.items()]
            metrics += curve_metrics(result.curves, architecture, augmentation, p.train.repeats, now)
            log_metrics(client, run_id, metrics)
        tracked.nested[name] = run_id
    parent = [
        Metric("n_cytokines_kept", float(summary.get("n_kept", 0)), now, 0),
        Metric("n_cytokines_predicted", float(summary.get("n_predicted", 0)), now, 0),
        Metric("n_failed_fits", float(summary.get("n_failed", len(failures))), now, 0),
    ]
    if summary.get("best_f1") is not None:
        parent.append(Metric("best_mean_f1", float(summary["best_f1"]), now, 0))
    if summary.get("best_model"):
        retry(mlflow.set_tag, "best_model", summary["best_model"])
    head, head_tags = headline_metrics(means, evaluated.predictable)
    parent += [Metric(k, v, now, 0) for k, v in head.items()]
    for key, value in head_tags.items():
        retry(mlflow.set_tag, key, value)
    log_metrics(client, tracked.run_id, parent)
    for artifact in evaluated.artifacts:
        retry(mlflow.log_artifact, str(artifact), "reports")
    return tracked


# ---- the DVC stage -----------------------------------------------------------------------------------------


def command(
    trained: Path = typer.Option(Path("work/train"), "--trained", help="Folder written by `cytoops train`."),
    reports: Path = typer.Option(Path("reports"), "--reports", help="Folder written by `cytoops evaluate`."),
    metrics: Path = typer.Option(
        Path("metrics/summary.json"), "--metrics", help="summary.json of `cytoops evaluate`."
    ),
    data_dvc: Path = typer.Option(
        Path("data.dvc"), "--data-dvc", help="The .dvc file of the data (its md5 is logged)."
    ),
    out: Path = typer.Option(Path("work/track/run.json"), "--out", help="Where to write the logged run ids."),
    params_file: Path = typer.Option(
        Path("params.yaml"), "--params", help="params.yaml to read (all of it is logged)."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set tracking.experiment=mine"),
) -> None:
    """Log the evaluated pipeline to MLflow: a parent run (params, git commit, data version, figures) with a
    nested run per architecture x augmentation (per-cytokine F1, learning curves). Writes the run ids."""
    p = load_params(params_file, overrides)
    store = connect(p.tracking.experiment)
    with pipeline_run(store, p, data_dvc=data_dvc, stage="track") as tracked:
        log_results(tracked, load_evaluated(trained, reports, metrics), p)
    tracked.save(out)
    log.info(
        f"track: run {tracked.run_id} with {len(tracked.nested)} nested runs in {store.experiment!r} -> {out}"
    )


# ---- where to look ---------------------------------------------------------------------------------------

UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_lines(tracked: Tracked, cwd: Path | None = None) -> list[str]:
    """How to see the experiment's training runs: the command that serves the store, then the exact URL.

    The URL names the runs tab (`#/experiments/<id>/runs`) because MLflow 3.17's UI opens an experiment on its
    GenAI overview whatever the `mlflow.experimentKind` tag says: the sidebar's GenAI / model-training toggle
    lives in the browser's localStorage (mlflow/mlflow#24498)."""
    runs = f"#/experiments/{tracked.experiment_id}/runs"
    uri = tracked.tracking_uri
    if uri.startswith(("http://", "https://")):
        return [f"MLflow: the training runs of experiment {tracked.experiment!r} on the tracking server:",
                f"{uri.rstrip('/')}/{runs}"]  # fmt: skip
    here = Path(cwd or Path.cwd()).resolve() / STORE_FILE
    serve = "mlflow ui" if sqlite_path(uri) == here else f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
    return [
        f"MLflow: run `{serve}`, then open the training runs of experiment {tracked.experiment!r}:",
        f"{UI_ADDRESS}/{runs}",
    ]


def ui_url_command(
    run: Path = typer.Option(
        Path("work/track/run.json"), "--run", help="run.json written by `cytoops track` (or `cytoops run`)."
    ),
) -> None:
    """Print how to open the pipeline's MLflow training runs: `mlflow ui` and the experiment's runs URL."""
    for line in ui_lines(Tracked.load(run)):
        typer.echo(line)
