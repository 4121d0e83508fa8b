"""`cytoops run`: the whole pipeline in one process through the CLI, and its one-line errors."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from typer.testing import CliRunner

from cytoops import cli

# No ViT architecture here: the backbone's size (vit_layers) cannot be set through params, and the full
# 12-layer ViT-B/32 is too big for a quick test. The ViT heads are tested in test_train on cached features.
SETTINGS = [
    "train.epochs=1",
    "train.architectures=[wide_cnn,profile,multitask_cnn]",
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
    # (wide_cnn x 2 strategies + profile + multitask_cnn under the richest strategy) x 2 cytokines x 2 folds
    assert len(scores) == (2 + 1 + 1) * 2 * 2
    assert set(scores.cytokine) == {"IL-6", "TNF-α"} and set(scores.augmentation) == {"none", "hflip"}
    assert set(scores.architecture) == {"wide_cnn", "profile", "multitask_cnn"}
    assert scores.f1.between(0, 1).all() and (scores.n_test > 0).all() and (scores.n_train > 0).all()
    predictions = pd.read_csv(out / "train" / "predictions.csv")
    assert predictions.prob.between(0, 1).all()
    labels = pd.read_csv(out / "wrangle" / "labels.csv")
    for arch in ("wide_cnn", "profile", "multitask_cnn"):
        il6 = predictions[(predictions.cytokine == "IL-6") & (predictions.architecture == arch)]
        il6 = il6[il6.augmentation == il6.augmentation.iloc[0]]
        assert il6.well_index.is_unique  # every labelled IL-6 well tested once, by every model
        assert set(il6.well_index) == set(labels.well_index[labels.cytokine == "IL-6"])
    assert (out / "profile" / "profile.parquet").is_file()
    verdict = pd.read_csv(out / "reports" / "predictable.csv")
    assert set(verdict.cytokine) == {"IL-6", "TNF-α"} and {"predictable", "q", "best_family"} <= set(
        verdict.columns
    )
    assert "predictable from images" in (out / "reports" / "index.html").read_text()

    summary = json.loads((out / "metrics" / "summary.json").read_text())
    assert summary["n_kept"] == 2 and summary["best_model"] in {
        "wide_cnn/none", "wide_cnn/hflip", "profile/none", "multitask_cnn/hflip"
    }  # fmt: skip
    assert set(pd.read_csv(out / "reports" / "models.csv").model) == {
        "wide_cnn/none", "wide_cnn/hflip", "profile/none", "multitask_cnn/hflip"
    }  # fmt: skip
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


# ---- issue 14: nothing to train stops early, in one line; a rejected plate leaves no MLflow run ----------


def listing(folder):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.output, result.output
    return [line for line in result.output.splitlines() if line.startswith("error: ")]


def must_not_train(*args, **kwargs):
    raise AssertionError("training started")


def test_no_cytokine_kept_stops_before_training_in_one_line(tiny_plate, isolated, monkeypatch):
    from cytoops import train

    monkeypatch.setattr(train, "cross_validate", must_not_train)
    data = tiny_plate()  # 8 wells: no cytokine reaches the default 15 balanced wells
    before = listing(data)
    args = ["run", "--data", str(data), "--out", str(isolated / "out"), "--no-track"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "no cytokine passed wrangle's cut-off" in line and "wrangle.min_wells" in line
    assert str(isolated / "out" / "wrangle" / "cytokines.csv") in line
    assert not (isolated / "out" / "train").exists() and listing(data) == before


def test_more_folds_than_treatment_groups_stops_before_training(wide_plate, isolated, monkeypatch):
    from cytoops import train

    monkeypatch.setattr(train, "cross_validate", must_not_train)
    args = ["run", "--data", str(wide_plate()), "--out", str(isolated / "out"), "--no-track", *FAST]
    result = CliRunner().invoke(cli.app, [*args, "--set", "train.folds=17"])
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "train.folds is 17 but the plate's labelled wells hold 16 treatment groups" in line
    assert "set train.folds to 16 or fewer" in line


def test_train_command_stops_before_training_when_no_cytokine_is_kept(tiny_plate, isolated, monkeypatch):
    from cytoops import train

    monkeypatch.setattr(train, "cross_validate", must_not_train)
    runner, out = CliRunner(), isolated / "out"
    (isolated / "params.yaml").write_text("train:\n  architectures: [wide_cnn]\n")
    for args in (
        ["wrangle", "--data", str(tiny_plate()), "--out", str(out / "w")],
        ["augment", "--images", str(out / "w" / "images.npy"), "--out", str(out / "v.npz")],
    ):
        assert runner.invoke(cli.app, args).exit_code == 0
    args = ["train", "--wrangled", str(out / "w"), "--views", str(out / "v.npz"), "--out", str(out / "t")]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 2 and "no cytokine passed" in error_lines(result)[0]


def test_every_unit_failing_is_one_line_quoting_the_failures_file(wide_plate, isolated, monkeypatch):
    from cytoops import train

    def broken_fit(self, *args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(train.Fitter, "fit", broken_fit)
    out = isolated / "out"
    only_cnn = ["--set", "train.architectures=[wide_cnn]"]  # profile and multitask_cnn use no Fitter
    args = ["run", "--data", str(wide_plate()), "--out", str(out), "--no-track", *FAST, *only_cnn]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert f"see {out / 'train' / 'failures.csv'}" in line and "planted failure" in line
    assert len(pd.read_csv(out / "train" / "failures.csv")) == 1 * 2 * 2 * 2  # every unit is there
    assert not (out / "reports" / "index.html").exists()

    # the verdict stage on that folder says the same in one line, before any of its work
    (isolated / "params.yaml").write_text("{}\n")
    args = ["verdict", "--wrangled", str(out / "wrangle"), "--trained", str(out / "train")]
    result = CliRunner().invoke(cli.app, [*args, "--reports", str(isolated / "r")])
    assert result.exit_code == 2
    [line] = error_lines(result)
    assert "no unit was trained" in line and not (isolated / "r").exists()


def test_a_rejected_plate_leaves_no_mlflow_run(tiny_plate, isolated):
    import mlflow

    def runs() -> list:
        client = mlflow.MlflowClient()
        return client.search_runs([e.experiment_id for e in client.search_experiments()])

    data = tiny_plate(readouts=False)  # no cytokines.csv
    result = CliRunner().invoke(cli.app, ["run", "--data", str(data), "--out", str(isolated / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "cytokines.csv: is missing" in result.output
    assert runs() == []
    shutil.rmtree(data / "plate-1")
    data = tiny_plate(plate_id="p2")  # readable, but no cytokine is kept
    result = CliRunner().invoke(cli.app, ["run", "--data", str(data), "--out", str(isolated / "out2")])
    assert result.exit_code == 2 and "no cytokine passed" in error_lines(result)[0]
    assert runs() == []


def test_running_out_of_memory_is_one_line(tiny_plate, isolated, monkeypatch):
    from cytoops import wrangle

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(wrangle, "read_data", no_memory)
    (isolated / "params.yaml").write_text("{}\n")
    args = ["wrangle", "--data", str(tiny_plate()), "--out", str(isolated / "w")]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 1
    assert error_lines(result) == [line for line in result.output.splitlines() if line.strip()]
    assert "out of memory" in result.output and "wrangle.image_size" in result.output
