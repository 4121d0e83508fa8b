"""The registry: champions refit, logged, registered as cytoops-<slug>@champion; `best-model`; the ViT loader.

Real wrangle and augment outputs of a small plate, synthetic cross-validation results (so that the champion
of each cytokine is known), the real evaluate, track and register stages, a real SQLite store."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from cytoops import augment, evaluate, features, models, params, register, tracking
from cytoops import train as train_mod
from cytoops.cli import app

REPO = Path(__file__).resolve().parents[1]
MODELS = (("wide_cnn", "none"), ("wide_cnn", "hflip"))  # deep_cnn needs 64x64: too slow here
# the model of each cytokine that predicts perfectly in the synthetic CV results: its champion
BEST = {"IL-6": ("wide_cnn", "hflip"), "TNF-α": ("wide_cnn", "none")}
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
    result = train_mod.Result(
        predictions=pd.concat(preds, ignore_index=True),
        curves=pd.concat(curves, ignore_index=True),
        fits=pd.DataFrame(fits),
        failures=pd.DataFrame(columns=[*train_mod.UNIT_COLUMNS, "error"]),
        folds=pd.DataFrame(columns=["cytokine", "repeat", "well_index", "fold"]),
    )
    train_mod.save(result, w / "train")
    evaluate.run(
        result, cytokines, root / "reports", root / "metrics" / "summary.json", params.EvaluateParams()
    )
    (root / "data.dvc").write_text(yaml.safe_dump({"outs": [{"md5": "feedface.dir", "path": "data"}]}))
    return {"work": w, "reports": root / "reports", "root": root}


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
    result = invoke(
        [
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
            "--data-dvc",
            root / "data.dvc",
            "--out",
            w / "register" / "registered.json",
            "--params",
            REPO / "params.yaml",
            *SETS,
            *extra,
        ]
    )
    assert result.exit_code == 0, result.output
    return json.loads((w / "register" / "registered.json").read_text())


def test_champions_are_registered_with_an_alias_and_load_by_it(wide_plate, tmp_path, store):
    paths = prepared(wide_plate(), tmp_path)
    listing = track_and_register(paths)
    tracked = json.loads((paths["work"] / "track" / "run.json").read_text())
    client = MlflowClient(store)

    by_cytokine = {c["cytokine"]: c for c in listing["champions"]}
    assert set(by_cytokine) == set(BEST)
    for cytokine, (arch, aug) in BEST.items():
        entry = by_cytokine[cytokine]
        assert (entry["architecture"], entry["augmentation"]) == (arch, aug)
        name = register.model_name(cytokine)
        mv = client.get_model_version_by_alias(name, "champion")
        assert str(mv.version) == entry["version"] == "1"
        assert mv.tags["architecture"] == arch and mv.tags["augmentation"] == aug
        assert float(mv.tags["cv_f1"]) == pytest.approx(1.0)
        assert mv.tags["source_run_id"] == tracked["nested"][f"{arch}/{aug}"] == mv.run_id
        assert mv.tags["pipeline_run_id"] == tracked["run_id"]
        assert mv.tags["channels"] == "actin,mito,nucleus" and mv.tags["image_size"] == "32"
        assert mv.tags["data_version"] == "feedface.dir"
    # the folds chose 2 and 3 epochs: the refit trains for 3
    assert by_cytokine["IL-6"]["epochs"] == 3

    uri = "models:/cytoops-IL-6@champion"
    model = mlflow.keras.load_model(uri)
    assert getattr(model, "optimizer", None) is None  # logged without its optimizer state
    info = mlflow.models.get_model_info(uri)
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 32, 32, 3]
    assert info.saved_input_example_info is not None
    views = augment.load(paths["work"] / "augment" / "views.npz")
    x = np.moveaxis(views.images[0, :5], 1, -1).astype(np.float32)
    out = model.predict(x, verbose=0)
    assert out.shape == (5, 2)
    assert np.all((register.probability(out) >= 0) & (register.probability(out) <= 1))
    # the champion is logged in the nested run of its model, whose CV scores chose it
    nested = client.get_run(tracked["nested"]["wide_cnn/hflip"])
    assert nested.info.status == "FINISHED" and nested.data.metrics["f1_IL-6"] == pytest.approx(1.0)

    # best-model, by the name in the plate or by the slug, as lines or JSON
    result = invoke(["best-model", "TNF-α", "--json"])
    assert result.exit_code == 0, result.output
    best = json.loads(result.output[result.output.index("{") :])
    assert (
        best["registered_model"] == "cytoops-TNF-alpha"
        and best["model_uri"] == "models:/cytoops-TNF-alpha@champion"
    )
    assert (best["architecture"], best["augmentation"]) == BEST["TNF-α"] and best["cv_f1"] == pytest.approx(
        1.0
    )
    assert best["source_run_id"] == tracked["nested"]["wide_cnn/none"]
    result = invoke(["best-model", "tnf-alpha"])
    assert result.exit_code == 0 and "models:/cytoops-TNF-alpha@champion" in result.output
    result = invoke(["best-model", "IL-10"])
    assert result.exit_code == 2 and "no registered model cytoops-IL-10" in result.output

    # a later pipeline with a lower CV F1 on the same data registers a version but keeps the champion ...
    scores = pd.read_csv(paths["reports"] / "f1_per_cytokine.csv")
    scores.loc[scores.cytokine == "IL-6", "f1"] *= 0.5
    scores.to_csv(paths["reports"] / "f1_per_cytokine.csv", index=False)
    listing = track_and_register(paths)
    il6 = {c["cytokine"]: c for c in listing["champions"]}["IL-6"]
    assert il6["version"] == "2" and not il6["promoted"]
    assert str(client.get_model_version_by_alias("cytoops-IL-6", "champion").version) == "1"
    # ... unless tracking.promote is latest
    listing = track_and_register(paths, "--set", "tracking.promote=latest")
    assert str(client.get_model_version_by_alias("cytoops-IL-6", "champion").version) == "3"


def test_log_models_none_registers_nothing(wide_plate, tmp_path, store):
    paths = prepared(wide_plate(), tmp_path)
    listing = track_and_register(paths, "--set", "tracking.log_models=none")
    assert {c["cytokine"] for c in listing["champions"]} == set(BEST)
    assert all(c["registered_model"] is None for c in listing["champions"])
    assert MlflowClient(store).search_registered_models() == []


def test_a_vit_model_is_its_head_plus_a_backbone_reference(tmp_path, store):
    rng = np.random.default_rng(0)
    bank = augment.make_bank(rng.random((4, 3, 32, 32)).astype(np.float32), ("none",))
    feats = features.compute(bank, params.FeaturesParams(seed=7), vit_layers=1, progress=False)
    head = models.build_head("vit_linear", models.VIT_FEATURES, models.ModelParams())
    s = tracking.connect("cytoops")
    backbone = {"weights": "random", "seed": 7, "layers": 1, "image_size": 32}
    with tracking.active_run(experiment_id=s.experiment_id):
        info = register.log_keras_model(
            head,
            name="model-IL-6",
            example=feats.values[0][:1],
            meta={"backbone": backbone},
            params={},
            tags={},
        )
    # what was logged is the head alone: it loads with Keras' safe mode (vit-keras' Lambda layers would not)
    logged = mlflow.keras.load_model(info.model_uri)
    assert [type(layer).__name__ for layer in logged.layers] == ["Dense"]
    full = register.load_vit(info.model_uri)
    images = features.to_vit_input(bank.images[0])
    np.testing.assert_allclose(
        full.predict(images, verbose=0), head.predict(feats.values[0], verbose=0), rtol=1e-4, atol=1e-5
    )
    keras.backend.clear_session()
