"""batched.BatchedFitter: K units trained at once give each unit its one-at-a-time `train.Fitter.fit` result
(float round-off aside), early stopping included; train.batched runs the grid with the same numbers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from test_train import fast_params, synthetic_inputs

from cytoops import backends, batched, train
from cytoops.params import TrainParams

SHAPES = {"wide_cnn": (16, 16, 3), "deep_cnn": (64, 64, 2), "vit_240k": (768,), "vit_linear": (768,)}


def tiny_units(shape: tuple[int, ...], sizes=(20, 13, 30), seed: int = 0) -> list[batched.UnitData]:
    """Units of other sizes (so other batch counts, and a partial last batch), data and seeds."""
    rng = np.random.default_rng(seed)
    units = []
    for n, unit_seed in zip(sizes, (11, 22, 33), strict=False):
        y = np.arange(n) % 2
        x = rng.random((n, *shape)).astype(np.float32)
        x[y == 1, ..., 0] += 0.5
        y_val = np.array([0, 1, 0, 1, 1, 0, 1])
        x_val = rng.random((7, *shape)).astype(np.float32)
        x_val[y_val == 1, ..., 0] += 0.5
        units.append(
            batched.UnitData(x, y, x_val, y_val, rng.random((5, *shape)).astype(np.float32), unit_seed)
        )
    return units


# learning rates at which the three units stop at different epochs (asserted below)
@pytest.mark.parametrize(
    "architecture, learning_rate, conv",
    [
        ("wide_cnn", 0.003, "unrolled"),
        ("wide_cnn", 0.003, "grouped"),
        ("deep_cnn", 0.003, "unrolled"),
        ("deep_cnn", 0.003, "grouped"),
        ("vit_240k", 0.01, None),
        ("vit_linear", 0.003, None),
    ],
)
def test_each_unit_matches_its_one_at_a_time_fit(architecture, learning_rate, conv):
    # Float tolerance: the batched step computes each unit's sums (matmuls, the grouped convolution) in
    # another order; measured differences are below 2e-5 in the losses and 3e-6 in the probabilities.
    params = TrainParams(epochs=5, batch_size=8, patience=1, learning_rate=learning_rate)
    units = tiny_units(SHAPES[architecture])
    together = batched.BatchedFitter(params, conv).fit(architecture, units)
    fitter = train.Fitter(params)
    epochs_run = []
    for unit, got in zip(units, together, strict=True):
        model, history, best_epoch = fitter.fit(
            architecture, unit.x, unit.y, unit.x_val, unit.y_val, unit.seed
        )
        np.testing.assert_allclose(got.prob, fitter.probability(model, unit.x_test), rtol=0, atol=1e-4)
        assert got.best_epoch == best_epoch
        assert set(got.history) == set(history)
        for key in history:
            np.testing.assert_allclose(got.history[key], history[key], rtol=0, atol=1e-4)
        epochs_run.append(len(history["loss"]))
    # early stopping must have stopped some units before others, or the test says nothing about freezing
    assert len(set(epochs_run)) > 1, f"every unit ran {epochs_run[0]} epochs: pick data that stops some early"


def test_stopped_units_are_dropped_from_the_stack_and_the_others_go_on_unchanged():
    # vit_linear at this rate: two of the three units stop early, so the third moves to a stack of one
    params = TrainParams(epochs=5, batch_size=8, patience=1, learning_rate=0.003)
    units = tiny_units(SHAPES["vit_linear"])
    fitter = batched.BatchedFitter(params)
    fits = fitter.fit("vit_linear", units)
    assert ("vit_linear", SHAPES["vit_linear"], 1) in fitter._slots, "no unit was moved to a smaller stack"
    alone = [batched.BatchedFitter(params).fit("vit_linear", [u])[0] for u in units]
    for together, single in zip(fits, alone, strict=True):
        np.testing.assert_allclose(together.prob, single.prob, rtol=0, atol=1e-5)
        for key, values in single.history.items():
            np.testing.assert_allclose(together.history[key], values, rtol=0, atol=1e-5)
        assert together.best_epoch == single.best_epoch


def test_a_layer_without_a_stacked_version_is_a_value_error():
    import keras

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
    )
    with pytest.raises(ValueError, match="no stacked version of BatchNormalization"):
        batched.layer_plan(model)


def test_batched_needs_float32():
    with pytest.raises(ValueError, match="train.batched trains in float32"):
        TrainParams(batched=True, precision="mixed_bfloat16")


@pytest.fixture(scope="module")
def one_at_a_time():
    inputs = synthetic_inputs(vit=True)
    params = fast_params(architectures=("wide_cnn", "vit_linear"), epochs=3, patience=1)
    return inputs, params, train.cross_validate(inputs, params, progress=False)


@pytest.mark.parametrize("batched_tasks", [1, 3])
def test_the_grid_under_train_batched_gives_the_one_at_a_time_numbers(one_at_a_time, batched_tasks):
    inputs, params, one = one_at_a_time
    batched_params = dataclasses.replace(params, batched=True, batched_tasks=batched_tasks)
    together = train.cross_validate(inputs, batched_params, progress=False)
    assert one.failures.empty and together.failures.empty
    pd.testing.assert_frame_equal(together.predictions, one.predictions, check_exact=False, rtol=0, atol=1e-5)
    pd.testing.assert_frame_equal(together.curves, one.curves, check_exact=False, rtol=0, atol=1e-5)
    pd.testing.assert_frame_equal(together.fits.drop(columns="seconds"), one.fits.drop(columns="seconds"))


def test_batched_jobs_group_tasks_of_one_architecture():
    inputs = synthetic_inputs(cytokines=("IL-6", "TNF"))
    params = fast_params(architectures=("wide_cnn", "vit_linear"), repeats=2, batched=True, batched_tasks=3)
    tasks = train.plan(inputs, params)[0]
    jobs = backends.plan_jobs(tasks, params)
    assert [len(job) for job in jobs] == [3, 1, 3, 1]  # 4 tasks per architecture, 3 at a time
    assert all(len({t.architecture for t in job}) == 1 for job in jobs)
    assert [t for job in jobs for t in job] == sorted(tasks, key=lambda t: t.architecture != "wide_cnn")
    assert backends.plan_jobs(tasks, dataclasses.replace(params, batched=False)) == [[t] for t in tasks]


def test_a_failing_batched_fit_is_recorded_for_each_of_its_units(monkeypatch):
    def failing_fit(self, architecture, units):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(batched.BatchedFitter, "fit", failing_fit)
    inputs = synthetic_inputs(cytokines=("IL-6",))
    result = train.cross_validate(inputs, fast_params(batched=True), progress=False)
    assert result.predictions.empty and len(result.failures) == 2 * len(inputs.strategies)
    assert set(result.failures.error) == {"RuntimeError: out of memory"}
