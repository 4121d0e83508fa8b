"""train: the science rules of cross-validation, each shown on synthetic wells built in memory.

The wells: 10 treatments x 4 replicates (40 wells), 16x16 images of random noise (so every well and every
flipped copy of it is a distinct array) plus a planted signal: IL-6 responders (treatments 0-4) have a
brighter actin channel, TNF responders (odd treatments) a brighter mito channel. `Fitter.fit` and
`Fitter.probability` are wrapped to record exactly what the models are trained, validated and tested on;
every recorded array is traced back to its (view, well) in the view bank.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytoops import augment, cvresult, dataset, features, schedule, tables, taskcache, train
from cytoops.params import TrainParams

CHANNELS = ("actin", "mito", "nucleus")
N_TREATMENTS, REPLICATES = 10, 4


def make_labels(treatment: np.ndarray) -> dict[str, np.ndarray]:
    return {"IL-6": (treatment < N_TREATMENTS // 2).astype(int), "TNF": (treatment % 2).astype(int)}


def synthetic_inputs(
    *,
    size: int = 16,
    strategies: tuple[str, ...] = ("none", "hflip"),
    cytokines: tuple[str, ...] = ("IL-6", "TNF"),
    vit: bool = False,
    extra_labels: pd.DataFrame | None = None,
    seed: int = 0,
) -> dataset.Inputs:
    rng = np.random.default_rng(seed)
    n = N_TREATMENTS * REPLICATES
    treatment = np.repeat(np.arange(N_TREATMENTS), REPLICATES)
    wells = pd.DataFrame(
        {
            "plate": "plate-1",
            "well": [f"{'ABCDEFGH'[i // 12]}{i % 12 + 1:02d}" for i in range(n)],
            "treatment": [f"t{t}" for t in treatment],
        }
    )
    wells["group"] = "treatment:" + wells.treatment
    truth = make_labels(treatment)
    images = rng.random((n, len(CHANNELS), size, size)).astype(np.float32) * 0.3
    images[truth["IL-6"] == 1, 0] += 0.6
    images[truth["TNF"] == 1, 1] += 0.6
    rows = [
        pd.DataFrame(
            {
                "cytokine": name,
                "slug": name.lower(),
                "well_index": np.arange(n),
                "value": truth[name] * 2.0 - 1.0,
                "label": truth[name],
                "balanced": True,
            }
        )
        for name in cytokines
    ]
    labels = pd.concat([*rows, *([extra_labels] if extra_labels is not None else [])], ignore_index=True)
    bank = augment.make_bank(images, strategies)
    vit_features = None
    if vit:
        values = rng.normal(size=(len(bank.views), n, 768)).astype(np.float32)
        values[:, truth["IL-6"] == 1, :8] += 2.0
        vit_features = features.Features(bank.views, values, pretrained=False, weights="random")
    kept = tuple(dict.fromkeys([*cytokines, *(extra_labels.cytokine if extra_labels is not None else [])]))
    return dataset.Inputs(
        wells=wells,
        labels=labels,
        kept=kept,
        bank=bank,
        channels=CHANNELS,
        vit=vit_features,
        strategies=strategies,
    )


def fast_params(**overrides) -> TrainParams:
    # workers=1: in this process, where Fitter can be instrumented (and no worker start-up to pay)
    values = dict(architectures=("wide_cnn",), epochs=2, batch_size=16, folds=2, seed=42, workers=1)
    return TrainParams(**{**values, **overrides})


class Recorder:
    """Wraps Fitter.fit and Fitter.probability to keep what each unit was given, in call order."""

    def __init__(self, monkeypatch):
        self.calls: list[dict] = []
        fit = train.Fitter.fit
        signature = inspect.signature(fit)
        probability = train.Fitter.probability
        static = isinstance(inspect.getattr_static(train.Fitter, "probability"), staticmethod)
        recorder = self

        def recording_fit(self, *args, **kwargs):
            a = signature.bind(self, *args, **kwargs).arguments
            recorder.calls.append(
                {
                    "architecture": a["architecture"],
                    "seed": a["seed"],
                    "class_weight": a.get("class_weight", False),
                    **{k: np.array(a[k]) for k in ("x", "y", "x_val", "y_val")},
                }
            )
            return fit(self, *args, **kwargs)

        def recording_probability(self, model, x):
            out = probability(model, x) if static else probability(self, model, x)
            recorder.calls[-1]["x_test"] = np.array(x)
            recorder.calls[-1]["prob"] = np.array(out)
            return out

        monkeypatch.setattr(train.Fitter, "fit", recording_fit)
        monkeypatch.setattr(train.Fitter, "probability", recording_probability)


def index_of(bank: np.ndarray, views: tuple[str, ...]) -> dict[bytes, tuple[str, int]]:
    """Every array of a (views, wells, ...) bank -> (view, well); the test data makes them all distinct."""
    index = {
        np.ascontiguousarray(bank[v, i], dtype=np.float32).tobytes(): (views[v], i)
        for v in range(bank.shape[0])
        for i in range(bank.shape[1])
    }
    assert len(index) == bank.shape[0] * bank.shape[1], "test data: arrays must be distinct"
    return index


def trace(x: np.ndarray, index: dict[bytes, tuple[str, int]]) -> list[tuple[str, int]]:
    return [index[np.ascontiguousarray(row, dtype=np.float32).tobytes()] for row in x]


def units_of(result: cvresult.Result, base_seed: int) -> dict[int, cvresult.Unit]:
    units = [cvresult.Unit(*key) for key in result.fits[tables.UNIT].itertuples(index=False)]
    by_seed = {u.seed(base_seed): u for u in units}
    assert len(by_seed) == len(units)
    return by_seed


def wells_tested_in(result: cvresult.Result, unit: cvresult.Unit) -> np.ndarray:
    p = result.predictions
    rows = p[
        (p.architecture == unit.architecture)
        & (p.augmentation == unit.augmentation)
        & (p.cytokine == unit.cytokine)
        & (p.repeat == unit.repeat)
        & (p.fold == unit.fold)
    ]
    return rows.well_index.to_numpy()


@pytest.fixture(scope="module")
def cnn_run():
    """One instrumented cross-validation of wide_cnn under none and hflip, shared by the science tests."""
    inputs = synthetic_inputs()
    p = fast_params()
    with pytest.MonkeyPatch.context() as mp:
        recorder = Recorder(mp)
        result = train.cross_validate(inputs, p, progress=False)
    bank = dataset.cnn_view_bank(inputs, p.cnn_channels)
    return inputs, p, result, recorder.calls, index_of(bank, inputs.bank.views)


# ---- folds ------------------------------------------------------------------------------------------------


def fold_data():
    treatment = np.repeat(np.arange(N_TREATMENTS), REPLICATES)
    groups = np.array([f"treatment:t{t}" for t in treatment])
    return make_labels(treatment)["TNF"], groups


def test_plate_folds_cover_every_well_once_and_keep_treatments_together():
    y, groups = fold_data()
    folds = train.plate_folds(y[:, None].astype(float), groups, 2, seed=42)
    assert folds.shape == y.shape
    assert set(folds) == {0, 1}  # every well has a fold, one fold per well by construction
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1, g
    for k in (0, 1):
        assert set(y[folds == k]) == {0, 1}, "each fold holds both classes"
        assert abs((folds == k).sum() - len(y) / 2) <= REPLICATES


def test_plate_folds_with_more_folds_are_a_partition():
    y, groups = fold_data()
    folds = train.plate_folds(y[:, None].astype(float), groups, 5, seed=0)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1


def test_split_validation_is_grouped_stratified_and_disjoint():
    y, groups = fold_data()
    for seed in range(5):
        val = train.split_validation(y, groups, 0.2, seed)
        assert val.dtype == bool and val.shape == y.shape
        assert 0 < val.sum() < len(y)
        assert not set(groups[val]) & set(groups[~val]), "a treatment on both sides"
        assert set(y[~val]) == {0, 1}
    val = train.split_validation(y, groups, 0.2, 3)
    np.testing.assert_array_equal(val, train.split_validation(y, groups, 0.2, 3))
    assert val.sum() <= len(y) / 2


# ---- cross_validate: the science rules --------------------------------------------------------------------


def test_no_well_and_no_copy_of_a_well_is_both_trained_on_and_tested(cnn_run):
    inputs, p, result, calls, index = cnn_run
    units = units_of(result, p.seed)
    assert len(calls) == len(result.fits) == 2 * 2 * 2  # cytokines x folds x strategies
    for call in calls:
        unit = units[call["seed"]]
        test = set(wells_tested_in(result, unit))
        fit_sources = trace(call["x"], index)  # KeyError on any array that is not a view of a well
        fit_wells = {w for _, w in fit_sources}
        val_wells = {w for _, w in trace(call["x_val"], index)}
        assert test, unit
        assert not fit_wells & test, f"{unit}: test wells in the training set"
        assert not val_wells & test, f"{unit}: test wells in the validation set"
        # the training fold is used whole: fit + validation = every balanced well outside the test fold
        assert fit_wells | val_wells == set(range(len(inputs.wells))) - test
        # each copy carries its own well's label
        truth = make_labels(np.repeat(np.arange(N_TREATMENTS), REPLICATES))[unit.cytokine]
        np.testing.assert_array_equal(call["y"], truth[[w for _, w in fit_sources]])


def test_augmentation_copies_follow_the_strategy(cnn_run):
    _, p, result, calls, index = cnn_run
    units = units_of(result, p.seed)
    for call in calls:
        unit = units[call["seed"]]
        sources = trace(call["x"], index)
        views = {v for v, _ in sources}
        assert views == set(augment.STRATEGY_VIEWS[unit.augmentation]), unit
        wells = [w for _, w in sources]
        per_well = pd.Series(wells).value_counts()
        assert (per_well == len(augment.STRATEGY_VIEWS[unit.augmentation])).all()


def test_augmentation_never_touches_the_test_fold(cnn_run):
    inputs, p, result, calls, index = cnn_run
    bank = dataset.cnn_view_bank(inputs, p.cnn_channels)
    identity = inputs.bank.index("identity")
    units = units_of(result, p.seed)
    for call in calls:
        unit = units[call["seed"]]
        test = wells_tested_in(result, unit)
        np.testing.assert_array_equal(call["x_test"], bank[identity, test])
        assert {v for v, _ in trace(call["x_test"], index)} == {"identity"}


def test_early_stopping_sees_only_identity_views_of_training_fold_wells(cnn_run):
    inputs, p, result, calls, index = cnn_run
    units = units_of(result, p.seed)
    groups = inputs.wells.group.to_numpy()
    for call in calls:
        unit = units[call["seed"]]
        test = set(wells_tested_in(result, unit))
        val = trace(call["x_val"], index)
        val_wells = {w for _, w in val}
        fit_wells = {w for _, w in trace(call["x"], index)}
        assert val_wells, unit
        assert {v for v, _ in val} == {"identity"}, "validation wells are never augmented"
        assert not val_wells & test, "early stopping must not see the test fold"
        assert not val_wells & fit_wells
        assert not set(groups[list(val_wells)]) & set(groups[list(fit_wells)]), "validation split not grouped"
        assert not set(groups[list(val_wells | fit_wells)]) & set(groups[list(test)]), "the folds are grouped"
        assert len(call["y_val"]) == len(val)


def test_predictions_have_one_row_per_unit_and_test_well(cnn_run):
    inputs, _, result, _, _ = cnn_run
    pred = result.predictions
    assert result.failures.empty
    assert not pred.duplicated([*tables.UNIT, "well_index"]).any()
    assert len(pred) == result.fits.n_test.sum() == 2 * 2 * len(inputs.wells)
    assert pred.prob.between(0, 1).all() and pred.prob.notna().all()
    for _, g in pred.groupby(["architecture", "augmentation", "cytokine", "repeat"]):
        assert sorted(g.well_index) == list(range(len(inputs.wells))), "every well tested exactly once"
    truth = inputs.labels.set_index(["cytokine", "well_index"]).label
    np.testing.assert_array_equal(
        pred.label.to_numpy(), truth.loc[list(zip(pred.cytokine, pred.well_index, strict=True))]
    )
    assert list(pred.well) == list(inputs.wells.well.to_numpy()[pred.well_index])


def test_predictions_are_what_the_model_said_for_the_test_wells(cnn_run):
    _, p, result, calls, _ = cnn_run
    units = units_of(result, p.seed)
    p_ = result.predictions
    for call in calls:
        u = units[call["seed"]]
        rows = p_[(p_.augmentation == u.augmentation) & (p_.cytokine == u.cytokine) & (p_.fold == u.fold)]
        np.testing.assert_allclose(rows.prob.to_numpy(), call["prob"])


def test_every_model_of_a_cytokine_uses_the_same_folds(cnn_run):
    _, _, result, _, _ = cnn_run
    folds = result.folds.set_index(["cytokine", "repeat", "well_index"]).fold
    pred = result.predictions
    np.testing.assert_array_equal(
        pred.fold.to_numpy(),
        folds.loc[list(zip(pred.cytokine, pred.repeat, pred.well_index, strict=True))].to_numpy(),
    )
    fits = result.fits
    assert (fits.n_train + fits.n_val + fits.n_test == 40).all()
    assert (fits.n_train_images == fits.n_train * fits.augmentation.map({"none": 1, "hflip": 2})).all()


def test_a_failing_unit_is_recorded_and_the_other_cytokines_still_predict(monkeypatch):
    inputs = synthetic_inputs()
    p = fast_params(epochs=1)
    doomed = {
        cvresult.Unit("wide_cnn", s, "TNF", 0, f).seed(p.seed)
        for s in inputs.strategies
        for f in range(p.folds)
    }
    fit = train.Fitter.fit

    def failing_fit(self, architecture, x, y, x_val, y_val, seed):
        if seed in doomed:
            raise RuntimeError("boom")
        return fit(self, architecture, x, y, x_val, y_val, seed)

    monkeypatch.setattr(train.Fitter, "fit", failing_fit)
    result = train.cross_validate(inputs, p, progress=False)
    assert len(result.failures) == 4
    assert set(result.failures.cytokine) == {"TNF"}
    assert (result.failures.error == "RuntimeError: boom").all()
    assert set(result.predictions.cytokine) == {"IL-6"}
    assert len(result.predictions) == 2 * len(inputs.wells)
    assert set(result.fits.cytokine) == {"IL-6"}


def rare_labels(groups: tuple[str, ...], name: str = "RARE") -> pd.DataFrame:
    """A cytokine whose balanced wells all lie in the given treatments (first responds, the rest do not)."""
    treatment = np.repeat(np.arange(N_TREATMENTS), REPLICATES)
    in_groups = np.isin([f"t{t}" for t in treatment], groups)
    label = (treatment == int(groups[0][1:])).astype(int)
    return pd.DataFrame(
        {
            "cytokine": name,
            "slug": name.lower(),
            "well_index": np.arange(len(treatment)),
            "value": label * 2.0 - 1.0,
            "label": label,
            "balanced": in_groups,
        }
    )


def test_a_cytokine_with_too_few_treatments_for_the_folds_is_recorded_and_the_others_go_on():
    inputs = synthetic_inputs(cytokines=("IL-6",), strategies=("none",), extra_labels=rare_labels(("t0",)))
    result = train.cross_validate(inputs, fast_params(epochs=1), progress=False)
    failed = result.failures
    assert len(failed) == 1
    assert failed.iloc[0][["architecture", "cytokine", "fold"]].tolist() == ["*", "RARE", -1]
    assert "responders fall in too few treatment groups" in failed.iloc[0].error
    assert set(result.predictions.cytokine) == {"IL-6"}


def test_a_training_fold_too_small_to_carve_a_validation_split_is_a_recorded_failure():
    # RARE's balanced wells lie in two treatments: each training fold holds one treatment, which cannot be
    # split into grouped training and validation parts
    inputs = synthetic_inputs(
        cytokines=("IL-6",), strategies=("none",), extra_labels=rare_labels(("t0", "t1"))
    )
    result = train.cross_validate(inputs, fast_params(epochs=1), progress=False)
    assert set(result.failures.cytokine) == {"RARE"}
    assert set(result.predictions.cytokine) == {"IL-6"}


def test_the_same_seed_gives_identical_predictions():
    inputs = synthetic_inputs(cytokines=("IL-6",))
    first = train.cross_validate(inputs, fast_params(), progress=False)
    again = train.cross_validate(inputs, fast_params(), progress=False)
    pd.testing.assert_frame_equal(first.predictions, again.predictions)
    pd.testing.assert_frame_equal(first.folds, again.folds)
    other = train.cross_validate(inputs, fast_params(seed=7), progress=False)
    assert not np.allclose(
        first.predictions.sort_values(["augmentation", "well_index"]).prob,
        other.predictions.sort_values(["augmentation", "well_index"]).prob,
    )


def test_a_units_result_does_not_depend_on_what_else_runs():
    # the plate's folds depend on every kept cytokine (they are shared); given them, a unit's numbers do not
    # depend on the other architectures that run beside it
    inputs = with_profile(synthetic_inputs())
    both = train.cross_validate(inputs, fast_params(architectures=("wide_cnn", "profile")), progress=False)
    alone = train.cross_validate(inputs, fast_params(), progress=False)
    pd.testing.assert_frame_equal(
        both.predictions[both.predictions.architecture == "wide_cnn"].reset_index(drop=True),
        alone.predictions,
    )


def test_worker_processes_give_the_same_numbers_as_one_process():
    # the default (train.workers=0) runs tasks in spawned processes; the units must not notice
    inputs = synthetic_inputs(strategies=("none",))
    one = train.cross_validate(inputs, fast_params(epochs=1), progress=False)
    two = train.cross_validate(inputs, fast_params(epochs=1, workers=2), progress=False)
    assert two.failures.empty and len(two.predictions) == len(one.predictions) == 2 * 40
    # workers run TensorFlow on one thread each: allow float round-off, nothing more
    pd.testing.assert_frame_equal(one.predictions, two.predictions, check_exact=False, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(one.fits.drop(columns="seconds"), two.fits.drop(columns="seconds"))


def grid_units() -> list[cvresult.Unit]:
    return [
        cvresult.Unit(a, s, c, r, f)
        for a in ("wide_cnn", "vit_linear")
        for s in ("none", "hflip")
        for c in ("IL-6", "TNF-α")
        for r in (0, 1)
        for f in (0, 1)
    ]


def test_unit_seeds_differ_between_units_and_with_the_base():
    seeds = [u.seed(42) for u in grid_units()]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 - 1 for s in seeds)
    u = grid_units()[0]
    assert u.seed(42) != u.seed(43)


def test_unit_seeds_are_stable_across_calls_and_processes():
    unit = cvresult.Unit("wide_cnn", "hflip", "TNF-α", 0, 1)
    assert unit.seed(42) == unit.seed(42) == cvresult.Unit("wide_cnn", "hflip", "TNF-α", 0, 1).seed(42)
    code = "from cytoops.train import Unit; print(Unit('wide_cnn', 'hflip', 'TNF-α', 0, 1).seed(42))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout.strip()) == unit.seed(42)


# ---- the ViT head path, on precomputed (fake) features ----------------------------------------------------


def test_vit_heads_train_on_cached_features_with_the_same_rules(monkeypatch):
    inputs = synthetic_inputs(cytokines=("IL-6",), vit=True)
    p = fast_params(architectures=("wide_cnn", "vit_linear"))
    recorder = Recorder(monkeypatch)
    result = train.cross_validate(inputs, p, progress=False)
    assert result.failures.empty
    assert set(result.predictions.architecture) == {"wide_cnn", "vit_linear"}
    units = units_of(result, p.seed)
    index = index_of(inputs.vit.values, inputs.vit.views)
    vit_calls = [c for c in recorder.calls if c["architecture"] == "vit_linear"]
    assert len(vit_calls) == 4
    for call in vit_calls:
        unit = units[call["seed"]]
        test = wells_tested_in(result, unit)
        assert call["x"].shape[1:] == (768,)
        assert not {w for _, w in trace(call["x"], index)} & set(test)
        assert {v for v, _ in trace(call["x_val"], index)} == {"identity"}
        np.testing.assert_array_equal(call["x_test"], inputs.vit.values[inputs.bank.index("identity"), test])
    pred = result.predictions
    assert pred.prob.between(0, 1).all()
    # CNN and ViT head are compared on the same folds
    by_model = pred.pivot_table(index="well_index", columns=["architecture", "augmentation"], values="fold")
    assert (by_model.nunique(axis=1) == 1).all()


def test_a_vit_architecture_without_features_is_a_value_error():
    inputs = synthetic_inputs(cytokines=("IL-6",), strategies=("none",))
    with pytest.raises(ValueError, match="vit_linear needs ViT features"):
        dataset.model_input(inputs, "vit_linear")


def test_vit_features_of_other_views_are_a_value_error():
    inputs = synthetic_inputs(cytokines=("IL-6",), strategies=("none",), vit=True)
    stale = features.Features(("identity", "hflip"), np.zeros((2, 40, 768), np.float32), False, "random")
    with pytest.raises(ValueError, match="other views than the view bank"):
        dataset.model_input(dataclasses.replace(inputs, vit=stale), "vit_linear")


def test_model_input_is_the_features_for_vit_and_the_images_for_cnns():
    inputs = synthetic_inputs(cytokines=("IL-6",), vit=True)
    assert dataset.model_input(inputs, "vit_240k") is inputs.vit.values
    assert dataset.model_input(inputs, "wide_cnn") is inputs.bank.images


# ---- inputs -----------------------------------------------------------------------------------------------


def test_cnn_view_bank_picks_the_channels_channels_last():
    inputs = synthetic_inputs(strategies=("none",))
    bank = dataset.cnn_view_bank(inputs, ("nucleus", "actin"))
    assert bank.shape == (1, 40, 16, 16, 2) and bank.dtype == np.float32
    np.testing.assert_array_equal(bank[0, 3, :, :, 0], inputs.bank.images[0, 3, 2].astype(np.float32))
    np.testing.assert_array_equal(bank[0, 3, :, :, 1], inputs.bank.images[0, 3, 0].astype(np.float32))


def test_cnn_view_bank_with_an_unknown_channel_is_a_value_error():
    with pytest.raises(ValueError, match=r"train.cnn_channels names \['dapi'\]"):
        dataset.cnn_view_bank(synthetic_inputs(strategies=("none",)), ("dapi",))


def test_one_channel_cnn_trains_on_that_channel(monkeypatch):
    recorder = Recorder(monkeypatch)
    inputs = synthetic_inputs(cytokines=("IL-6",), strategies=("none",))
    result = train.cross_validate(inputs, fast_params(cnn_channels=("nucleus",), epochs=1), progress=False)
    assert result.failures.empty
    assert all(c["x"].shape[1:] == (16, 16, 1) for c in recorder.calls)


def test_save_and_load_round_trip(cnn_run, tmp_path):
    _, _, result, _, _ = cnn_run
    cvresult.save(result, tmp_path / "train")
    back = cvresult.load(tmp_path / "train")
    pd.testing.assert_frame_equal(back.predictions, result.predictions, check_dtype=False)
    pd.testing.assert_frame_equal(back.fits, result.fits, check_dtype=False)
    assert len(back.curves) == len(result.curves) and len(back.folds) == len(result.folds)


def test_an_interrupted_run_resumes_from_its_task_cache(tmp_path, monkeypatch):
    inputs, params = synthetic_inputs(), fast_params()
    first = train.cross_validate(inputs, params, progress=False, cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json"))) == len(inputs.kept) * len(params.architectures)

    def must_not_train(*args, **kwargs):
        raise AssertionError("a cached task was trained again")

    monkeypatch.setattr(train, "run_task", must_not_train)
    again = train.cross_validate(inputs, params, progress=False, cache=tmp_path / "cache")
    pd.testing.assert_frame_equal(first.predictions, again.predictions)
    pd.testing.assert_frame_equal(first.curves, again.curves)


def test_a_changed_param_is_not_served_from_the_task_cache(tmp_path, monkeypatch):
    inputs = synthetic_inputs()
    train.cross_validate(inputs, fast_params(), progress=False, cache=tmp_path / "cache")
    calls = []
    real = train.run_task
    monkeypatch.setattr(train, "run_task", lambda *a, **k: calls.append(1) or real(*a, **k))
    train.cross_validate(inputs, fast_params(learning_rate=0.01), progress=False, cache=tmp_path / "cache")
    assert calls, "a run with another learning rate must train, not reuse the cache"


class _Planted:
    """A pickle that, when loaded, touches a marker file (stands in for any command)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_pickle_in_a_copied_cache_executes_nothing(tmp_path, monkeypatch):
    inputs, params = synthetic_inputs(cytokines=("IL-6",)), fast_params(epochs=1)
    cache = tmp_path / "cache"
    first = train.cross_validate(inputs, params, progress=False, cache=cache)
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Planted(marker))
    store = taskcache.TaskCache(cache, inputs, params)
    tasks, _, _ = train.plan(inputs, params)
    for task in tasks:  # a hostile copy: every cache file, and its .pkl twin, is a pickle
        store._path(task).write_bytes(payload)
        store._path(task).with_suffix(".pkl").write_bytes(payload)
    again = train.cross_validate(inputs, params, progress=False, cache=cache)
    assert not marker.exists(), "loading the cache ran code"
    pd.testing.assert_frame_equal(first.predictions, again.predictions)  # retrained, same numbers
    assert all(json.loads(store._path(task).read_text()) for task in tasks)  # rewritten as data


def test_the_task_cache_round_trips_dtypes_exactly():
    part = {
        "predictions": [pd.DataFrame({"fold": np.array([0, 1]), "prob": np.array([0.1, 1 / 3], np.float32)})],
        "curves": [pd.DataFrame({"loss": [np.nan, np.inf], "name": ["NA", "001"]})],
        "fits": [{"fold": np.int64(1), "seconds": 0.5}],
        "failures": [],
    }
    back = taskcache.TaskCache._decode(taskcache.TaskCache._encode(part))
    pd.testing.assert_frame_equal(back["predictions"][0], part["predictions"][0])
    pd.testing.assert_frame_equal(back["curves"][0], part["curves"][0])
    assert back["fits"] == [{"fold": 1, "seconds": 0.5}] and back["failures"] == []


# ---- the plate's folds, and our models -------------------------------------------------------------------


def test_plate_folds_keep_groups_whole_and_spread_each_cytokines_responders():
    # 12 compounds x 4 wells; cytokine A responds to compounds 0 and 1 only, B to 2, 3, 4 and 5
    groups = np.repeat([f"c{k}" for k in range(12)], 4)
    compound = np.repeat(np.arange(12), 4)
    y = np.stack([np.isin(compound, [0, 1]), np.isin(compound, [2, 3, 4, 5])], axis=1).astype(float)
    y[5, 1] = np.nan  # a missing readout
    for seed in range(5):
        folds = train.plate_folds(y, groups, 2, seed)
        assert all(len(set(folds[groups == g])) == 1 for g in set(groups)), "a group is never split"
        assert sorted(folds[compound == 0].tolist() + folds[compound == 1].tolist()) == [0] * 4 + [1] * 4
        per_fold_b = [int(np.nansum(y[folds == f, 1])) for f in (0, 1)]
        assert per_fold_b == [8, 8]
    np.testing.assert_array_equal(train.plate_folds(y, groups, 2, 3), train.plate_folds(y, groups, 2, 3))
    assert len({tuple(train.plate_folds(y, groups, 2, s)) for s in range(10)}) > 1


def test_plate_folds_with_fewer_groups_than_folds_is_a_value_error():
    with pytest.raises(ValueError, match="only 2 treatment groups: cannot make 3 grouped folds"):
        train.plate_folds(np.zeros((4, 1)), np.array(["a", "a", "b", "b"]), 3, seed=0)


def test_fold_problem_names_the_fold_and_why():
    folds = np.array([0, 0, 1, 1])
    assert train.fold_problem(np.array([1, 0, 1, 0]), np.ones(4, bool), folds, 2) is None
    assert "fold 0's test wells hold no responders" in train.fold_problem(
        np.array([0, 0, 1, 0]), np.ones(4, bool), folds, 2
    )


def with_profile(inputs: dataset.Inputs) -> dataset.Inputs:
    """A profile table for the synthetic wells: channel means (IL-6 reads actin, TNF mito) and a nuisance."""
    img = inputs.bank.images[inputs.bank.index("identity")].astype(float)
    table = pd.DataFrame(
        {"plate": inputs.wells.plate, "well": inputs.wells.well, "role": "sample",
         "cell_count": 10.0, "actin": img[:, 0].mean(axis=(1, 2)), "mito": img[:, 1].mean(axis=(1, 2)),
         "nuisance": np.random.default_rng(0).normal(size=len(img))}
    )  # fmt: skip
    return dataclasses.replace(inputs, profile=table)


def test_the_profile_model_trains_on_training_fold_wells_only_and_tests_every_labelled_well(monkeypatch):
    from cytoops import profile

    seen = []
    fit_predict = profile.fit_predict

    def recording(x_train, y_train, x_test, seed):
        seen.append((set(x_train.index), set(x_test.index)))
        return fit_predict(x_train, y_train, x_test, seed)

    monkeypatch.setattr(profile, "fit_predict", recording)
    inputs = with_profile(synthetic_inputs())
    result = train.cross_validate(inputs, fast_params(architectures=("profile",)), progress=False)
    assert result.failures.empty and len(seen) == 2 * 2  # cytokines x folds
    folds = result.folds.drop_duplicates("well_index").set_index("well_index").fold
    for train_wells, test_wells in seen:
        assert not train_wells & test_wells
        assert len({folds[w] for w in train_wells}) == 1 and len({folds[w] for w in test_wells}) == 1
        assert train_wells | test_wells == set(range(len(inputs.wells)))
    pred = result.predictions
    assert set(pred.augmentation) == {"none"} and len(pred) == 2 * len(inputs.wells)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(pred.label, pred.prob) > 0.9  # the planted channel means are read


def test_the_multitask_model_sees_no_test_fold_well_and_scores_every_cytokine(monkeypatch):
    from cytoops import multitask

    calls = []
    fit_predict = multitask.fit_predict

    def recording(x_fit, y_fit, x_val, y_val, x_test, **kw):
        calls.append({"x_fit": x_fit, "x_val": x_val, "x_test": x_test, "y_fit": y_fit})
        return fit_predict(x_fit, y_fit, x_val, y_val, x_test, **kw)

    monkeypatch.setattr(multitask, "fit_predict", recording)
    inputs = synthetic_inputs()
    p = fast_params(architectures=("multitask_cnn",))
    result = train.cross_validate(inputs, p, progress=False)
    index = index_of(dataset.cnn_view_bank(inputs, p.cnn_channels), inputs.bank.views)
    assert result.failures.empty and len(calls) == p.folds
    for call in calls:
        test = {w for _, w in trace(call["x_test"], index)}
        fit = {w for _, w in trace(call["x_fit"], index)}
        val = {w for _, w in trace(call["x_val"], index)}
        assert test and fit and val and not (fit | val) & test and not fit & val
        assert {v for v, _ in trace(call["x_fit"], index)} == {"identity", "hflip"}  # the richest given
        assert call["y_fit"].shape[1] == 2  # one output per kept cytokine
    pred = result.predictions
    assert set(pred.cytokine) == {"IL-6", "TNF"} and set(pred.augmentation) == {"hflip"}
    assert len(pred) == 2 * len(inputs.wells)


def test_multitask_loss_is_masked_and_class_weighted():
    import tensorflow as tf

    from cytoops import multitask

    y = np.array([[1, np.nan], [0, 0], [0, 1], [0, np.nan]], dtype=np.float32)
    w_pos, w_neg = multitask.class_weights(y)
    np.testing.assert_allclose(w_pos, [4 / 2, 2 / 2])  # column 0: 1 responder of 4; column 1: 1 of 2
    np.testing.assert_allclose(w_neg, [4 / 6, 2 / 2])
    logits = tf.constant(np.random.default_rng(0).normal(size=(4, 2)), tf.float32)
    base = float(multitask.masked_loss(logits, tf.constant(y), w_pos, w_neg))
    changed = logits.numpy()
    changed[0, 1] = changed[3, 1] = 50.0  # the unlabelled cells' logits do not matter
    assert float(multitask.masked_loss(tf.constant(changed), tf.constant(y), w_pos, w_neg)) == pytest.approx(
        base
    )


def test_the_progress_bar_advances_by_expected_cost_and_counts_fits(monkeypatch, capsys):
    """Tasks run round-robin over architectures, costliest first within each; the bar moves by each task's
    expected cost (architecture x wells), so its rate, and the time left it shows, stay steady; the postfix
    still counts fits."""
    inputs, params = synthetic_inputs(), fast_params(architectures=("wide_cnn", "deep_cnn"))
    tasks, _, _ = train.plan(inputs, params)
    deep = next(t for t in tasks if t.architecture == "deep_cnn")
    wide = next(t for t in tasks if t.architecture == "wide_cnn" and t.cytokine == deep.cytokine)
    assert schedule.task_cost(deep) == 2 * schedule.task_cost(wide)
    head = dataclasses.replace(wide, architecture="vit_linear")
    assert schedule.task_cost(head) < schedule.task_cost(wide)
    fewer = dataclasses.replace(wide, wells=wide.wells[: len(wide.wells) // 2])
    assert schedule.task_cost(fewer) < schedule.task_cost(wide)

    ran = []
    empty = {"predictions": [], "curves": [], "fits": [], "failures": []}
    monkeypatch.setattr(train, "run_task", lambda task, *a, **k: ran.append(task) or empty)
    train.cross_validate(inputs, dataclasses.replace(params, workers=1), progress=True)
    assert len(ran) == len(tasks)
    assert {t.architecture for t in ran[:2]} == {"wide_cnn", "deep_cnn"}  # the same mix all along
    assert [t.architecture for t in ran[::2]] == [ran[0].architecture] * (len(ran) // 2)
    for arch in ("wide_cnn", "deep_cnn"):  # within an architecture, the costliest (most wells) first
        costs = [schedule.task_cost(t) for t in ran if t.architecture == arch]
        assert costs == sorted(costs, reverse=True)
    err = capsys.readouterr().err
    n_fits = len(tasks) * params.folds * len(inputs.strategies)
    assert f"{n_fits}/{n_fits} fits" in err and "100%" in err


def test_a_class_too_rare_to_stratify_is_handled_without_sklearn_warning(recwarn):
    y = np.array([1] + [0] * 9)  # one responder well: no 5-part split can hold it in every part
    groups = np.arange(10)
    assert train.too_rare_to_stratify(y, groups, 0.2)
    assert not train.too_rare_to_stratify(np.array([1, 0] * 5), groups, 0.2)
    val = train.split_validation(y, groups, 0.2, seed=0)
    assert val.sum() == 2 and not [w for w in recwarn if "least populated class" in str(w.message)]


def test_model_fits_counts_the_multitask_model_once_per_fold():
    """The log's fit count is the progress bar's: the multitask CNN's rows (one per cytokine) are one fit."""
    rows = [("wide_cnn", "none", c, 0, f) for c in ("IL-6", "CCL2") for f in (0, 1)]
    rows += [("multitask_cnn", "flips", c, 0, f) for c in ("IL-6", "CCL2", "IL-8") for f in (0, 1)]
    fits = pd.DataFrame(rows, columns=["architecture", "augmentation", "cytokine", "repeat", "fold"])
    assert train.model_fits(fits) == 4 + 2
