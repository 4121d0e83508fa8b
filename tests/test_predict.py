"""`cytoops run` end to end into a real SQLite store, then `cytoops predict` on other plates with its
champions."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
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
    # champions are exactly the cytokines the verdict called predictable, each its best predictor
    verdict = pd.read_csv(tmp_path / "out" / "reports" / "predictable.csv")
    called = set(verdict.cytokine[verdict.predictable.astype(str).eq("True")])
    champion_of = {c["cytokine"]: c for c in listing["champions"]}
    assert set(champion_of) == called & set(registered)
    best_of = dict(zip(verdict.cytokine, verdict.best_predictor, strict=True))
    for cytokine, c in champion_of.items():
        assert f"{c['family']}/{c['augmentation']}" == best_of[cytokine]

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
        f"{c['registered_model']}/{champion_of[k]['version'] if k in champion_of else c['best_cnn_version']}"
        for k, c in registered.items()
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
    # as a model saved by another Keras version can be) is one line, not a TypeError traceback (the champion
    # alias moved to the best CNN's version, whatever family earned the call)
    best_cnn = registered["IL-6"]["best_cnn_version"]
    mlflow.MlflowClient().set_registered_model_alias("cytoops-IL-6", "champion", best_cnn)
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
    assert len(lines) == 1 and f"cytoops-IL-6 v{best_cnn} (alias champion) cannot be loaded" in lines[0]


# ---- any family, skips named, transfer reported: models registered from `servable`, no pipeline run ----


def _servables(data, tmp_path) -> dict:
    """A cell-count model (IL-6) and a profile model (TNF-α) fitted on the plate in `data`."""
    from cytoops import profile, servable, serving, wrangle
    from cytoops.params import WrangleParams
    from cytoops.verdict import baselines

    w = wrangle.wrangle(read_data(data, image_size=32), WrangleParams(image_size=32, min_wells=2))
    recipe = serving.recipe(w.scaling, w.channels, w.channels, 32)
    label = w.labels.set_index(["cytokine", "well_index"]).label
    y = {c: label.loc[c].reindex(range(len(w.wells))).to_numpy().astype(int) for c in ("IL-6", "TNF-α")}
    counts = baselines.count_cells(w.images, w.channels, "peaks")
    count = servable.CellCount(baselines.fit_linear(counts[:, None], y["IL-6"]), "peaks")
    profiled = profile.profile_plates(w.images, w.wells, w.channels)
    x = profiled.table[profile.feature_columns(profiled.table)]
    prof = servable.Profile(
        profile.fit(x, y["TNF-α"], seed=0), profile.training_normalization(profiled.normalization)
    )
    return {
        "IL-6": servable.build("cell_count", count, recipe, tmp_path / "art-count"),
        "TNF-α": servable.build("profile", prof, recipe, tmp_path / "art-profile"),
    }


def _register(s, cytokine: str, tags: dict) -> str:
    from cytoops.registry import model_name

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", **s.log_kwargs())
    name = model_name(cytokine)
    version = mlflow.register_model(info.model_uri, name, tags={"cytokine": cytokine, **tags})
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", version.version)
    return version.version


def test_predict_measures_a_plate_once_for_all_its_profile_champions(
    wide_plate, tmp_path, store, monkeypatch
):
    from cytoops import machine, profile

    data = wide_plate(treatments=12, replicates=3, embeddings=False)
    other = _move(
        wide_plate(treatments=12, replicates=3, seed=1, plate_id="plate-2"), "plate-2", tmp_path / "o"
    )
    mlflow.set_tracking_uri(store)
    served = _servables(data, tmp_path)
    for cytokine in ("TNF-α", "IL-6"):  # one profile model registered as two cytokines' champion
        _register(served["TNF-α"], cytokine, {"family": "profile"})
    measured = []
    real = profile.measure_well
    monkeypatch.setattr(profile, "measure_well", lambda *a: measured.append(1) or real(*a))
    monkeypatch.setattr(machine, "cores", lambda: 1)  # measured here, not in worker processes: counted
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(app, ["predict", str(other), "--out", str(out), "--no-record"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out).pivot(index="well", columns="cytokine", values="prob")
    assert len(measured) == 36 and table.shape == (36, 2)  # 36 wells measured once, not once a champion
    np.testing.assert_array_equal(table["TNF-α"], table["IL-6"])


def test_predict_scores_any_family_names_what_it_skips_and_reports_the_transfer(wide_plate, tmp_path, store):
    data = wide_plate(treatments=12, replicates=3, embeddings=False)
    other = _move(
        wide_plate(treatments=12, replicates=3, seed=1, plate_id="plate-2"), "plate-2", tmp_path / "o"
    )
    mlflow.set_tracking_uri(store)
    served = _servables(data, tmp_path)
    cv = {"cv_roc_auc": "0.81", "cv_roc_auc_lo": "0.62", "cv_roc_auc_hi": "0.93"}
    _register(served["IL-6"], "IL-6", {"family": "cell_count", **cv})
    _register(served["TNF-α"], "TNF-α", {"family": "profile", "cv_roc_auc": "0.7"})
    gone = _register(served["IL-6"], "IL-10", {"family": "cell_count"})
    mlflow.MlflowClient().delete_model_version("cytoops-IL-10", gone)  # its champion deleted
    _register(served["IL-6"], "IL-2", {"family": "cell_count"})
    with contextlib.closing(sqlite3.connect(store.removeprefix("sqlite:///"))) as db, db:
        db.execute("UPDATE registered_model_aliases SET version = 99 WHERE name = 'cytoops-IL-2'")  # none
    runner = CliRunner()

    folder = tmp_path / "pred"
    folder.mkdir()
    result = runner.invoke(app, ["predict", str(other), "--out", str(folder)])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        f"error: --out {folder} is a folder: give the CSV file to write, e.g. {folder / 'predictions.csv'}"
    ]
    assert list(folder.iterdir()) == []  # said before anything was scored or written

    out = folder / "p.csv"
    result = runner.invoke(app, ["predict", str(other), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert set(table.cytokine) == {"IL-6", "TNF-α"} and len(table) == 2 * 36
    assert table.prob.between(0, 1).all() and table.label.notna().all()
    assert "predict: skipped IL-10: cytoops-IL-10 has no version with the alias 'champion'" in result.output
    assert "predict: skipped IL-2: cytoops-IL-2 has no version with the alias 'champion'" in result.output
    assert "36 wells x 2 cytokines" in result.output and "2 skipped" in result.output
    notes = pd.read_csv(folder / "p_notes.csv").set_index("cytokine")
    assert (
        notes.loc["IL-10", "status"] == "skipped"
        and "no version with the alias" in notes.loc["IL-10", "note"]
    )
    assert notes.loc["IL-6", "status"] == "scored" and notes.loc["IL-6", "family"] == "cell_count"
    assert (
        notes.loc["TNF-α", "normalization"] == "profile normalized to this plate's 3 negative-control wells"
    )
    assert "TNF-α on plate-2: profile normalized to this plate's 3 negative-control wells" in result.output
    moved = pd.read_csv(folder / "p_transfer.csv").set_index("cytokine")
    il6 = moved.loc["IL-6"]
    assert il6.roc_auc_lo <= il6.roc_auc <= il6.roc_auc_hi and 0 <= il6.f1 <= 1
    assert (il6.cv_roc_auc, il6.cv_roc_auc_lo, il6.cv_roc_auc_hi) == (0.81, 0.62, 0.93)
    assert il6.bootstrap == "treatment" and il6.n_wells == 36 and il6.family == "cell_count"
    assert moved.loc["TNF-α", "cv_roc_auc"] == 0.7 and np.isnan(moved.loc["TNF-α", "cv_roc_auc_lo"])
    curves = pd.read_csv(folder / "p_reliability.csv")
    assert set(curves.cytokine) == {"IL-6", "TNF-α"}
    assert curves.groupby("cytokine").n_wells.sum().eq(36).all()
    assert (folder / "p_transfer.png").stat().st_size > 10_000
    # the registry remembers where each version was tested; best-model shows it
    tags = mlflow.MlflowClient().get_model_version_by_alias("cytoops-IL-6", "champion").tags
    assert float(tags["transfer_roc_auc"]) == pytest.approx(il6.roc_auc, abs=1e-4)
    assert tags["transfer_plates"] == "plate-2" and tags["transfer_n_wells"] == "36"
    shown = runner.invoke(app, ["best-model", "IL-6"])
    assert f"on another plate (plate-2): ROC AUC {il6.roc_auc:.2f}" in shown.output, shown.output
    assert "CV ROC AUC 0.81 (0.62-0.93)" in shown.output
    again = runner.invoke(app, ["predict", str(other), "--out", str(folder / "q.csv")])
    pd.testing.assert_frame_equal(
        pd.read_csv(folder / "q_transfer.csv"), pd.read_csv(folder / "p_transfer.csv")
    )
    assert again.exit_code == 0

    # nothing scored: one line naming each cytokine and why, non-zero
    result = runner.invoke(
        app, ["predict", str(other), "--cytokine", "IL-10", "--cytokine", "IL-99", "--out", str(out)]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: predict: nothing could be scored: IL-10: cytoops-IL-10"
    )
    assert "IL-99: no registered model cytoops-IL-99" in lines[0]


def test_out_must_be_a_file_path(tmp_path):
    from cytoops.predict import check_out

    assert check_out(tmp_path / "new" / "p.csv") == tmp_path / "new" / "p.csv"
    with pytest.raises(ValueError, match=r"is a folder: give the CSV file to write"):
        check_out(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"file is a file, not a folder"):
        check_out(tmp_path / "file" / "p.csv")
