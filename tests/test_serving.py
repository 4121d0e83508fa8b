"""Serving: the one input check every served model shares, and every image family served as an MLflow
pyfunc (fitted on a small plate here, saved with `mlflow.pyfunc.save_model`, loaded back, asked with raw
thumbnails)."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import mlflow_served
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode

from cytoops import profile, servable, serving, wrangle
from cytoops.params import WrangleParams
from cytoops.plate import read_data

CHANNELS = ("actin", "mito", "nucleus")
SIZE = 32


# ---- the input check --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (
            np.ones((1, 3, 1, 1), np.uint16),
            r"thumbnails are 1x1 px: a served model reads images of at least 16x16",
        ),
        (np.ones((1, 1, 3)), r"thumbnails are 1x1 px"),  # one channels-last 1 x 1 image
        (np.ones((5, 3, 2, 2)), r"thumbnails are 2x2 px"),
        (np.ones((2, 3, 15, 15)), r"thumbnails are 15x15 px"),
        (np.ones((2, 3, 16, 16), bool), r"must be pixel values \(integers or floats\); got booleans"),
        (np.array([[["1", "2"]]]), r"got text"),
        (np.array([1, None, 3], dtype=object), r"got mixed or missing values"),
        (
            np.full((1, 3, 16, 16), -1e30),
            r"thumbnails hold -1e\+30: pixel values must lie within \+-4\.29e\+09",
        ),
        (np.full((1, 3, 16, 16), 2**40, np.int64), r"thumbnails hold 1\.1e\+12"),
        (np.full((1, 3, 16, 16), np.nan), r"NaN or infinite"),
        (np.full((1, 3, 16, 16), np.inf, np.float32), r"NaN or infinite"),
        (np.ones((3, 16, 16, 2)), r"expected square images with 3 channels"),
        (np.ones((16, 16)), r"must be shaped \(N, C, H, W\) or \(N, H, W, C\) with C = 3; got \(16, 16\)"),
    ],
)
def test_check_thumbnails_refuses_what_no_plate_holds_and_says_why(x, match):
    with pytest.raises(ValueError, match=match):
        serving.check_thumbnails(x, 3)


def test_check_thumbnails_reads_a_3d_array_as_one_image_channels_first():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 65535, (3, 64, 64)).astype(np.uint16)
    x = serving.check_thumbnails(image, 3)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], image)
    last = serving.check_thumbnails(np.moveaxis(image, 0, -1), 3)  # (64, 64, 3): one image, channels last
    np.testing.assert_array_equal(last, x)
    batch = serving.check_thumbnails(pd.DataFrame(image[0]).to_numpy()[None, None].repeat(3, 1), 3)
    assert batch.shape == (1, 3, 64, 64)
    edge = np.full((1, 3, 16, 16), 2**32 - 1, np.uint32)  # the widest integer a TIFF holds is fine
    assert serving.check_thumbnails(edge, 3).max() == np.float32(2**32 - 1)
    assert serving.check_thumbnails(np.zeros((0, 3, 16, 16)), 3).shape == (0, 3, 16, 16)


# ---- a small plate, and a model of every family fitted on it ----------------------------------------------


@pytest.fixture
def plate(wide_plate):
    """36 wells (12 treatments x 3, t00 the 3 negative controls) of 32 x 32 uint16: the wrangled plate, its
    raw thumbnails, the recipe and IL-6 labels."""
    data = wide_plate(treatments=12, replicates=3, embeddings=False)
    w = wrangle.wrangle(read_data(data, image_size=SIZE), WrangleParams(image_size=SIZE, min_wells=2))
    raw = np.stack([tifffile.imread(data / "plate-1" / "images" / f"{well}.tif") for well in w.wells.well])
    recipe = serving.recipe(w.scaling, w.channels, CHANNELS, SIZE)
    il6 = w.labels[w.labels.cytokine == "IL-6"].set_index("well_index").label
    y = il6.reindex(range(len(w.wells))).to_numpy().astype(int)
    return {"w": w, "raw": raw, "recipe": recipe, "y": y}


def served(s: servable.Servable, tmp_path, name: str = "model"):
    path = tmp_path / name
    mlflow.pyfunc.save_model(path=str(path), **s.log_kwargs())
    return mlflow.pyfunc.load_model(str(path))


def answers(model, raw: np.ndarray) -> np.ndarray:
    out = model.predict(raw)
    assert list(out.columns) == ["p_responder"] and len(out) == len(raw)
    prob = out.p_responder.to_numpy()
    assert np.all((prob >= 0) & (prob <= 1))
    return prob


def refuses_a_1x1_image(model) -> None:
    with pytest.raises(MlflowException) as err:
        model.predict(np.ones((1, 1, 3), np.uint16))
    assert err.value.error_code == ErrorCode.Name(INVALID_PARAMETER_VALUE)
    assert err.value.message.startswith(
        "thumbnails are 1x1 px: a served model reads images of at least 16x16"
    )
    with pytest.raises(MlflowException, match=r"got booleans"):
        model.predict(np.ones((1, 3, 16, 16), bool))


def test_profile_is_served_whole_and_reproduces_its_own_probabilities(plate, tmp_path):
    w, raw = plate["w"], plate["raw"]
    profiled = profile.profile_plates(w.images, w.wells, w.channels)
    table = profiled.table
    model = profile.fit(table[profile.feature_columns(table)], plate["y"], seed=0)
    expected = model.predict_proba(table)
    norm = profile.training_normalization(profiled.normalization)
    assert norm.method == "mad_robustize" and norm.n_reference == 3
    s = servable.build("profile", servable.Profile(model, norm), plate["recipe"], tmp_path / "art")
    assert s.metadata["family"] == "profile" and s.metadata["serving"]["plate_channels"] == list(CHANNELS)
    assert not any(str(p).endswith((".pkl", ".pickle")) for p in s.artifacts.values())
    loaded = served(s, tmp_path)
    np.testing.assert_allclose(answers(loaded, raw), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(answers(loaded, np.moveaxis(raw, 1, -1)[:4]), expected[:4], rtol=0, atol=1e-6)
    refuses_a_1x1_image(loaded)
    # a whole plate: normalized to its own 3 negative controls (here the training plate: the same numbers)
    inner = loaded.unwrap_python_model()
    prob, note = inner.plate_probabilities(raw, w.wells.role.to_numpy())
    np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-6)
    assert note == "profile normalized to this plate's 3 negative-control wells"
    prob, note = inner.plate_probabilities(raw, None)
    np.testing.assert_allclose(prob, expected, rtol=0, atol=1e-6)
    assert "training plate's statistics (this plate has 0 negative-control wells" in note


def test_a_new_plate_is_normalized_to_its_own_controls_when_it_has_them():
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"cell_count": rng.integers(5, 20, 12).astype(float), "f": rng.normal(0, 1, 12)})
    roles = np.array(["negative_control"] * 4 + ["sample"] * 8)
    norm = profile.fit_normalization(train[["f"]], roles, train.median())
    shifted = train.assign(f=train.f + 10.0)  # the same biology imaged brighter
    own, note = servable.plate_normalization(shifted, roles, norm)
    assert note == "profile normalized to this plate's 4 negative-control wells"
    np.testing.assert_allclose(own.apply(shifted).f, norm.apply(train).f, atol=1e-9)
    kept, note = servable.plate_normalization(shifted, roles[::-1][:12] == "x", norm)
    assert kept is norm and "this plate has 0 negative-control wells in layout.csv; 3 needed" in note
    assert np.median(kept.apply(shifted).f[:4]) > 5  # left shifted: what the new controls would have fixed


@pytest.mark.parametrize("counter", ["segmentation", "peaks"])
def test_cell_count_is_served_as_the_baseline_counts_and_fits(plate, tmp_path, counter):
    from cytoops.verdict import baselines

    w = plate["w"]
    counts = baselines.count_cells(w.images, w.channels, counter)
    if counter == "segmentation":  # the verdict's cell_count column when there is a profile
        np.testing.assert_array_equal(counts, profile.profile_wells(w.images, w.wells, w.channels).cell_count)
    linear = baselines.fit_linear(counts[:, None], plate["y"])
    expected = baselines.fit_predict(counts[:, None], plate["y"], counts[:, None])
    np.testing.assert_allclose(linear.probability(counts[:, None]), expected)
    s = servable.build("cell_count", servable.CellCount(linear, counter), plate["recipe"], tmp_path / "art")
    loaded = served(s, tmp_path)
    np.testing.assert_allclose(answers(loaded, plate["raw"]), expected, rtol=0, atol=1e-9)
    refuses_a_1x1_image(loaded)


def test_a_study_cnn_is_served(plate, tmp_path):
    from cytoops.fitter import Fitter
    from cytoops.params import TrainParams

    x = np.moveaxis(plate["w"].images, 1, -1).astype(np.float32)
    fitter = Fitter(TrainParams(epochs=2, batch_size=8))
    model, _, _ = fitter.fit("wide_cnn", x, plate["y"], None, None, seed=3, epochs=2)
    expected = fitter.probability(model, x)
    loaded = served(servable.build("wide_cnn", model, plate["recipe"], tmp_path / "art"), tmp_path)
    np.testing.assert_allclose(answers(loaded, plate["raw"]), expected, rtol=1e-5, atol=1e-6)
    refuses_a_1x1_image(loaded)


def test_the_multitask_cnn_serves_the_champion_cytokines_column(plate, tmp_path):
    from cytoops import multitask

    w = plate["w"]
    cytokines = ("IL-6", "TNF-α")
    y = np.stack(
        [
            w.labels[w.labels.cytokine == c].set_index("well_index").label.reindex(range(len(w.wells)))
            for c in cytokines
        ],
        axis=1,
    ).astype(float)
    x = np.moveaxis(w.images, 1, -1).astype(np.float32)
    kw = {"seed": 1, "epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "patience": 2}
    model, history, best = multitask.fit(x, y, None, None, **kw)
    assert len(history["loss"]) == 2 and best == 2 and history["val_loss"] == []
    expected = multitask.probabilities(model, x)[:, 1]
    fitted = servable.Multitask(model, cytokines)
    s = servable.build("multitask_cnn", fitted, plate["recipe"], tmp_path / "art", cytokine="TNF-α")
    assert s.metadata["column"] == 1
    loaded = served(s, tmp_path)
    np.testing.assert_allclose(answers(loaded, plate["raw"]), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(
        ValueError, match=r"multitask_cnn serves one cytokine of \['IL-6', 'TNF-α'\]; got 'IL-10'"
    ):
        servable.build("multitask_cnn", fitted, plate["recipe"], tmp_path / "b", cytokine="IL-10")


def test_a_vit_is_served_with_its_backbone_rebuilt(plate, tmp_path):
    import keras

    from cytoops import augment, features, params
    from cytoops.fitter import Fitter
    from cytoops.params import TrainParams

    w = plate["w"]
    bank = augment.make_bank(w.images, ("none",), dtype=np.float32)  # the stage's bank is float16
    feats = features.compute(bank, params.FeaturesParams(seed=7), vit_layers=1, progress=False)
    fitter = Fitter(TrainParams(epochs=2, batch_size=8))
    head, _, _ = fitter.fit("vit_linear", feats.values[0], plate["y"], None, None, seed=3, epochs=2)
    expected = fitter.probability(head, feats.values[0])
    backbone = {"weights": "random", "seed": 7, "layers": 1, "image_size": SIZE}
    s = servable.build("vit_linear", servable.Vit(head, backbone), plate["recipe"], tmp_path / "art")
    loaded = served(s, tmp_path)
    np.testing.assert_allclose(answers(loaded, plate["raw"]), expected, rtol=1e-4, atol=1e-5)
    refuses_a_1x1_image(loaded)
    # a weights file is referenced by path and SHA-256, checked when the model loads
    weights = tmp_path / "vit.npz"
    weights.write_bytes(b"not the file it was trained with")
    ref = servable.build(
        "vit_linear",
        servable.Vit(head, {**backbone, "weights": str(weights)}),
        plate["recipe"],
        tmp_path / "w",
    )
    assert ref.metadata["backbone"]["sha256"] == servable.sha256(weights)
    mlflow.pyfunc.save_model(path=str(tmp_path / "ref"), **ref.log_kwargs())
    weights.write_bytes(b"another file")
    with pytest.raises(ValueError, match=r"needs its backbone weights file vit.npz \(SHA-256"):
        mlflow.pyfunc.load_model(str(tmp_path / "ref"))
    with pytest.raises(ValueError, match=r"weights file .*missing.npz does not exist"):
        servable.build(
            "vit_linear",
            servable.Vit(head, {**backbone, "weights": str(tmp_path / "missing.npz")}),
            plate["recipe"],
            tmp_path / "x",
        )
    keras.backend.clear_session()


def test_a_family_that_cannot_be_served_says_why(plate, tmp_path):
    assert servable.servable_families() == (
        "wide_cnn", "deep_cnn", "vit_linear", "vit_240k", "vit_500k", "profile", "multitask_cnn", "cnn_all",
        "cell_count",
    )  # fmt: skip
    assert servable.kind_of("cnn_all") == servable.kind_of("wide_cnn") == "cnn"  # served as a CNN
    with pytest.raises(ValueError, match=r"^prevalence cannot be served: it reads no image"):
        servable.build("prevalence", None, plate["recipe"], tmp_path)
    with pytest.raises(ValueError, match=r"^position cannot be served: it reads the well's row and column"):
        servable.build("position", None, plate["recipe"], tmp_path)
    with pytest.raises(ValueError, match=r"unknown family 'lasso': servable families are wide_cnn, deep_cnn"):
        servable.kind_of("lasso")
    with pytest.raises(ValueError, match=r"profile is served from a servable.Profile; got dict"):
        servable.build("profile", {}, plate["recipe"], tmp_path)
    with pytest.raises(ValueError, match=r"wide_cnn is served from its Keras model; got dict"):
        servable.build("wide_cnn", {}, plate["recipe"], tmp_path)
    bad = servable.CellCount(servable.Linear(*[np.zeros(1)] * 4, 0.0), "guess")
    with pytest.raises(ValueError, match=r"cell_count serves one count column by segmentation or peaks"):
        servable.build("cell_count", bad, plate["recipe"], tmp_path)
    blind = serving.Recipe(("actin", "mito", "dna"), ("actin",), SIZE, (0,) * 3, (1,) * 3)
    with pytest.raises(ValueError, match=r"cell_count counts nuclei on a 'nucleus' channel"):
        servable.build("cell_count", servable.CellCount(bad.linear, "peaks"), blind, tmp_path)


def test_the_profile_stage_keeps_each_plates_normalization(plate, tmp_path):
    w = plate["w"]
    profiled = profile.profile_plates(w.images, w.wells, w.channels)
    path = tmp_path / "normalization.json"
    profile.save_normalization(profiled.normalization, path)
    back = profile.load_normalization(path)
    assert set(back) == {"plate-1"}
    np.testing.assert_array_equal(back["plate-1"].scale, profiled.normalization["plate-1"].scale)
    assert json.loads(path.read_text())["plates"]["plate-1"]["method"] == "mad_robustize"
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"normalization.json is not the profile stage's normalization file"):
        profile.load_normalization(path)


@pytest.mark.serve
def test_mlflow_models_serve_answers_for_a_profile_model_and_explains_a_refusal(plate, tmp_path):
    """`mlflow models serve --env-manager local` on a saved profile model: raw uint16 thumbnails posted as
    JSON get P(responder) in [0, 1], the in-process answer; a 2 x 2 image gets a 400 that says why."""
    w = plate["w"]
    profiled = profile.profile_plates(w.images, w.wells, w.channels)
    table = profiled.table
    model = profile.fit(table[profile.feature_columns(table)], plate["y"], seed=0)
    fitted = servable.Profile(model, profile.training_normalization(profiled.normalization))
    s = servable.build("profile", fitted, plate["recipe"], tmp_path / "art")
    mlflow.pyfunc.save_model(path=str(tmp_path / "model"), **s.log_kwargs())
    with mlflow_served(str(tmp_path / "model")) as post:
        status, answer = post(plate["raw"][:4].tolist())
        assert status == "200", answer
        got = [p["p_responder"] for p in answer["predictions"]]
        assert all(0 <= g <= 1 for g in got)
        np.testing.assert_allclose(got, model.predict_proba(table)[:4], rtol=0, atol=1e-6)
        status, answer = post(np.ones((1, 3, 2, 2), int).tolist())
        assert status == "400" and answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "thumbnails are 2x2 px: a served model reads images of at least 16x16" in answer["message"]


def test_a_linear_model_is_plain_numbers_that_answer_as_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from cytoops import linear

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), (rng.random(50) < 0.5).astype(int)
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    model = linear.Linear.from_dict(json.loads(json.dumps(linear.from_pipeline(pipe).as_dict())))
    np.testing.assert_allclose(model.probability(x), pipe.predict_proba(x)[:, 1], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"the linear model reads 3 columns; got an array shaped \(50, 2\)"):
        model.probability(x[:, :2])
