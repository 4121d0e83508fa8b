"""transfer: ROC AUC with a bootstrap interval, reliability curves, the table beside the CV estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cytoops import transfer


def test_auc_interval_is_seeded_and_brackets_the_point():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, 60), 0, 1)
    wells = np.arange(60).astype(str)
    auc, lo, hi = transfer.auc_interval(y, p, wells, 500, np.random.default_rng(1))
    from sklearn.metrics import roc_auc_score

    assert auc == roc_auc_score(y, p) and lo < auc < hi and hi - lo > 0.05
    assert transfer.auc_interval(y, p, wells, 500, np.random.default_rng(1)) == (auc, lo, hi)
    # a treatment's wells share its response and its effect: resampling the 12 treatments gives a wider
    # interval than resampling the 60 wells as if each were independent
    groups = np.arange(60) // 5
    yg = groups % 2
    shared = np.clip(0.5 + 0.1 * (yg - 0.5) + rng.normal(0, 0.2, 12)[groups] + rng.normal(0, 0.02, 60), 0, 1)
    _, wlo, whi = transfer.auc_interval(yg, shared, wells, 500, np.random.default_rng(1))
    _, glo, ghi = transfer.auc_interval(yg, shared, groups.astype(str), 500, np.random.default_rng(1))
    assert ghi - glo > whi - wlo
    assert np.isnan(transfer.auc_interval(np.ones(5), p[:5], wells[:5], 10, rng)[0])


def test_reliability_bins_every_well_once():
    p = np.array([0.05, 0.07, 0.5, 0.55, 0.95, 1.0])
    y = np.array([0, 0, 1, 0, 1, 1])
    curve = transfer.reliability(y, p)
    assert curve.n_wells.tolist() == [2, 2, 2] and curve.n_wells.sum() == 6
    np.testing.assert_allclose(curve.mean_predicted, [0.06, 0.525, 0.975])
    np.testing.assert_allclose(curve.fraction_responders, [0, 0.5, 1])


def test_table_puts_this_plates_auc_beside_the_cross_validated_one():
    y = np.tile([0, 1], 10)
    scored = pd.DataFrame(
        {"cytokine": "IL-6", "model": "m/1", "prob": 0.2 + 0.6 * y, "label": y, "cluster": np.arange(20) // 2}
    )
    deployed = pd.DataFrame([{"cytokine": "IL-6", "family": "profile", "cv_roc_auc": 0.9}])
    table, curves = transfer.table(scored, deployed, cutoff=0.5, seed=0, n_boot=100)
    row = table.iloc[0]
    assert row.roc_auc == 1 and row.f1 == 1 and row.cv_roc_auc == 0.9 and np.isnan(row.cv_roc_auc_hi)
    assert row.family == "profile" and row.bootstrap == "treatment" and row.brier == np.float64(0.04)
    assert list(table.columns) == transfer.COLUMNS and curves.n_wells.sum() == 20
