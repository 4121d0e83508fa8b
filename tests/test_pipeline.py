"""`cytoops run`: the whole pipeline in one process through the CLI, and its one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from cytoops import cli

# No ViT architecture here: the backbone's size (vit_layers) cannot be set through params, and the full
# 12-layer ViT-B/32 is too big for a quick test. The ViT heads are tested in test_train on cached features.
SETTINGS = [
    "train.epochs=1",
    "train.architectures=[wide_cnn]",
    "augment.strategies=[none,hflip]",
    "wrangle.min_wells=4",
    "wrangle.image_size=32",
    "train.batch_size=16",
    "train.workers=1",
]
FAST = [arg for setting in SETTINGS for arg in ("--set", setting)]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Nothing the CLI might track or write lands in the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def test_run_end_to_end_through_the_cli(wide_plate, isolated):
    data, out = wide_plate(), isolated / "out"
    result = CliRunner().invoke(cli.app, ["run", "--data", str(data), "--out", str(out), "--no-track", *FAST])
    assert result.exit_code == 0, result.output
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert last["n_cytokines_kept"] == 2

    cytokines = pd.read_csv(out / "wrangle" / "cytokines.csv", keep_default_na=False).set_index("cytokine")
    assert cytokines.kept.to_dict() == {"IL-6": True, "TNF-α": True, "IL-10": False}
    assert "< min_wells 4" in cytokines.loc["IL-10", "reason"]
    assert (out / "augment" / "views.npz").is_file()
    assert not (out / "features" / "vit.npz").exists()  # no ViT architecture, no backbone run

    scores = pd.read_csv(out / "reports" / "scores.csv")
    required = "architecture augmentation cytokine fold f1 precision recall roc_auc n_train n_test".split()
    assert set(required) <= set(scores.columns)
    assert len(scores) == 1 * 2 * 2 * 2  # architectures x strategies x kept cytokines x folds
    assert set(scores.cytokine) == {"IL-6", "TNF-α"} and set(scores.augmentation) == {"none", "hflip"}
    assert scores.f1.between(0, 1).all() and (scores.n_test > 0).all() and (scores.n_train > 0).all()
    predictions = pd.read_csv(out / "train" / "predictions.csv")
    assert predictions.prob.between(0, 1).all()
    il6 = predictions[(predictions.cytokine == "IL-6") & (predictions.augmentation == "none")]
    assert len(il6) == 32 and il6.well_index.is_unique  # every balanced IL-6 well tested once

    summary = json.loads((out / "metrics" / "summary.json").read_text())
    assert summary["n_kept"] == 2 and summary["best_model"] in {"wide_cnn/none", "wide_cnn/hflip"}
    assert set(pd.read_csv(out / "reports" / "models.csv").model) == {"wide_cnn/none", "wide_cnn/hflip"}
    assert set(pd.read_csv(out / "reports" / "best_per_cytokine.csv").cytokine) == {"IL-6", "TNF-α"}
    reports = ["f1_by_augmentation.png", "f1_by_architecture.png", "learning_curves.png"]
    for name in [*reports, "f1_per_cytokine.csv", "best_learning_curve.csv"]:
        assert (out / "reports" / name).is_file(), name


def test_run_on_a_malformed_plate_says_one_line_and_no_traceback(tiny_plate, isolated):
    data = tiny_plate(readouts=False)  # no cytokines.csv
    args = ["run", "--data", str(data), "--out", str(isolated / "out"), "--no-track"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "cytokines.csv" in lines[0] and "is missing" in lines[0]
    assert "Traceback" not in result.output
    assert not (isolated / "out" / "reports").exists()


def test_run_with_an_invalid_param_says_one_line_and_no_traceback(tiny_plate, isolated):
    data = tiny_plate()
    args = [
        "run",
        "--data",
        str(data),
        "--out",
        str(isolated / "out"),
        "--no-track",
        "--set",
        "train.folds=1",
    ]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2
    expected = "error: train.folds is 1: cross-validation needs at least 2"
    assert result.output.strip().splitlines() == [expected]
