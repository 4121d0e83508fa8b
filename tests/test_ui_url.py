"""`cytoops ui-url`: the exact MLflow URL of the experiment's training runs, which `make demo` ends with."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from typer.testing import CliRunner

from cytoops import cli, tracking
from cytoops import store as mlstore

REPO = Path(__file__).resolve().parents[1]


def _tracked(uri: str, experiment_id: str = "7") -> tracking.Tracked:
    return tracking.Tracked(uri, "cytoops", experiment_id, "r" * 32)


def test_a_local_store_says_mlflow_ui_and_the_runs_url(tmp_path):
    here = _tracked(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracking.ui_lines(here, cwd=tmp_path) == [
        "MLflow: run `mlflow ui`, then open the training runs of experiment 'cytoops':",
        "http://127.0.0.1:5000/#/experiments/7/runs",
    ]
    elsewhere = tracking.ui_lines(_tracked(f"sqlite:///{tmp_path / 'my store' / 'mlflow.db'}"), cwd=tmp_path)
    assert f"`mlflow ui --backend-store-uri 'sqlite:///{tmp_path}/my store/mlflow.db'`" in elsewhere[0]
    assert elsewhere[1] == "http://127.0.0.1:5000/#/experiments/7/runs"


def test_a_tracking_server_gets_its_own_address():
    lines = tracking.ui_lines(_tracked("http://mlflow.lab:8080/", "12"))
    assert lines[-1] == "http://mlflow.lab:8080/#/experiments/12/runs"
    assert "mlflow ui" not in " ".join(lines)


def test_ui_url_reads_the_run_json_of_a_real_store(tmp_path, store, monkeypatch):
    s = mlstore.connect("cytoops")
    run = tmp_path / "work" / "track" / "run.json"
    _tracked(s.uri, s.experiment_id).save(run)
    monkeypatch.chdir(tmp_path / "store")  # where mlflow.db is: plain `mlflow ui` serves it
    result = CliRunner().invoke(cli.app, ["ui-url", "--run", str(run)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("MLflow: run `mlflow ui`, then open")
    assert lines[-1] == f"http://127.0.0.1:5000/#/experiments/{s.experiment_id}/runs"
    assert MlflowClient(store).get_experiment(s.experiment_id).name == "cytoops"


def test_a_missing_or_broken_run_json_is_one_line(tmp_path):
    missing = CliRunner().invoke(cli.app, ["ui-url", "--run", str(tmp_path / "run.json")])
    assert missing.exit_code == 2 and "run.json does not exist: run `cytoops track`" in missing.output
    (tmp_path / "run.json").write_text("{not json", encoding="utf-8")
    broken = CliRunner().invoke(cli.app, ["ui-url", "--run", str(tmp_path / "run.json")])
    assert broken.exit_code == 2 and "Traceback" not in broken.output
    assert "is not a run.json written by `cytoops track`" in broken.output


def test_make_demo_ends_by_printing_the_runs_url():
    steps = [line for line in (REPO / "scripts" / "demo.sh").read_text().splitlines() if line.strip()]
    assert steps[-1] == "cytoops ui-url --run work/track/run.json"
    assert "work/track/run.json" in (REPO / "dvc.yaml").read_text()  # the track stage writes it
