"""The registry: best CNNs refit, logged as pyfuncs, registered as cytoops-<slug>@best-cnn, @champion only
when the verdict calls the cytokine predictable; `best-model`; the served model's answer; the ViT loader.

Real wrangle and augment outputs of a small plate, synthetic cross-validation results (so that the champion
of each cytokine is known), the real evaluate, track and register stages, a real SQLite store."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml
from conftest import mlflow_served
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from cytoops import (
    cvresult,
    evaluate,
    params,
    register,
    registry,
    tables,
)
from cytoops.cli import app
from cytoops.fitter import Fitter

REPO = Path(__file__).resolve().parents[1]
MODELS = (("wide_cnn", "none"), ("wide_cnn", "hflip"))  # deep_cnn needs 64x64: too slow here
# the model of each cytokine that predicts perfectly in the synthetic CV results: its best CNN
BEST = {"IL-6": ("wide_cnn", "hflip"), "TNF-α": ("wide_cnn", "none")}
PREDICTABLE = {"IL-6": True, "TNF-α": False}  # what the (made-up) verdict says
SETS = [
    "--set",
    "wrangle.image_size=32",
    "--set",
    "augment.strategies=[none,hflip]",
    "--set",
    "train.architectures=[wide_cnn]",
    "--set",
    "train.batch_size=16",
]


def invoke(args: list[str]):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(result.exception)))
    return result


def prepared(data: Path, root: Path) -> dict[str, Path]:
    """wrangle and augment for real; cross-validation results made up so that BEST is each champion."""
    w = root / "work"
    result = invoke(
        ["wrangle", "--data", data, "--out", w / "wrangle", "--params", REPO / "params.yaml", *SETS]
    )
    assert result.exit_code == 0, result.output
    assert (
        invoke(
            [
                "augment",
                "--images",
                w / "wrangle" / "images.npy",
                "--out",
                w / "augment" / "views.npz",
                "--params",
                REPO / "params.yaml",
                *SETS,
            ]
        ).exit_code
        == 0
    )
    labels = pd.read_csv(w / "wrangle" / "labels.csv")
    cytokines = pd.read_csv(w / "wrangle" / "cytokines.csv", keep_default_na=False)
    kept = list(cytokines.cytokine[cytokines.kept.astype(str).eq("True")])
    assert sorted(kept) == sorted(BEST)
    rng = np.random.default_rng(0)
    preds, curves, fits = [], [], []
    for (arch, aug), cytokine, fold in ((m, c, f) for m in MODELS for c in kept for f in (0, 1)):
        rows = labels[(labels.cytokine == cytokine) & labels.balanced]
        test = rows.iloc[fold::2]
        unit = {"architecture": arch, "augmentation": aug, "cytokine": cytokine, "repeat": 0, "fold": fold}
        y = test.label.to_numpy()
        prob = y * 0.9 + 0.05 if BEST[cytokine] == (arch, aug) else rng.random(len(y))
        preds.append(
            pd.DataFrame(
                {
                    **unit,
                    "well_index": test.well_index,
                    "plate": "plate-1",
                    "well": "A01",
                    "label": y,
                    "prob": prob,
                }
            )
        )
        loss = np.linspace(0.7, 0.4, 3)
        curves.append(
            pd.DataFrame(
                {
                    **unit,
                    "epoch": [1, 2, 3],
                    "loss": loss,
                    "val_loss": loss,
                    "accuracy": 0.5,
                    "val_accuracy": 0.5,
                }
            )
        )
        fits.append(
            {
                **unit,
                "n_train": 10,
                "n_train_images": 10,
                "n_val": 3,
                "n_test": len(y),
                "best_epoch": 2 + fold,
                "epochs_run": 3,
                "seconds": 0.1,
            }
        )
    result = cvresult.Result(
        predictions=pd.concat(preds, ignore_index=True),
        curves=pd.concat(curves, ignore_index=True),
        fits=pd.DataFrame(fits),
        failures=pd.DataFrame(columns=[*tables.UNIT, "error"]),
        folds=pd.DataFrame(columns=["cytokine", "repeat", "well_index", "fold"]),
    )
    cvresult.save(result, w / "train")
    evaluate.run(
        result, cytokines, root / "reports", root / "metrics" / "summary.json", params.EvaluateParams()
    )
    (root / "data.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "feedface.dir", "path": "data"}]}))
    write_verdict(root / "reports", PREDICTABLE)
    return {"work": w, "reports": root / "reports", "root": root, "data": data}


def write_verdict(reports: Path, calls: dict[str, bool], best: dict[str, str] | None = None) -> None:
    """A made-up verdict: the call per cytokine, its best predictor (default: its best CNN, BEST) and its
    figures (CV ROC AUC 0.9, interval 0.8-0.97, q 0.01)."""
    best = {c: best.get(c) if best and c in best else "/".join(BEST[c]) for c in calls}
    pd.DataFrame(
        {
            "cytokine": list(calls),
            "predictable": list(calls.values()),
            "q": 0.01,
            "best_predictor": [best[c] for c in calls],
            "roc_auc": 0.9,
            "roc_auc_lo": 0.8,
            "roc_auc_hi": 0.97,
        }
    ).to_csv(reports / "predictable.csv", index=False)


def track_and_register(paths: dict[str, Path], *extra: str) -> dict:
    w, root = paths["work"], paths["root"]
    result = invoke(
        [
            "track",
            "--trained",
            w / "train",
            "--reports",
            paths["reports"],
            "--metrics",
            root / "metrics" / "summary.json",
            "--data-dvc",
            root / "data.dvc",
            "--out",
            w / "track" / "run.json",
            "--params",
            REPO / "params.yaml",
            *SETS,
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    result = invoke(register_args(paths, *extra))
    assert result.exit_code == 0, result.output
    # register's own line per cytokine, not MLflow's event lines and progress bars
    assert "register: " in result.output
    for chatter in ("Successfully registered", "Created version", "Downloading artifacts", "CloudPickle"):
        assert chatter not in result.output, result.output
    return json.loads((w / "register" / "registered.json").read_text())


def register_args(paths: dict[str, Path], *extra: str) -> list:
    w, root = paths["work"], paths["root"]
    return [
        "register",
        "--run",
        w / "track" / "run.json",
        "--trained",
        w / "train",
        "--wrangled",
        w / "wrangle",
        "--views",
        w / "augment" / "views.npz",
        "--features",
        w / "features" / "vit.npz",
        "--scores",
        paths["reports"] / "f1_per_cytokine.csv",
        "--verdict",
        paths["reports"] / "predictable.csv",
        "--data-dvc",
        root / "data.dvc",
        "--out",
        w / "register" / "registered.json",
        "--params",
        REPO / "params.yaml",
        *SETS,
        *extra,
    ]


def test_best_cnns_are_registered_and_only_predictable_ones_are_champions(wide_plate, tmp_path, store):
    paths = prepared(wide_plate(), tmp_path)
    listing = track_and_register(paths)
    tracked = json.loads((paths["work"] / "track" / "run.json").read_text())
    client = MlflowClient(store)

    by_cytokine = {c["cytokine"]: c for c in listing["registered"]}
    assert set(by_cytokine) == set(BEST) and [c["cytokine"] for c in listing["champions"]] == ["IL-6"]
    for cytokine, (arch, aug) in BEST.items():
        entry = by_cytokine[cytokine]
        assert (entry["architecture"], entry["augmentation"]) == (arch, aug)
        name = registry.model_name(cytokine)
        mv = client.get_model_version_by_alias(name, "best-cnn")
        assert str(mv.version) == entry["version"] == "1"
        assert mv.tags["architecture"] == arch and mv.tags["augmentation"] == aug
        assert float(mv.tags["cv_f1"]) == pytest.approx(1.0)
        assert mv.tags["source_run_id"] == tracked["nested"][f"{arch}/{aug}"] == mv.run_id
        assert mv.tags["pipeline_run_id"] == tracked["run_id"]
        assert mv.tags["channels"] == "actin,mito,nucleus" and mv.tags["image_size"] == "32"
        assert mv.tags["data_version"] == "feedface.dir"
        assert mv.tags["predictable"] == str(PREDICTABLE[cytokine]).lower()
    assert str(client.get_model_version_by_alias("cytoops-IL-6", "champion").version) == "1"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("cytoops-TNF-alpha", "champion")  # not predictable: no champion
    # the folds chose 2 and 3 epochs: the refit trains for 3
    assert by_cytokine["IL-6"]["epochs"] == 3
    # the champion is logged in the nested run of its model, whose CV scores chose it
    nested = client.get_run(tracked["nested"]["wide_cnn/hflip"])
    assert nested.info.status == "FINISHED" and nested.data.metrics["f1_IL-6"] == pytest.approx(1.0)

    # best-model, by the name in the plate or by the slug, as lines or JSON; a cytokine that is not
    # predictable falls back to its best CNN, with a note
    result = invoke(["best-model", "il-6", "--json"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout[result.stdout.index("{") :])
    assert best["model_uri"] == "models:/cytoops-IL-6@champion" and best["note"] == ""
    result = invoke(["best-model", "TNF-α", "--json"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.stdout[result.stdout.index("{") :])
    assert best["registered_model"] == "cytoops-TNF-alpha" and best["alias"] == "best-cnn"
    assert best["model_uri"] == "models:/cytoops-TNF-alpha@best-cnn"
    assert (best["architecture"], best["augmentation"]) == BEST["TNF-α"]
    assert best["cv_f1"] == pytest.approx(1.0)
    assert best["source_run_id"] == tracked["nested"]["wide_cnn/none"]
    assert "has no @champion" in result.output and "using its best CNN, @best-cnn" in result.output
    result = invoke(["best-model", "tnf-alpha"])
    assert result.exit_code == 0 and "models:/cytoops-TNF-alpha@best-cnn" in result.output
    result = invoke(["best-model", "IL-10"])
    assert result.exit_code == 2 and "no registered model cytoops-IL-10" in result.output

    # a later pipeline with a lower CV F1 on the same data registers a version but keeps best-cnn ...
    scores = pd.read_csv(paths["reports"] / "f1_per_cytokine.csv")
    scores.loc[scores.cytokine == "IL-6", "f1"] *= 0.5
    scores.to_csv(paths["reports"] / "f1_per_cytokine.csv", index=False)
    listing = track_and_register(paths)
    il6 = {c["cytokine"]: c for c in listing["registered"]}["IL-6"]
    assert il6["version"] == "2" and not il6["promoted"]
    assert str(client.get_model_version_by_alias("cytoops-IL-6", "best-cnn").version) == "1"
    # the champion is the current verdict's best predictor: this pipeline's refit of it
    assert str(client.get_model_version_by_alias("cytoops-IL-6", "champion").version) == "2"
    # ... unless tracking.promote is latest; and a verdict that no longer calls IL-6 predictable removes its
    # champion and says so
    write_verdict(paths["reports"], {"IL-6": False, "TNF-α": False})
    result = invoke(register_args(paths, "--set", "tracking.promote=latest"))
    assert result.exit_code == 0, result.output
    assert str(client.get_model_version_by_alias("cytoops-IL-6", "best-cnn").version) == "3"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("cytoops-IL-6", "champion")
    assert "@champion removed from v2 (the verdict no longer calls IL-6 predictable)" in result.output


def test_the_champion_is_the_verdicts_best_predictor_of_any_family(wide_plate, tmp_path, store):
    """IL-6's call was earned by cell count: that is its @champion, served from raw thumbnails; its best CNN
    stays @best-cnn on a version of its own, and best-model says the family and how sure."""
    paths = prepared(wide_plate(), tmp_path)
    write_verdict(paths["reports"], PREDICTABLE, best={"IL-6": "cell_count/none"})
    listing = track_and_register(paths)
    client = MlflowClient(store)
    champion = client.get_model_version_by_alias("cytoops-IL-6", "champion")
    best_cnn = client.get_model_version_by_alias("cytoops-IL-6", "best-cnn")
    assert champion.version != best_cnn.version and best_cnn.tags["family"] == "wide_cnn"
    assert champion.tags["family"] == "cell_count" and champion.tags["best_predictor"] == "cell_count/none"
    assert (champion.tags["cv_roc_auc"], champion.tags["cv_roc_auc_lo"], champion.tags["q"]) == (
        "0.9",
        "0.8",
        "0.01",
    )
    assert [(c["cytokine"], c["family"]) for c in listing["champions"]] == [("IL-6", "cell_count")]
    wells = pd.read_csv(paths["work"] / "wrangle" / "wells.csv")
    raw = np.stack([tifffile.imread(paths["data"] / "plate-1" / "images" / f"{w}.tif") for w in wells.well])
    answer = mlflow.pyfunc.load_model("models:/cytoops-IL-6@champion").predict(raw).p_responder
    assert answer.between(0, 1).all() and answer.nunique() > 1
    result = invoke(["best-model", "IL-6"])
    assert result.exit_code == 0, result.output
    assert "cell_count (cell_count/none): CV ROC AUC 0.90 (0.80-0.97), q 0.01" in result.output

    # a best predictor that cannot be served is said, on screen and by best-model: no silent fallback
    write_verdict(paths["reports"], PREDICTABLE, best={"IL-6": "position/none"})
    result = invoke(register_args(paths))
    assert result.exit_code == 0, result.output
    assert "IL-6: no @champion: its best predictor position/none" in result.output
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("cytoops-IL-6", "champion")
    result = invoke(["best-model", "IL-6"])
    assert "could not be served: position/none" in result.output


def test_the_registered_model_answers_p_responder_for_raw_thumbnails(wide_plate, tmp_path, store):
    """The pyfunc scales raw uint16 thumbnails as wrangle scaled the training plate: its answer equals the
    CNN's on wrangle's images, in either channel layout."""
    paths = prepared(wide_plate(), tmp_path)
    track_and_register(paths)
    served = mlflow.pyfunc.load_model("models:/cytoops-IL-6@champion")
    wells = pd.read_csv(paths["work"] / "wrangle" / "wells.csv")
    raw = np.stack(
        [tifffile.imread(paths["data"] / "plate-1" / "images" / f"{w}.tif") for w in wells.well[:6]]
    )
    assert raw.dtype == np.uint16 and raw.shape == (6, 3, 32, 32)
    answer = served.predict(raw)
    assert list(answer.columns) == ["p_responder"] and len(answer) == 6
    assert answer.p_responder.between(0, 1).all()
    np.testing.assert_allclose(served.predict(np.moveaxis(raw, 1, -1)).p_responder, answer.p_responder)
    wrangled = np.load(paths["work"] / "wrangle" / "images.npy")[:6]
    cnn = served.unwrap_python_model()
    expected = cnn.probabilities(np.moveaxis(wrangled, 1, -1))
    np.testing.assert_allclose(answer.p_responder, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(MlflowException, match=r"expected square images with 3 channels") as refused:
        served.predict(raw[:, :2])  # MLflow's own exception: `mlflow models serve` answers 400 with it
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"


def test_log_models_none_registers_nothing(wide_plate, tmp_path, store):
    paths = prepared(wide_plate(), tmp_path)
    listing = track_and_register(paths, "--set", "tracking.log_models=none")
    assert {c["cytokine"] for c in listing["registered"]} == set(BEST)
    assert all(c["registered_model"] is None for c in listing["registered"])
    assert MlflowClient(store).search_registered_models() == []


@pytest.mark.serve
def test_a_served_champion_answers_a_curl_with_probabilities(wide_plate, tmp_path, store):
    """`mlflow models serve --env-manager local` on the registered champion; curl posts raw uint16 thumbnails
    (as JSON numbers) and gets P(responder) back, the same as the pyfunc loaded in process."""
    paths = prepared(wide_plate(), tmp_path)
    track_and_register(paths)
    raw = np.stack(
        [tifffile.imread(paths["data"] / "plate-1" / "images" / f"{w}.tif") for w in ("A01", "A02", "C08")]
    )
    expected = mlflow.pyfunc.load_model("models:/cytoops-IL-6@champion").predict(raw).p_responder
    with mlflow_served("models:/cytoops-IL-6@champion", {"MLFLOW_TRACKING_URI": store}) as post:
        status, answer = post(raw.tolist())
        assert status == "200", answer
        predictions = answer["predictions"]
        assert [sorted(p) for p in predictions] == [["p_responder"]] * 3
        got = [p["p_responder"] for p in predictions]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert all(0 <= g <= 1 for g in got)
        # a 1 x 1 pixel image: a 400 whose message says why (not MLflow's generic "unexpected error")
        status, answer = post([[[1]], [[2]], [[3]]])
        assert status == "400", answer
        assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "thumbnails are 1x1 px: a served model reads images of at least 16x16" in answer["message"]
        assert "unexpected error" not in answer["message"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("cytokine,called,best_predictor\nIL-6,True,x/none\n", r"predictable.csv has no column predictable"),
        ("cytokine,predictable\nIL-6,True\n", r"no column best_predictor: .*rerun the verdict stage"),
        (
            "cytokine,predictable,best_predictor\nIL-6,yes,x/none\n",
            r"column predictable must be True or False; row 2 has 'yes'",
        ),
    ],
)
def test_a_malformed_verdict_file_is_one_precise_error(tmp_path, text, match):
    path = tmp_path / "predictable.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        register.read_verdict(path)
    with pytest.raises(ValueError, match=r"does not exist: run the verdict stage"):
        register.read_verdict(tmp_path / "missing.csv")
    text = "cytokine,predictable,best_predictor\nIL-6,True,profile/none\nTNF-α,False,wide_cnn/hflip\n"
    called = register.champion_rows(register.read_verdict(_written(tmp_path, text)))
    assert called[["cytokine", "family", "augmentation"]].values.tolist() == [["IL-6", "profile", "none"]]


def _written(folder: Path, text: str) -> Path:
    path = folder / "ok.csv"
    path.write_text(text)
    return path


def test_refit_is_the_cross_validation_loop_run_for_a_fixed_number_of_epochs():
    # One training loop: the refit of a champion walks exactly the path its cross-validation fits walked
    # (same seed, initial weights, shuffles and steps), only stopped after `epochs` instead of by the
    # validation loss; validating reads the model and never moves it or the shuffling.
    rng = np.random.default_rng(0)
    y = np.arange(24) % 2
    x = rng.random((24, 16, 16, 3)).astype(np.float32)
    x[y == 1, ..., 0] += 0.5
    fitter = Fitter(params.TrainParams(epochs=6, batch_size=8, patience=10, learning_rate=0.003))
    _, scored, _ = fitter.fit("wide_cnn", x, y, x[:6], y[:6], seed=7)
    model, _, _ = fitter.fit("wide_cnn", x, y, None, None, seed=7, epochs=4)  # what refit.Refitter runs
    refit_weights = [w.copy() for w in model.get_weights()]
    _, history, best_epoch = fitter.fit("wide_cnn", x, y, None, None, seed=7, epochs=4)
    assert best_epoch == 4 and len(history["loss"]) == 4 and history["val_loss"] == []
    np.testing.assert_allclose(history["loss"], scored["loss"][:4], rtol=0, atol=1e-6)
    for got, again in zip(refit_weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, again)  # seeded: a refit is reproducible
