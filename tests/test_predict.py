"""`cytoops run` end to end into a real SQLite store, then `cytoops predict` on other plates with its
champions."""

from __future__ import annotations

import json
import shutil
import traceback
import zipfile

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cytoops.cli import app
from cytoops.plate import read_data
from cytoops.predict import plate_inputs

RUN = [
    "--set",
    "train.architectures=[wide_cnn]",
    "--set",
    "augment.strategies=[none,hflip]",
    "--set",
    "train.epochs=3",
    "--set",
    "train.patience=3",
    "--set",
    "train.workers=1",
    "--set",
    "wrangle.image_size=32",
]


@pytest.fixture
def store(tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_RUN_ID", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    return uri


def _move(data_dir, plate_id, to):
    to.mkdir(parents=True, exist_ok=True)
    shutil.move(str(data_dir / plate_id), str(to / plate_id))
    return to


def test_run_registers_champions_that_score_a_second_plate(wide_plate, tmp_path, store):
    data = wide_plate()
    other = _move(wide_plate(seed=1, plate_id="plate-2"), "plate-2", tmp_path / "other")
    blind = _move(wide_plate(seed=2, plate_id="plate-3"), "plate-3", tmp_path / "blind")
    (blind / "plate-3" / "cytokines.csv").unlink()  # a plate with no readouts at all
    runner = CliRunner()

    result = runner.invoke(app, ["run", "--data", str(data), "--out", str(tmp_path / "out"), *RUN])
    assert result.exit_code == 0, "".join(traceback.format_exception(result.exception))
    listing = json.loads((tmp_path / "out" / "register" / "registered.json").read_text())
    registered = {c["cytokine"]: c for c in listing["registered"]}
    assert "IL-6" in registered and "IL-10" not in registered  # IL-10 is under the well cut-off
    assert registered["IL-6"]["registered_model"] == "cytoops-IL-6" and registered["IL-6"]["promoted"]
    # champions are exactly the cytokines the verdict called predictable
    verdict = pd.read_csv(tmp_path / "out" / "reports" / "predictable.csv")
    called = set(verdict.cytokine[verdict.predictable.astype(str).eq("True")])
    assert set(listing["champions"]) == called & set(registered)

    # the best CNN loads from the registry by its alias and predicts
    model = mlflow.pyfunc.load_model("models:/cytoops-IL-6@best-cnn").unwrap_python_model()
    plate = read_data(other, image_size=32, require_readouts=False)[0]
    prob = model.probabilities(plate_inputs(plate, ("actin", "mito", "nucleus")))
    assert prob.shape == (32,) and np.all((prob >= 0) & (prob <= 1))

    # a second plate with readouts: probabilities, calls and F1 per cytokine
    out = tmp_path / "pred" / "other.csv"
    result = runner.invoke(app, ["predict", str(other), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table.cytokine) == set(registered)
    assert len(table) == 32 * len(registered)
    assert table.prob.between(0, 1).all() and set(table.call) <= {0, 1}
    il6 = table[table.cytokine == "IL-6"]
    assert il6.label.notna().all()
    scores = pd.read_csv(tmp_path / "pred" / "other_f1.csv").set_index("cytokine")
    assert 0 <= scores.loc["IL-6", "f1"] <= 1 and scores.loc["IL-6", "n_wells"] == 32
    assert scores.loc["IL-6", "n_responders"] == 16
    assert "IL-6" in result.output and "F1" in result.output
    for cytokine in set(registered) - called:  # scored by its best CNN, and said so
        assert f"{registered[cytokine]['registered_model']} has no @champion" in result.output
    assert set(table.model) == {
        f"{c['registered_model']}/{c['best_cnn_version']}" for c in registered.values()
    }

    # a plate without cytokines.csv, one cytokine asked for by its slug: probabilities only, no F1 file
    out = tmp_path / "pred" / "blind.csv"
    result = runner.invoke(app, ["predict", str(blind), "--cytokine", "il-6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table.cytokine) == {"IL-6"} and len(table) == 32 and table.label.isna().all()
    assert not (tmp_path / "pred" / "blind_f1.csv").exists()

    # a cytokine with no champion is one line, not a traceback
    result = runner.invoke(app, ["predict", str(blind), "--cytokine", "IL-10", "--out", str(out)])
    assert result.exit_code == 2 and "no registered model cytoops-IL-10" in result.output

    # a champion whose saved model no longer deserializes (a layer given an argument Keras does not know,
    # as a model saved by another Keras version can be) is one line, not a TypeError traceback
    broken = list((tmp_path / "store").rglob("*.keras"))
    assert broken, "the registered model's file was not found in the store"
    for file in broken:
        with zipfile.ZipFile(file) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        config = json.loads(members["config.json"])
        config["config"]["layers"][-1]["config"]["argument_from_elsewhere"] = 1
        members["config.json"] = json.dumps(config).encode()
        with zipfile.ZipFile(file, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
    result = runner.invoke(app, ["predict", str(other), "--cytokine", "IL-6", "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "cytoops-IL-6 v1 (alias champion) cannot be loaded" in lines[0]
