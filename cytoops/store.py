"""store: the MLflow tracking store: where it is, connecting to it, and staying up when it does not.

The store: `MLFLOW_TRACKING_URI` when set, else `sqlite:///<repo root>/mlflow.db` with artifacts in
`<repo root>/mlartifacts/`, both absolute. The repo root is `DVC_ROOT` when DVC runs the stage (DVC points it
at the user's repository even for `dvc exp run --temp`, whose stages run in `.dvc/tmp/exps/...`), else the
git top level of the working directory (climbing out of `.dvc/tmp/exps/` if there), else the working folder.

Robustness: a server that does not answer fails in one line before any work (`check_reachable`); transient
errors (a locked SQLite file, a dropped connection) are retried (`retry`); a new SQLite file is created by one
process at a time (`_init_lock`); runs left RUNNING by a process that died are marked KILLED
(`mark_stale_runs`). `tracking` (runs and what is logged) and `registry` (the model registry's read side)
use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cytoops.plate import slugify

log = logging.getLogger(__name__)

TAG_PID = "cytoops.pid"
TAG_PID_START = "cytoops.pid_start"
TAG_HOST = "cytoops.host"
# MLflow 3's kind of an experiment ("genai_development" | "custom_model_development"; untagged, its UI asks).
# Which page the UI lands on follows a toggle kept in the browser instead (mlflow/mlflow#24498): the exact
# URL of the training runs is `tracking.ui_lines`'s
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"


class TrackingError(ValueError):
    """A problem with the tracking store, said in one line (the CLI prints it and exits with status 2)."""


# ---- where the store is ------------------------------------------------------------------------------------


def git(args: list[str], cwd: Path) -> str | None:
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
    top = git(["rev-parse", "--show-toplevel"], cwd)
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
