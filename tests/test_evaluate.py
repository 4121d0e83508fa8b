"""evaluate: per-fold scores on hand-computed cases, the summary, the dvc-plots learning curve, figures."""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pytest

from cytoops import evaluate, tables
from cytoops.params import EvaluateParams

# 3 responders, 3 not; calls at 0.5: [1, 1, 0 | 1, 0, 0] -> TP 2, FN 1, FP 1, TN 2
LABEL = np.array([1, 1, 1, 0, 0, 0])
PROB = np.array([0.9, 0.6, 0.4, 0.7, 0.2, 0.1])


def test_fold_scores_on_a_hand_computed_case():
    s = evaluate.fold_scores(LABEL, PROB)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3)
    # AUC: of the 9 (responder, non-responder) pairs, 7 rank the responder higher
    assert s["roc_auc"] == pytest.approx(7 / 9)
    assert s["balanced_accuracy"] == pytest.approx(2 / 3)


def test_fold_scores_with_unequal_precision_and_recall():
    # calls [1, 0, 0, 0 | 1, 1]: TP 1, FN 3, FP 2 -> precision 1/3, recall 1/4, F1 2PR/(P+R) = 2/7
    label = np.array([1, 1, 1, 1, 0, 0])
    prob = np.array([0.8, 0.3, 0.2, 0.1, 0.9, 0.6])
    s = evaluate.fold_scores(label, prob)
    assert s["precision"] == pytest.approx(1 / 3)
    assert s["recall"] == pytest.approx(1 / 4)
    assert s["f1"] == pytest.approx(2 / 7)
    assert s["roc_auc"] == pytest.approx(1 / 8)  # only 0.8 > 0.6 among the 8 pairs
    assert s["balanced_accuracy"] == pytest.approx((1 / 4 + 0) / 2)


def test_fold_scores_call_a_probability_of_one_half_a_responder():
    s = evaluate.fold_scores(np.array([1, 0]), np.array([0.5, 0.49]))
    assert s["f1"] == 1.0 and s["precision"] == 1.0 and s["recall"] == 1.0


def test_fold_scores_with_one_class_have_no_auc_and_no_division_error():
    s = evaluate.fold_scores(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]))
    assert np.isnan(s["roc_auc"]) and np.isnan(s["balanced_accuracy"])
    assert s["f1"] == 0.0 and s["precision"] == 0.0 and s["recall"] == 0.0


def test_fold_scores_are_sklearns_floats_bit_for_bit():
    from sklearn.metrics import (
        balanced_accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 7, 30, 193]:
        for _ in range(40):
            label = (rng.random(n) < rng.random()).astype(int)
            prob = rng.random(n) ** rng.uniform(0.2, 5)
            call = (prob >= 0.5).astype(int)
            both = len(np.unique(label)) == 2
            want = {
                "f1": f1_score(label, call, zero_division=0),
                "precision": precision_score(label, call, zero_division=0),
                "recall": recall_score(label, call, zero_division=0),
                "roc_auc": roc_auc_score(label, prob) if both else np.nan,
                "balanced_accuracy": balanced_accuracy_score(label, call) if both else np.nan,
            }
            got = evaluate.fold_scores(label, prob)
            for k, v in want.items():
                assert (np.isnan(v) and np.isnan(got[k])) or got[k] == v, (k, n, got[k], v)


def unit_rows(arch, aug, cytokine, fold, label, prob):
    n = len(label)
    return pd.DataFrame(
        {
            "architecture": arch,
            "augmentation": aug,
            "cytokine": cytokine,
            "repeat": 0,
            "fold": fold,
            "well_index": np.arange(n) + 100 * fold,
            "label": label,
            "prob": prob,
        }
    )


PERFECT = ([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1])  # F1 1, AUC 1
WRONG = ([1, 1, 0, 0], [0.2, 0.1, 0.9, 0.8])  # F1 0, AUC 0


@pytest.fixture
def predictions_and_fits():
    """Two models x two cytokines x two folds with known scores (F1 per fold):

    wide_cnn/none:  IL-6 1, 1 (mean 1);      TNF 1, 0 (mean 0.5)
    wide_cnn/hflip: IL-6 2/3, 2/3 (mean 2/3); TNF 1, 1 (mean 1)
    """
    parts = [
        unit_rows("wide_cnn", "none", "IL-6", 0, *PERFECT),
        unit_rows("wide_cnn", "none", "IL-6", 1, *PERFECT),
        unit_rows("wide_cnn", "none", "TNF", 0, *PERFECT),
        unit_rows("wide_cnn", "none", "TNF", 1, *WRONG),
        unit_rows("wide_cnn", "hflip", "IL-6", 0, LABEL, PROB),
        unit_rows("wide_cnn", "hflip", "IL-6", 1, LABEL, PROB),
        unit_rows("wide_cnn", "hflip", "TNF", 0, *PERFECT),
        unit_rows("wide_cnn", "hflip", "TNF", 1, *PERFECT),
    ]
    predictions = pd.concat(parts, ignore_index=True)
    fits = (
        predictions.groupby(tables.UNIT, as_index=False)
        .size()
        .rename(columns={"size": "n_test"})
        .assign(n_train=lambda f: f.n_test * 3, best_epoch=1)
    )
    return predictions, fits


def test_score_gives_one_row_per_fold_with_sizes(predictions_and_fits):
    predictions, fits = predictions_and_fits
    scores = evaluate.score(predictions, fits)
    assert len(scores) == 8
    assert list(scores.columns) == [*tables.UNIT, *evaluate.METRICS, "n_train", "n_test"]
    row = scores.set_index(["augmentation", "cytokine", "fold"]).loc[("none", "TNF", 1)]
    assert row.f1 == 0.0 and row.roc_auc == 0.0 and row.n_test == 4 and row.n_train == 12
    row = scores.set_index(["augmentation", "cytokine", "fold"]).loc[("hflip", "IL-6", 0)]
    assert row.f1 == pytest.approx(2 / 3) and row.roc_auc == pytest.approx(7 / 9) and row.n_test == 6


def test_per_cytokine_is_the_mean_over_folds(predictions_and_fits):
    scores = evaluate.score(*predictions_and_fits)
    means = evaluate.per_cytokine(scores).set_index(["augmentation", "cytokine"])
    assert len(means) == 4
    assert means.loc[("none", "IL-6"), "f1"] == pytest.approx(1.0)
    assert means.loc[("none", "TNF"), "f1"] == pytest.approx(0.5)
    assert means.loc[("none", "TNF"), "roc_auc"] == pytest.approx(0.5)
    assert means.loc[("hflip", "IL-6"), "f1"] == pytest.approx(2 / 3)
    assert means.loc[("hflip", "TNF"), "f1"] == pytest.approx(1.0)


def test_summarize_counts_predicted_cytokines_and_picks_the_best(predictions_and_fits):
    scores = evaluate.score(*predictions_and_fits)
    summary = evaluate.summarize(scores, EvaluateParams(f1_cutoff=0.7), n_kept=2, n_failed=3)
    assert summary["f1_cutoff"] == 0.7
    assert summary["n_cytokines_kept"] == 2 and summary["n_failed_fits"] == 3
    models = summary["models"]
    assert models["wide_cnn/none"] == {"mean_f1": 0.75, "mean_roc_auc": 0.75, "n_predicted": 1}
    assert models["wide_cnn/hflip"] == {
        "mean_f1": round((2 / 3 + 1) / 2, 4),
        "mean_roc_auc": round((7 / 9 + 1) / 2, 4),
        "n_predicted": 1,
    }
    # both predict one cytokine; hflip has the higher mean F1
    assert summary["best_model"] == "wide_cnn/hflip"
    assert summary["n_cytokines_predicted_by_any"] == 2
    assert summary["best_per_cytokine"] == {
        "IL-6": {"model": "wide_cnn/none", "f1": 1.0},
        "TNF": {"model": "wide_cnn/hflip", "f1": 1.0},
    }
    json.dumps(summary)  # what `evaluate` writes to metrics/summary.json


def test_summarize_with_a_high_cutoff_predicts_nothing(predictions_and_fits):
    scores = evaluate.score(*predictions_and_fits)
    summary = evaluate.summarize(scores, EvaluateParams(f1_cutoff=1.01), n_kept=2, n_failed=0)
    assert summary["n_cytokines_predicted_by_any"] == 0
    assert all(m["n_predicted"] == 0 for m in summary["models"].values())
    assert summary["best_model"] == "wide_cnn/hflip"  # ties on 0 predicted: the higher mean F1


def test_summary_lines_rank_the_models():
    head = {
        "n_kept": 2,
        "n_predicted": 1,
        "n_failed": 0,
        "best_model": "b/none",
        "best_f1": 0.5,
        "best_auc": 0.6,
    }
    models = pd.DataFrame(
        [
            {"model": "a/none", "mean_f1": 0.9, "mean_roc_auc": 0.8, "n_predicted": 0},
            {"model": "b/none", "mean_f1": 0.5, "mean_roc_auc": 0.6, "n_predicted": 1},
        ]
    )
    lines = evaluate.summary_lines(head, models, 0.7)
    assert "best model: b/none" in lines[0] and "F1 >= 0.7" in lines[0]
    assert lines[2].startswith("b/none") and lines[3].startswith("a/none")


def test_metrics_hold_a_handful_of_headline_numbers_and_tables_go_to_csv(predictions_and_fits, tmp_path):
    predictions, fits = predictions_and_fits
    result = types.SimpleNamespace(
        predictions=predictions, fits=fits, curves=pd.DataFrame(), failures=pd.DataFrame()
    )
    kept = pd.DataFrame({"cytokine": ["IL-6", "TNF"], "kept": [True, True]})
    metrics = tmp_path / "metrics" / "summary.json"
    evaluate.run(result, kept, tmp_path / "reports", metrics, EvaluateParams(f1_cutoff=0.7))
    head = json.loads(metrics.read_text())
    assert head == {
        "n_kept": 2,
        "n_predicted": 2,
        "n_failed": 0,
        "best_model": "wide_cnn/hflip",
        "best_f1": round((2 / 3 + 1) / 2, 4),
        "best_auc": round((7 / 9 + 1) / 2, 4),
    }
    assert all(not isinstance(v, dict | list) for v in head.values())  # flat: one column each in dvc exp show
    models = pd.read_csv(tmp_path / "reports" / "models.csv").set_index("model")
    assert models.loc["wide_cnn/none", "mean_f1"] == 0.75 and models.loc["wide_cnn/none", "n_predicted"] == 1
    best = pd.read_csv(tmp_path / "reports" / "best_per_cytokine.csv").set_index("cytokine")
    assert best.loc["TNF", "model"] == "wide_cnn/hflip" and best.loc["IL-6", "f1"] == 1.0


def curves_for(arch, aug, cytokine, fold, loss, repeat=0):
    n = len(loss)
    return pd.DataFrame(
        {
            "architecture": arch,
            "augmentation": aug,
            "cytokine": cytokine,
            "repeat": repeat,
            "fold": fold,
            "epoch": np.arange(1, n + 1),
            "loss": loss,
            "val_loss": [v + 0.1 for v in loss],
            "accuracy": 0.5,
            "val_accuracy": 0.5,
        }
    )


def means_for(*rows):
    return pd.DataFrame(rows, columns=["architecture", "augmentation", "cytokine", "f1"])


def test_best_curve_is_fold_0_of_the_best_model():
    means = means_for(
        ("wide_cnn", "none", "IL-6", 0.6),
        ("wide_cnn", "hflip", "IL-6", 0.9),
        ("deep_cnn", "none", "TNF", 0.8),
    )
    curves = pd.concat(
        [
            curves_for("wide_cnn", "none", "IL-6", 0, [5.0, 4.0]),
            curves_for("wide_cnn", "hflip", "IL-6", 0, [1.0, 0.5, 0.25]),
            curves_for("wide_cnn", "hflip", "IL-6", 1, [9.0, 9.0, 9.0]),
            curves_for("deep_cnn", "none", "TNF", 0, [7.0]),
        ],
        ignore_index=True,
    )
    best = evaluate.best_curve(means, curves)
    assert list(best.columns) == ["epoch", "loss", "val_loss"]
    assert best.epoch.tolist() == [1, 2, 3]
    assert best.loss.tolist() == [1.0, 0.5, 0.25]
    assert best.val_loss.tolist() == pytest.approx([1.1, 0.6, 0.35])


def test_best_curve_of_nothing_is_empty_with_its_columns():
    best = evaluate.best_curve(means_for(), curves_for("a", "b", "c", 0, []))
    assert best.empty and list(best.columns) == ["epoch", "loss", "val_loss"]


def test_best_curve_with_repeats_has_one_row_per_epoch():
    means = means_for(("wide_cnn", "none", "IL-6", 0.9))
    curves = pd.concat(
        [
            curves_for("wide_cnn", "none", "IL-6", 0, [1.0, 0.5], repeat=0),
            curves_for("wide_cnn", "none", "IL-6", 0, [2.0, 1.5], repeat=1),
        ],
        ignore_index=True,
    )
    best = evaluate.best_curve(means, curves)
    assert best.epoch.is_unique


def test_figures_writes_the_three_pngs(predictions_and_fits, tmp_path):
    scores = evaluate.score(*predictions_and_fits)
    curves = pd.concat(
        [
            curves_for("wide_cnn", aug, c, fold, [1.0, 0.8, 0.7])
            for aug in ("none", "hflip")
            for c in ("IL-6", "TNF")
            for fold in (0, 1)
        ],
        ignore_index=True,
    )
    written = evaluate.figures(scores, curves, tmp_path / "reports")
    names = ["f1_by_augmentation.png", "f1_by_architecture.png", "learning_curves.png"]
    assert sorted(p.name for p in written) == sorted(names)
    for name in names:
        data = (tmp_path / "reports" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000, name


def test_figures_without_curves_draws_only_the_f1_figures(predictions_and_fits, tmp_path):
    scores = evaluate.score(*predictions_and_fits)
    written = evaluate.figures(scores, pd.DataFrame(columns=["epoch"]), tmp_path)
    assert sorted(p.name for p in written) == ["f1_by_architecture.png", "f1_by_augmentation.png"]
    assert not (tmp_path / "learning_curves.png").exists()


def test_learning_curves_draw_the_best_model_that_has_curves_without_a_legend_warning(
    predictions_and_fits, tmp_path
):
    import warnings

    scores = evaluate.score(*predictions_and_fits)  # IL-6's best is wide_cnn/none: it has no curve here
    curves = pd.concat([curves_for("wide_cnn", "hflip", "IL-6", f, [1.0, 0.8]) for f in (0, 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels found to put in legend"
        written = evaluate.figures(scores, curves, tmp_path)
    assert tmp_path / "learning_curves.png" in written
