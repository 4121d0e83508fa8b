"""cnn_all: the Wider CNN trained per cytokine on every labelled training-fold well, class-weighted, under the
richest augmentation, scored on the same folds and test wells as every model, refit for the registry.

On test_train's synthetic wells, with a cytokine whose study-balanced subset is smaller than its labelled
wells (the study keeps ~28 of ~370 on a plate): what each fit was given is recorded and traced to its wells.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from test_train import (
    CHANNELS,
    N_TREATMENTS,
    REPLICATES,
    Recorder,
    fast_params,
    index_of,
    synthetic_inputs,
    trace,
)

from cytoops import dataset, models, params, servable, train
from cytoops.verdict import call

TREATMENT = np.repeat(np.arange(N_TREATMENTS), REPLICATES)
REPLICATE = np.tile(np.arange(REPLICATES), N_TREATMENTS)


def uneven_inputs() -> dataset.Inputs:
    """IL-6 (responders: treatments 0-2, 12 of 40 wells) with a study-balanced subset of 26 wells: its
    responders and two replicates of every other treatment."""
    inputs = synthetic_inputs(cytokines=("IL-6",), strategies=("none", "hflip"))
    labels = inputs.labels.copy()
    labels["label"] = (TREATMENT[labels.well_index] < 3).astype(int)
    labels["balanced"] = (labels.label == 1) | (REPLICATE[labels.well_index] < 2)
    images = inputs.bank.images.copy()  # the planted IL-6 signal follows the new labels
    images[:, labels.label.to_numpy() == 1, 0] += 0.3
    bank = dataclasses.replace(inputs.bank, images=images)
    return dataclasses.replace(inputs, labels=labels, bank=bank)


@pytest.fixture(scope="module")
def both_run():
    """wide_cnn and cnn_all cross-validated on the same folds, every fit recorded."""
    inputs = uneven_inputs()
    p = fast_params(architectures=("wide_cnn", "cnn_all"))
    with pytest.MonkeyPatch.context() as mp:
        recorder = Recorder(mp)
        result = train.cross_validate(inputs, p, progress=False)
    index = index_of(dataset.cnn_view_bank(inputs, p.cnn_channels), inputs.bank.views)
    return inputs, p, result, recorder.calls, index


def test_cnn_all_fits_on_every_labelled_training_fold_well_and_never_a_test_well(both_run):
    inputs, p, result, calls, index = both_run
    assert result.failures.empty
    folds = result.folds.set_index("well_index").fold
    balanced = set(inputs.labels.well_index[inputs.labels.balanced])
    seen = {"wide_cnn": [], "cnn_all": []}
    for call_ in calls:
        fit = {w for _, w in trace(call_["x"], index)}
        val = {w for _, w in trace(call_["x_val"], index)}
        test = {w for _, w in trace(call_["x_test"], index)}
        (fold,) = {folds[w] for w in test}
        training_fold = set(folds.index[folds != fold])
        assert not (fit | val) & test and not fit & val and test == set(folds.index[folds == fold])
        if call_["architecture"] == "cnn_all":
            assert fit | val == training_fold  # every labelled well of the training fold
        else:
            assert fit | val == training_fold & balanced  # the study's protocol
        seen[call_["architecture"]].append(len(fit | val))
    assert len(seen["cnn_all"]) == p.folds and len(seen["wide_cnn"]) == p.folds * 2  # one strategy vs two
    assert sum(seen["cnn_all"]) == 40 > sum(seen["wide_cnn"]) / 2 == 26  # more wells than the study's
    fits = result.fits.set_index("architecture")
    assert fits.loc["cnn_all", "n_train"].sum() + fits.loc["cnn_all", "n_val"].sum() == 40


def test_cnn_all_is_class_weighted_under_the_richest_augmentation_only(both_run):
    inputs, _, result, calls, index = both_run
    for call_ in calls:
        assert call_["class_weight"] is (call_["architecture"] == "cnn_all")
        if call_["architecture"] == "cnn_all":
            assert {v for v, _ in trace(call_["x"], index)} == {"identity", "hflip"}
    pred = result.predictions
    assert set(pred.augmentation[pred.architecture == "cnn_all"]) == {"hflip"}
    assert set(result.curves.architecture) == {"wide_cnn", "cnn_all"}  # its learning curves (for MLflow)


def test_cnn_all_is_scored_on_the_same_test_wells_as_the_study_and_in_its_own_family(both_run):
    _, _, result, _, _ = both_run
    pred = result.predictions
    wells = {
        (a, g): sorted(part.well_index)
        for (a, g), part in pred[pred.augmentation == "hflip"].groupby(["architecture", "fold"])
    }
    assert wells[("cnn_all", 0)] == wells[("wide_cnn", 0)] and wells[("cnn_all", 1)] == wells[("wide_cnn", 1)]
    assert call.family("cnn_all") == "all-wells CNN" != call.family("wide_cnn")
    assert "cnn_all" not in params.STUDY_ARCHITECTURES


def test_cnn_all_is_the_wide_cnn_network():
    spec = models.get("cnn_all")
    assert spec.build is models.build_wide_cnn and spec.kind == "cnn_all"
    assert models.count_trainable("cnn_all", 3, 32) == models.count_trainable("wide_cnn", 3, 32)


def test_cnn_all_is_refit_on_every_labelled_well_class_weighted_and_served_as_a_cnn(monkeypatch, tmp_path):
    from cytoops.refit import Refitter

    inputs = uneven_inputs()
    p = dataclasses.replace(params.Params(), train=fast_params(architectures=("cnn_all",)))
    fits = pd.DataFrame(
        {"architecture": "cnn_all", "augmentation": "hflip", "cytokine": "IL-6", "best_epoch": [2, 3]}
    )
    scaling = pd.DataFrame({"plate": "plate-1", "channel": CHANNELS, "lo": 0.0, "hi": 1.0})
    recorder = Recorder(monkeypatch)
    refit = Refitter(inputs, scaling, None, fits, p).refit("cnn_all", "hflip", "IL-6")
    (fitted,) = recorder.calls
    assert fitted["class_weight"] is True and fitted["x_val"].item() is None  # no held-out wells
    assert refit.n_wells == 40 > int(inputs.labels.balanced.sum()) and refit.n_images == 80
    assert refit.epochs == 3  # the median best epoch of its folds, rounded up
    built = servable.build("cnn_all", refit.fitted, refit.recipe, tmp_path)
    assert built.family == "cnn_all" and servable.kind_of("cnn_all") == "cnn"
    study = Refitter(inputs, scaling, None, fits.assign(architecture="wide_cnn"), p).refit(
        "wide_cnn", "hflip", "IL-6"
    )
    assert study.n_wells == int(inputs.labels.balanced.sum()) == 26 and not recorder.calls[-1]["class_weight"]


def test_wide_cnn_gives_the_same_probabilities_with_or_without_cnn_all_beside_it(both_run):
    """cnn_all shares wide_cnn's view bank, network builder and fitter: none of it moves a wide_cnn unit
    (the same units, run before this change, gave bit-identical probabilities too: said in the commit)."""
    inputs, p, result, _, _ = both_run
    alone = train.cross_validate(inputs, dataclasses.replace(p, architectures=("wide_cnn",)), progress=False)
    mixed = result.predictions[result.predictions.architecture == "wide_cnn"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone.predictions, mixed)


def test_the_progress_bar_expects_a_cnn_all_task_to_cost_more_than_a_wide_cnn_one():
    from cytoops import schedule

    tasks, _, _ = train.plan(uneven_inputs(), fast_params(architectures=("wide_cnn", "cnn_all")))
    cost = {t.architecture: schedule.task_cost(t) for t in tasks}
    assert cost["cnn_all"] > cost["wide_cnn"]  # not a ViT head's tenth (what an unlisted name is priced at)
