"""MLflow tracking: where the store is, one parent run per pipeline execution, one nested run per model.

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

The store: `MLFLOW_TRACKING_URI` when set, else `sqlite:///<repo root>/mlflow.db` with artifacts in
`<repo root>/mlartifacts/`, both absolute. The repo root is `DVC_ROOT` when DVC runs the stage (DVC points it
at the user's repository even for `dvc exp run --temp`, whose stages run in `.dvc/tmp/exps/...`), else the
git top level of the working directory (climbing out of `.dvc/tmp/exps/` if there), else the working folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import typer
import yaml

from cytoops import tables
from cytoops.params import Params
from cytoops.params import load as load_params
from cytoops.plate import slugify

log = logging.getLogger(__name__)

TAG_PID = "cytoops.pid"
TAG_PID_START = "cytoops.pid_start"
TAG_HOST = "cytoops.host"
TAG_ROLE = "cytoops.role"  # pipeline | cv (a nested run per architecture x augmentation)
# MLflow 3's UI opens an experiment on its GenAI overview (traces) or on its training runs by this tag
# ("genai_development" | "custom_model_development"); untagged, it guesses from what the experiment holds
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
CURVE_KEYS = ("loss", "val_loss")


class TrackingError(ValueError):
    """A problem with the tracking store, said in one line (the CLI prints it and exits with status 2)."""


# ---- where the store is ------------------------------------------------------------------------------------


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def repo_root(cwd: Path | None = None) -> Path:
    """The user's repository: DVC_ROOT under DVC (the original repo, also for `dvc exp run --temp`), else
    git's top level of `cwd` (leaving a DVC experiment's temp copy in .dvc/tmp/exps/), else `cwd` itself."""
    cwd = Path(cwd or Path.cwd()).resolve()
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root and Path(dvc_root).is_dir():
        return Path(dvc_root).resolve()
    top = _git(["rev-parse", "--show-toplevel"], cwd)
    root = Path(top).resolve() if top else cwd
    parts = root.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return root


def default_uri(root: Path) -> str:
    return f"sqlite:///{(Path(root) / STORE_FILE).resolve()}"


def resolve_uri(cwd: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI when set, else the SQLite store in the repo root (absolute)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri(repo_root(cwd))


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?")[0]
    return Path(path).resolve()


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of an experiment this module creates: beside a SQLite store (absolute), else the server's."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.parent / ARTIFACT_DIR / slugify(experiment)).as_uri()


# ---- robustness: a server that is down, a locked SQLite file, runs killed mid-way ------------------------


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """A tracking server that does not answer is one line (TrackingError), after `timeout` seconds at most:
    MLflow's own client would retry for minutes first."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.Timeout:
            reason = f"no answer within {timeout:g} s"
        except requests.ConnectionError:
            reason = "connection refused or host unreachable"
        except requests.RequestException as err:
            reason = type(err).__name__
        else:
            return
        raise TrackingError(
            f"the MLflow tracking server {uri} is not reachable ({reason}): start it, or unset "
            f"MLFLOW_TRACKING_URI to log to {default_uri(repo_root())}"
        )
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrackingError(
                f"cannot create the folder of the MLflow store {db}: {err.strerror}"
            ) from None
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(
                f"the MLflow store {db} is not writable: fix its permissions or set MLFLOW_TRACKING_URI"
            )


def _transient(err: BaseException) -> bool:
    text = str(err).lower()
    return any(
        s in text for s in ("database is locked", "database table is locked", "database schema is locked")
    )


def retry(fn: Callable, *args, attempts: int = 12, **kwargs):
    """Call fn, retrying with jittered exponential backoff while SQLite says it is locked (another pipeline
    writes to the same store; MLflow already waits 20 s per statement, this covers what is left)."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - re-raised unless transient
            if attempt == attempts - 1 or not _transient(err):
                raise
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _init_lock(db: Path) -> Iterator[None]:
    """One process at a time creates or migrates a SQLite store (MLflow's tracking store does not lock).

    The lock is taken on the store's folder itself (flock on a directory): no lock file is left anywhere."""
    folder = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # closing releases the lock


def _process_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux), to tell a live pid from a reused one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _process_start(pid)
    return start is None or now is None or now == start


def owner_tags() -> dict[str, str]:
    """Who holds a run open: host and pid (and the pid's start time), so a later start can tell it died."""
    pid = os.getpid()
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(pid), TAG_PID_START: _process_start(pid) or ""}


def mark_stale_runs(client, experiment_id: str) -> list[str]:
    """End RUNNING runs of this experiment whose process (on this host) is gone: status KILLED."""
    host = socket.gethostname()
    runs = retry(
        client.search_runs, [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=5000
    )
    ended = []
    for run in runs:
        tags = run.data.tags
        if tags.get(TAG_HOST) != host or not tags.get(TAG_PID, "").isdigit():
            continue
        if _alive(int(tags[TAG_PID]), tags.get(TAG_PID_START) or None):
            continue
        retry(client.set_tag, run.info.run_id, "cytoops.ended", f"process {tags[TAG_PID]} on {host} was gone")
        retry(client.set_terminated, run.info.run_id, "KILLED")
        ended.append(run.info.run_id)
    return ended


# ---- the store ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    uri: str
    experiment: str
    experiment_id: str | None  # None: connected for the registry only


def connect(experiment: str | None = None, cwd: Path | None = None) -> Store:
    """Resolve the store, check that it answers, create it (and the experiment) if needed; mark the runs of
    processes that died KILLED."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_uri(cwd)
    check_reachable(uri)
    if uri.startswith(("http://", "https://")):
        # past the check, a server that drops out mid-run fails in about a minute, not after ~4 minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    mlflow.set_tracking_uri(uri)
    db = sqlite_path(uri)
    try:
        # MlflowClient() builds the store, which creates or migrates the tables of a new SQLite file: one
        # process at a time (two pipelines starting together would both migrate it, and one would crash)
        with _init_lock(db) if db is not None else contextlib.nullcontext():
            client = retry(mlflow.MlflowClient, uri)
            retry(client.search_registered_models, max_results=1)  # builds the registry's store too
            if db is not None:
                _wal(db)
            if experiment is None:
                return Store(uri, "", None)
            experiment = str(experiment)
            exp = retry(client.get_experiment_by_name, experiment)
            if exp is None:
                try:
                    location = artifact_location(uri, experiment)
                    retry(
                        client.create_experiment,
                        experiment,
                        artifact_location=location,
                        tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND},
                    )
                except MlflowException:
                    pass  # another process (through a server) made it first: found below, or not
                exp = retry(client.get_experiment_by_name, experiment)
                if exp is None:
                    raise TrackingError(f"could not create the MLflow experiment {experiment!r} at {uri}")
        if exp.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {experiment!r} is deleted: restore it (mlflow experiments restore "
                f"--experiment-id {exp.experiment_id}) or set tracking.experiment to another name"
            )
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made before cytoops set it, or by someone else
            retry(client.set_experiment_tag, exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        for run_id in mark_stale_runs(client, exp.experiment_id):
            log.warning(f"mlflow: run {run_id} was left RUNNING by a process that is gone: marked KILLED")
        return Store(uri, experiment, exp.experiment_id)
    except MlflowException as err:
        raise TrackingError(f"MLflow store {uri}: {one_line(err)}") from None


def _wal(db: Path) -> None:
    """Write-ahead logging: readers (the UI) never block a pipeline's writes, nor the reverse (persistent)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            with contextlib.suppress(sqlite3.OperationalError):  # another process holds it: it stays as it is
                con.execute("PRAGMA journal_mode=WAL")


def one_line(err: BaseException) -> str:
    text = getattr(err, "message", None) or str(err)
    first = " ".join(str(text).split("\n")[0].split())
    return first[:300] + ("..." if len(first) > 300 else "")


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
    commit = _git(["rev-parse", "HEAD"], cwd)
    if commit is None:
        return {}
    dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
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
        return cls(**json.loads(Path(path).read_text()))


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


def log_results(tracked: Tracked, trained: Path, reports: Path, summary_file: Path, p: Params) -> Tracked:
    """Under the open parent run: a nested run per (architecture, augmentation) with its params, per-cytokine
    F1 and learning curves; the parent's summary metrics and the figures. Returns `tracked` with the ids."""
    import mlflow
    from mlflow.entities import Metric

    from cytoops import cvresult

    client = mlflow.MlflowClient()
    result = cvresult.load(trained)
    means = tables.read(reports / "f1_per_cytokine.csv")
    summary = json.loads(Path(summary_file).read_text())
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
    predictable_csv = Path(reports) / "predictable.csv"
    predictable = tables.read(predictable_csv) if predictable_csv.is_file() else None
    head, head_tags = headline_metrics(means, predictable)
    parent += [Metric(k, v, now, 0) for k, v in head.items()]
    for key, value in head_tags.items():
        retry(mlflow.set_tag, key, value)
    log_metrics(client, tracked.run_id, parent)
    for png in sorted(Path(reports).glob("*.png")):
        retry(mlflow.log_artifact, str(png), "reports")
    verdict_files = ("index.html", "predictable.csv", "hypotheses.csv", "truth.csv")  # when the verdict ran
    extras = [Path(reports) / "f1_per_cytokine.csv", Path(summary_file)]
    extras += [Path(reports) / name for name in verdict_files]
    for extra in extras:
        if extra.is_file():
            retry(mlflow.log_artifact, str(extra), "reports")
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
        log_results(tracked, trained, reports, metrics, p)
    tracked.save(out)
    log.info(
        f"track: run {tracked.run_id} with {len(tracked.nested)} nested runs in {store.experiment!r} -> {out}"
    )
