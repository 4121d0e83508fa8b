"""MLflow tracking against real stores: a SQLite file in a temp folder, and a real `mlflow server` on
loopback.

The train outputs here are synthetic (cvresult.Result frames written with cvresult.save) and go through the
real evaluate stage, so these tests need no TensorFlow training."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from cytoops import cvresult, evaluate, params, tables, tracking
from cytoops import store as mlstore
from cytoops.cli import app

REPO = Path(__file__).resolve().parents[1]
CYTOKINES = ("IL-6", "TNF-α", "IL-12p40/p70")
MODELS = (("wide_cnn", "none"), ("wide_cnn", "flips"), ("deep_cnn", "none"))
EPOCHS = 4
MD5 = "0123456789abcdef0123456789abcdef.dir"


def synthetic_outputs(root: Path, seed: int = 0) -> dict[str, Path]:
    """train outputs for MODELS x CYTOKINES x 2 folds (EPOCHS epochs each), evaluated by the real evaluate."""
    rng = np.random.default_rng(seed)
    preds, curves, fits = [], [], []
    for (arch, aug), cytokine, fold in ((m, c, f) for m in MODELS for c in CYTOKINES for f in (0, 1)):
        unit = {"architecture": arch, "augmentation": aug, "cytokine": cytokine, "repeat": 0, "fold": fold}
        label = np.array([0, 1] * 5)
        good = cytokine == "IL-6"  # IL-6 is predicted well, the others at chance
        prob = np.clip(label * 0.8 + 0.1 + rng.normal(0, 0.05, 10), 0, 1) if good else rng.random(10)
        wells = np.arange(10) + 10 * fold
        preds.append(
            pd.DataFrame(
                {
                    **unit,
                    "well_index": wells,
                    "plate": "p1",
                    "well": [f"A{w + 1:02d}" for w in wells],
                    "label": label,
                    "prob": prob,
                }
            )
        )
        loss = np.linspace(0.7, 0.3, EPOCHS) + rng.normal(0, 0.01, EPOCHS)
        curves.append(
            pd.DataFrame(
                {
                    **unit,
                    "epoch": np.arange(1, EPOCHS + 1),
                    "loss": loss,
                    "val_loss": loss + 0.1,
                    "accuracy": 1 - loss,
                    "val_accuracy": 0.9 - loss,
                }
            )
        )
        fits.append(
            {
                **unit,
                "n_train": 16,
                "n_train_images": 16,
                "n_val": 4,
                "n_test": 10,
                "best_epoch": 3,
                "epochs_run": EPOCHS,
                "seconds": 0.5,
            }
        )
    result = cvresult.Result(
        predictions=pd.concat(preds, ignore_index=True),
        curves=pd.concat(curves, ignore_index=True),
        fits=pd.DataFrame(fits),
        failures=pd.DataFrame(columns=[*tables.UNIT, "error"]),
        folds=pd.DataFrame(
            {"cytokine": "IL-6", "repeat": 0, "well_index": np.arange(20), "fold": np.arange(20) // 10}
        ),
    )
    paths = {
        "trained": root / "work" / "train",
        "reports": root / "reports",
        "metrics": root / "metrics" / "summary.json",
        "data_dvc": root / "data.dvc",
    }
    cvresult.save(result, paths["trained"])
    cvresult.save(cvresult.load(paths["trained"]), paths["trained"])
    kept = pd.DataFrame({"cytokine": list(CYTOKINES), "kept": True})
    evaluate.run(result, kept, paths["reports"], paths["metrics"], params.EvaluateParams())
    paths["data_dvc"].write_text(yaml.safe_dump({"outs": [{"md5": MD5, "path": "data"}]}))
    return paths


def track_args(paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "track",
        "--trained",
        str(paths["trained"]),
        "--reports",
        str(paths["reports"]),
        "--metrics",
        str(paths["metrics"]),
        "--data-dvc",
        str(paths["data_dvc"]),
        "--out",
        str(out),
        "--params",
        str(REPO / "params.yaml"),
        *extra,
    ]


def invoke(args: list[str]):
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result


def test_track_logs_a_parent_run_and_a_nested_run_per_model(tmp_path, store, monkeypatch):
    paths = synthetic_outputs(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "lusty-oryx")
    result = invoke(track_args(paths, tmp_path / "run.json", "--set", "train.epochs=7"))
    assert result.exit_code == 0, result.output
    tracked = json.loads((tmp_path / "run.json").read_text())
    client = MlflowClient(store)

    parent = client.get_run(tracked["run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "dvc:lusty-oryx"
    tags = parent.data.tags
    assert tags["dvc_exp_name"] == "lusty-oryx"
    assert tags["data_version"] == MD5
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    assert tags["git_commit"] == commit and tags["mlflow.source.git.commit"] == commit
    assert tags[mlstore.TAG_PID] == str(os.getpid()) and tags[mlstore.TAG_HOST] == socket.gethostname()
    flat = params.load(REPO / "params.yaml", ["train.epochs=7"]).flat()
    assert set(flat) <= set(parent.data.params)  # every param, flattened
    assert parent.data.params["train.epochs"] == "7"
    assert parent.data.params["train.architectures"] == (
        "[wide_cnn, deep_cnn, vit_linear, vit_240k, vit_500k, profile, multitask_cnn]"
    )
    assert parent.data.metrics["n_cytokines_kept"] == 3
    # the headline: median over cytokines of the best model's ROC AUC, and the best family as a tag
    means = pd.read_csv(paths["reports"] / "f1_per_cytokine.csv")
    best_auc = means.groupby("cytokine").roc_auc.max().median()
    assert parent.data.metrics["median_best_roc_auc"] == pytest.approx(best_auc)
    assert parent.data.tags["best_family"] in {a for a, _ in MODELS}
    # MLflow 3 opens the experiment on its training runs, not on the GenAI overview
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "reports")}
    assert {
        "reports/f1_by_augmentation.png",
        "reports/f1_by_architecture.png",
        "reports/learning_curves.png",
    } <= artifacts

    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(r.info.run_name for r in children) == sorted(f"{a}/{g}" for a, g in MODELS)
    assert {r.info.run_name: r.info.run_id for r in children} == tracked["nested"]
    means = pd.read_csv(paths["reports"] / "f1_per_cytokine.csv")
    models = pd.read_csv(paths["reports"] / "models.csv").set_index("model")
    for run in children:
        arch, aug = run.info.run_name.split("/")
        assert run.info.status == "FINISHED"
        assert run.data.params["architecture"] == arch and run.data.params["augmentation"] == aug
        assert run.data.params["epochs"] == "7" and run.data.params["batch_size"] == "32"
        assert run.data.params["learning_rate"] == "0.001" and run.data.params["image_size"] == "64"
        m = run.data.metrics
        assert {"f1_IL-6", "f1_TNF-alpha", "f1_IL-12p40_p70", "mean_f1", "n_predicted"} <= set(m)
        expected = means[
            (means.architecture == arch) & (means.augmentation == aug) & (means.cytokine == "IL-6")
        ]
        assert m["f1_IL-6"] == pytest.approx(float(expected.f1.iloc[0]))
        model = models.loc[f"{arch}/{aug}"]
        assert m["mean_f1"] == pytest.approx(model.mean_f1, abs=1e-4)
        assert m["mean_roc_auc"] == pytest.approx(model.mean_roc_auc, abs=1e-4)
        assert m["n_predicted"] == model.n_predicted
        # learning curves: one value per epoch, step = epoch, per cytokine and fold
        for key in ("loss_IL-6_f0", "val_loss_TNF-alpha_f1"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [h.step for h in sorted(history, key=lambda h: h.step)] == list(range(1, EPOCHS + 1))


def test_the_run_mlflow_run_made_is_the_parent(tmp_path, store, monkeypatch):
    paths = synthetic_outputs(tmp_path)
    mlstore.connect("cytoops")
    client = MlflowClient(store)
    made = client.create_run(client.get_experiment_by_name("cytoops").experiment_id, run_name="mlflow-run")
    monkeypatch.setenv("MLFLOW_RUN_ID", made.info.run_id)
    result = invoke(track_args(paths, tmp_path / "run.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run.json").read_text())["run_id"] == made.info.run_id
    runs = client.search_runs([made.info.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [made.info.run_id]  # no second, unrelated parent
    assert len(runs) == 1 + len(MODELS)
    assert client.get_run(made.info.run_id).data.params["train.epochs"] == "30"


def test_store_location_follows_the_repository(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT"):
        monkeypatch.delenv(name, raising=False)
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert mlstore.repo_root(repo / "sub") == repo.resolve()
    assert mlstore.resolve_uri(repo / "sub") == f"sqlite:///{repo.resolve() / 'mlflow.db'}"
    # `dvc exp run --temp` runs the stages in a git copy under .dvc/tmp/exps/: the store stays the user's
    temp = repo / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12cd"
    temp.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(temp)], check=True)
    assert mlstore.repo_root(temp) == repo.resolve()
    monkeypatch.setenv("DVC_ROOT", str(repo))  # what DVC sets for every stage, pointing at the user's repo
    assert mlstore.repo_root(temp) == repo.resolve()
    assert (
        mlstore.artifact_location(mlstore.resolve_uri(temp), "cytoops")
        == (repo / "mlartifacts" / "cytoops").resolve().as_uri()
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert mlstore.resolve_uri(temp) == "http://127.0.0.1:5000"


def test_a_killed_run_is_marked_killed_on_the_next_start(tmp_path, store):
    store_ = mlstore.connect("cytoops")
    client = MlflowClient(store)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = client.create_run(
        store_.experiment_id, tags={mlstore.TAG_PID: str(dead.pid), mlstore.TAG_HOST: host}
    )
    alive = client.create_run(
        store_.experiment_id, tags={mlstore.TAG_PID: str(os.getpid()), mlstore.TAG_HOST: host}
    )
    elsewhere = client.create_run(
        store_.experiment_id, tags={mlstore.TAG_PID: "1", mlstore.TAG_HOST: "other-host"}
    )
    mlstore.connect("cytoops")
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"
    assert client.get_run(elsewhere.info.run_id).info.status == "RUNNING"  # cannot tell: left alone


def test_runs_end_failed_or_killed_when_the_block_does(tmp_path, store):
    s = mlstore.connect("cytoops")
    p = params.Params()
    with pytest.raises(ValueError):
        with tracking.pipeline_run(s, p, data_dvc=None, stage="test") as tracked:
            raise ValueError("boom")
    assert MlflowClient(store).get_run(tracked.run_id).info.status == "FAILED"
    with pytest.raises(KeyboardInterrupt):
        with tracking.pipeline_run(s, p, data_dvc=None, stage="test") as tracked:
            raise KeyboardInterrupt
    assert MlflowClient(store).get_run(tracked.run_id).info.status == "KILLED"
    assert mlflow.active_run() is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    code = "import sys; from cytoops.cli import main; sys.argv[0] = 'cytoops'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


def test_a_tracking_server_that_is_down_is_one_line(tmp_path):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_free_port()}",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    t0 = time.monotonic()
    for args in (["best-model", "IL-6"], ["run", "--data", str(tmp_path), "--out", str(tmp_path / "out")]):
        done = _cli(args, env, timeout=60)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert (
            lines[0].startswith("error: the MLflow tracking server http://127.0.0.1:")
            and "not reachable" in lines[0]
        )
    assert time.monotonic() - t0 < 40  # no minutes of HTTP retries


def test_pipelines_logging_to_one_new_sqlite_store_at_once(tmp_path, monkeypatch):
    """Two at once, into a store neither has made yet: creating its tables is the worst race."""
    paths = synthetic_outputs(tmp_path)
    store = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for name in ("MLFLOW_RUN_ID", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(name, None)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from cytoops.cli import main; main()",
                *track_args(paths, tmp_path / f"run{i}.json"),
            ],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("cytoops").experiment_id])
    assert len(runs) == 2 * (1 + len(MODELS)) and all(r.info.status == "FINISHED" for r in runs)


def test_logging_through_a_real_mlflow_server(tmp_path, monkeypatch, template_db):
    port = _free_port()
    shutil.copy(template_db, tmp_path / "server.db")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        import requests

        deadline = time.monotonic() + 90
        while True:
            try:
                if requests.get(f"{uri}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        for name in ("MLFLOW_RUN_ID", "DVC_ROOT", "DVC_EXP_NAME"):
            monkeypatch.delenv(name, raising=False)
        paths = synthetic_outputs(tmp_path)
        result = invoke(track_args(paths, tmp_path / "run.json"))
        assert result.exit_code == 0, result.output
        tracked = json.loads((tmp_path / "run.json").read_text())
        assert tracked["tracking_uri"] == uri
        client = MlflowClient(uri)
        parent = client.get_run(tracked["run_id"])
        assert parent.info.status == "FINISHED" and parent.data.tags["data_version"] == MD5
        child = client.get_run(tracked["nested"]["wide_cnn/flips"])
        assert "f1_IL-6" in child.data.metrics
        assert len(client.get_metric_history(child.info.run_id, "loss_IL-6_f1")) == EPOCHS
        # artifacts went through the server's proxy into its artifact folder
        assert {a.path for a in client.list_artifacts(parent.info.run_id, "reports")} >= {
            "reports/learning_curves.png"
        }
        assert any((tmp_path / "server-artifacts").rglob("learning_curves.png"))
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()


def test_mlproject_main_declares_every_param_with_the_params_yaml_default():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert project["python_env"] == "python_env.yaml" and (REPO / "python_env.yaml").is_file()
    main = project["entry_points"]["main"]
    defaults = {k: str(v["default"]) for k, v in main["parameters"].items()}
    p = params.load(REPO / "params.yaml")
    as_list = lambda values: ",".join(values)  # noqa: E731 - how MLproject takes lists: a,b,c
    expected = {
        "epochs": str(p.train.epochs),
        "architectures": as_list(p.train.architectures),
        "strategies": as_list(p.augment.strategies),
        "folds": str(p.train.folds),
        "seed": str(p.train.seed),
        "batch_size": str(p.train.batch_size),
        "patience": str(p.train.patience),
        "learning_rate": str(p.train.learning_rate),
        "min_wells": str(p.wrangle.min_wells),
        "method": p.wrangle.method,
        "cnn_channels": as_list(p.train.cnn_channels),
        "vit_weights": "null" if p.features.vit_weights is None else p.features.vit_weights,
        "log_models": p.tracking.log_models,
        "experiment": p.tracking.experiment,
    }
    for key, value in expected.items():
        assert float(defaults[key]) == float(value) if key == "learning_rate" else defaults[key] == value, key
    assert {"data", "out", "params"} <= set(defaults)
    assert "cytoops run" in main["command"]
    stages = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    assert stages <= set(project["entry_points"])  # one entry point per DVC stage
    # the command, with the defaults filled in as `mlflow run` fills them, parses into the same params
    words = shlex.split(main["command"].format(**defaults))
    sets = [words[i + 1] for i, word in enumerate(words) if word == "--set"]
    assert params.load(REPO / "params.yaml", sets) == p
    sets = [
        s.replace(
            "[wide_cnn,deep_cnn,vit_linear,vit_240k,vit_500k,profile,multitask_cnn]", "[wide_cnn,deep_cnn]"
        )
        for s in sets
    ]
    assert params.load(REPO / "params.yaml", sets).train.architectures == ("wide_cnn", "deep_cnn")


def test_creating_a_store_leaves_no_lock_file_behind(tmp_path, monkeypatch):
    import tempfile

    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    db = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    mlstore.connect("cytoops")
    assert list(temp.iterdir()) == []
    assert sorted(p.name for p in db.parent.iterdir() if "lock" in p.name) == []


def test_the_parent_runs_headline_comes_from_the_verdict_and_the_per_cytokine_table():
    means = pd.DataFrame(
        {
            "architecture": ["wide_cnn", "wide_cnn", "vit_linear", "vit_linear"],
            "augmentation": ["none", "none", "none", "none"],
            "cytokine": ["IL-6", "TNF", "IL-6", "TNF"],
            "f1": [0.8, 0.4, 0.6, 0.7],
            "roc_auc": [0.9, 0.5, 0.6, 0.95],
        }
    )
    verdict = pd.DataFrame({"cytokine": ["IL-6", "TNF"], "predictable": [True, False]})
    metrics, tags = tracking.headline_metrics(means, verdict)
    assert metrics["n_predictable"] == 1 and tags["predictable"] == "IL-6"
    assert metrics["median_best_roc_auc"] == pytest.approx((0.9 + 0.95) / 2)
    assert metrics["median_best_f1"] == pytest.approx((0.8 + 0.7) / 2)
    # wide_cnn: median of (0.9, 0.5) = 0.7; vit_linear: median of (0.6, 0.95) = 0.775
    assert tags["best_family"] == "vit_linear"
    assert metrics["best_family_median_roc_auc"] == pytest.approx(0.775)
    metrics, tags = tracking.headline_metrics(means, None)  # no verdict: no call counted
    assert "n_predictable" not in metrics and "predictable" not in tags
