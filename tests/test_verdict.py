"""verdict: the call, its test, its baselines and its comparisons, on hand-computed cases and tiny plates."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, matthews_corrcoef, roc_auc_score

from cytoops import augment, dataset, train, wrangle
from cytoops import params as params_mod
from cytoops.verdict import baselines, call, claims, metrics, permutation, stage, truth

# ---- hand-computed cases ------------------------------------------------------------------------------


def test_permutation_p_is_b_plus_one_over_n_plus_one():
    null = np.array([0.1, 0.5, 0.7])
    assert permutation.permutation_p(null, 0.6) == pytest.approx(2 / 4)  # one null value (0.7) reaches 0.6
    assert permutation.permutation_p(null, 0.8) == pytest.approx(1 / 4)  # none: the floor 1 / (n + 1)
    assert permutation.permutation_p(null, 0.5) == pytest.approx(3 / 4)  # ties count as reaching it
    assert permutation.permutation_p(np.zeros(9999), 0.9) == pytest.approx(1e-4)


def test_weighted_metrics_equal_sklearn_with_sample_weights():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    prob = np.round(rng.random(40), 1)  # ties on purpose
    w = rng.integers(0, 3, (5, 40)).astype(float)
    w[0] = 1.0
    m = metrics.weighted_metrics(y, prob, w)
    point = metrics.fold_metrics(y, prob)
    for k in ("f1", "roc_auc", "average_precision", "mcc", "precision", "recall"):
        assert m[k][0] == pytest.approx(point[k]), k
    for b in range(1, 5):
        call = (prob >= 0.5).astype(int)
        assert m["roc_auc"][b] == pytest.approx(roc_auc_score(y, prob, sample_weight=w[b]))
        assert m["average_precision"][b] == pytest.approx(
            average_precision_score(y, prob, sample_weight=w[b])
        )
        assert m["mcc"][b] == pytest.approx(matthews_corrcoef(y, call, sample_weight=w[b]))


def test_cluster_bootstrap_resamples_whole_groups():
    groups = np.array(["a", "a", "b", "b", "b", "c"])
    w = metrics.cluster_bootstrap_weights(groups, 200, np.random.default_rng(1))
    assert w.shape == (200, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 2] == w[:, 4]).all()  # a group's wells move together
    assert (w[:, [0, 2, 5]].sum(axis=1) == 3).all()  # 3 groups drawn each time


def test_shuffles_keep_plates_groups_and_counts():
    plates = np.array(["p1"] * 10 + ["p2"] * 6)
    groups = np.array(["A", "A", "B", "B", "C", "C", "D", "D", "D", "E", "F", "F", "G", "G", "H", "I"])
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0])
    strata = permutation.exchangeable_strata(plates, groups)
    kinds = sorted((k, len(part)) for k, part in strata)
    # p1: A, B, C have 2 wells (3 blocks), D (3 wells) and E (1) have unique sizes: pooled, 4 wells;
    # p2: F, G have 2 wells (2 blocks), H and I one each (2 blocks)
    assert kinds == [("blocks", 2), ("blocks", 2), ("blocks", 3), ("wells", 4)]
    perms = permutation.permuted_labels(y, strata, 500, np.random.default_rng(0))
    assert (perms[:, :10].sum(axis=1) == y[:10].sum()).all() and (
        perms[:, 10:].sum(axis=1) == y[10:].sum()
    ).all()
    # blocks of equal size swap their label multisets whole: A, B, C still hold {2, 0, 1} responders
    sums = np.sort(
        np.stack([perms[:, 0:2].sum(1), perms[:, 2:4].sum(1), perms[:, 4:6].sum(1)], axis=1), axis=1
    )
    assert (sums == [0, 1, 2]).all()
    assert len({tuple(r) for r in perms}) > 20  # and they do move
    # without a layout every well is its own group: a within-plate well shuffle
    wells_only = permutation.exchangeable_strata(plates, np.arange(16).astype(str))
    assert [(k, len(part)) for k, part in wells_only] == [("blocks", 10), ("blocks", 6)]


def test_count_nuclei_counts_blobs():
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.zeros((32, 32))
    centres = [(5, 5), (5, 20), (16, 12), (26, 6), (25, 26)]
    for cy, cx in centres:
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
    img += np.random.default_rng(0).normal(0, 0.01, img.shape)
    assert baselines.count_nuclei(img) == len(centres)


def test_hypotheses_skip_what_was_not_run():
    rng = np.random.default_rng(0)
    cyt = [f"c{i}" for i in range(8)]
    means = pd.DataFrame(
        [
            {"architecture": "wide_cnn", "augmentation": a, "cytokine": c, "f1": rng.random()}
            for a in ("none", "hflip", "vflip")
            for c in cyt
        ]
    )
    base = pd.DataFrame(
        {"architecture": "embeddings", "augmentation": "none", "cytokine": cyt, "f1": rng.random(8)}
    )
    h = claims.hypotheses(means, base, 0.7, 0.05).set_index("hypothesis")
    assert h.loc["augmentation", "test"].startswith("Friedman") and 0 <= h.loc["augmentation", "p"] <= 1
    assert "deep_cnn" in h.loc["wide_cnn > deep_cnn", "skipped"]
    assert h.loc["CNN > ViT", "skipped"] == "no ViT was run"
    assert not h.loc["CNN better than embeddings", "skipped"]
    h2 = claims.hypotheses(means, base.iloc[0:0], 0.7, 0.05).set_index("hypothesis")
    assert "embeddings" in h2.loc["CNN better than embeddings", "skipped"]


def test_truth_scoring(tmp_path):
    plate = tmp_path / "plate-1"
    plate.mkdir()
    truth_doc = {
        "cytokines": {
            "A": {"cause": "morphology", "driver": "cell_count"},
            "B": {"cause": "position"},
            "C": {"cause": "noise"},
            "D": {"cause": "morphology"},
        }
    }
    (plate / "truth.json").write_text(json.dumps(truth_doc))
    t = truth.find_truth(tmp_path, ["plate-1"])
    table = pd.DataFrame(
        {
            "cytokine": ["A", "B", "C", "D"],
            "predictable": [True, True, False, False],
            "q": [0.01, 0.01, 0.5, 0.5],
            "roc_auc": 0.8,
            "best_family": "profile",
        }
    )
    scored = truth.score_truth(table, t).set_index("cytokine").outcome
    assert scored.to_dict() == {
        "A": "found",
        "B": "wrongly called",
        "C": "correctly not called",
        "D": "missed",
    }
    s = truth.truth_summary(truth.score_truth(table, t))
    assert s["morphology_found"] == 1 and s["wrongly_called"] == {"B": "position"}
    assert truth.find_truth(tmp_path, ["other-plate"]) == {}


# ---- the call on tiny plates, through the real trainer --------------------------------------------------

N_WELLS, SIZE = 96, 16


def _tiny_world(seed: int, planted: tuple[str, ...], noise: tuple[str, ...]):
    """A 96-well plate of 16x16 images, 24 treatments x 4 wells. A planted cytokine's responders are 12
    treatments whose actin channel has vertical stripes (horizontal otherwise): same mean, same nuclei, so
    no simple feature sees it. A noise cytokine is a coin per treatment, unrelated to anything."""
    rng = np.random.default_rng(seed)
    treatment = np.repeat(np.arange(24), 4)
    rng.shuffle(treatment)
    rows, cols = np.arange(N_WELLS) // 12, np.arange(N_WELLS) % 12
    wells = pd.DataFrame(
        {
            "plate": "tiny",
            "well": [f"{chr(65 + r)}{c + 1:02d}" for r, c in zip(rows, cols, strict=True)],
            "row": rows,
            "col": cols,
            "edge": (rows == 0) | (rows == 7) | (cols == 0) | (cols == 11),
            "treatment": [f"T{t}" for t in treatment],
            "role": "sample",
            "concentration": 1.0,
        }
    )
    wells["group"] = "treatment:" + wells.treatment
    responder_treatments = rng.permutation(24)[:12]
    striped = np.isin(treatment, responder_treatments)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    images = rng.normal(0.5, 0.05, (N_WELLS, 3, SIZE, SIZE)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, N_WELLS)[:, None, None]
    vertical = 0.5 + 0.3 * np.cos(np.pi * xx[None] / 2 + phase)
    horizontal = 0.5 + 0.3 * np.cos(np.pi * yy[None] / 2 + phase)
    images[:, 0] = np.where(striped[:, None, None], vertical, horizontal) + rng.normal(
        0, 0.05, (N_WELLS, SIZE, SIZE)
    )
    frames = []
    for name in planted:
        y = striped.astype(int)
        frames.append(
            pd.DataFrame(
                {
                    "cytokine": name,
                    "slug": name,
                    "well_index": np.arange(N_WELLS),
                    "value": y,
                    "label": y,
                    "balanced": True,
                }
            )
        )
    for name in noise:
        coin = rng.permutation(np.repeat([0, 1], 12))[treatment]
        frames.append(
            pd.DataFrame(
                {
                    "cytokine": name,
                    "slug": name,
                    "well_index": np.arange(N_WELLS),
                    "value": coin,
                    "label": coin,
                    "balanced": True,
                }
            )
        )
    labels = pd.concat(frames, ignore_index=True)
    kept = (*planted, *noise)
    cytokines = pd.DataFrame({"cytokine": list(kept), "slug": list(kept), "kept": True})
    w = wrangle.Wrangled(
        wells=wells,
        images=images,
        channels=("actin", "mito", "nucleus"),
        labels=labels,
        cytokines=cytokines,
        embeddings=pd.DataFrame(index=wells.index),
    )
    inputs = dataset.Inputs(
        wells=wells,
        labels=labels,
        kept=kept,
        bank=augment.make_bank(images, ("none",)),
        channels=w.channels,
        vit=None,
        strategies=("none",),
    )
    return w, inputs


def _params(**verdict_overrides) -> params_mod.Params:
    raw = {
        "augment": {"strategies": ["none"]},
        "train": {"architectures": ["wide_cnn"], "epochs": 25, "patience": 8, "batch_size": 8, "workers": 1},
        "verdict": {"n_perm": 999, "n_boot": 200, **verdict_overrides},
    }
    return params_mod.from_dict(raw)


@pytest.fixture(scope="module")
def planted_and_noise():
    w, inputs = _tiny_world(0, planted=("planted",), noise=("noise-1", "noise-2", "noise-3"))
    p = _params()
    result = train.cross_validate(inputs, p.train, progress=False)
    return w, inputs, result, p


def test_noise_is_never_called_and_a_planted_label_is(planted_and_noise):
    w, _, result, p = planted_and_noise
    v = stage.compute(w, result, p)
    t = v.table.set_index("cytokine")
    assert t.loc["planted", "predictable"], t.loc["planted"].to_dict()
    assert t.loc["planted", "p"] == pytest.approx(1 / 1000)
    assert t.loc["planted", "roc_auc"] > t.loc["planted", "best_blind_roc_auc"]
    for name in ("noise-1", "noise-2", "noise-3"):
        assert not t.loc[name, "predictable"], t.loc[name].to_dict()
    # the baselines use the models' folds and test wells, and every figure has an interval around it
    base = v.predictions[v.predictions.architecture.isin(baselines.BASELINES)]
    key = ["cytokine", "repeat", "well_index"]
    f = result.folds.set_index(key).fold
    assert (base.set_index(key).fold == f.reindex(base.set_index(key).index)).all()
    assert (t.roc_auc_lo <= t.roc_auc).all() and (t.roc_auc <= t.roc_auc_hi + 1e-9).all()
    # the models' AUC is evaluate's AUC (sklearn) on the same wells
    pred = result.predictions[result.predictions.cytokine == "planted"]
    auc = np.mean([roc_auc_score(g.label, g.prob) for _, g in pred.groupby("fold")])
    assert t.loc["planted", "roc_auc"] == pytest.approx(auc)


def test_pure_noise_plate_calls_nothing():
    w, inputs = _tiny_world(1, planted=(), noise=("n1", "n2", "n3", "n4"))
    p = _params()
    result = train.cross_validate(inputs, p.train, progress=False)
    v = stage.compute(w, result, p)
    assert not v.table.predictable.any(), v.table[["cytokine", "roc_auc", "p", "q", "reason"]]


# ---- the test --------------------------------------------------------------------------------------------


def _wells(n_rows=8, n_cols=12, groups=None):
    rows, cols = np.divmod(np.arange(n_rows * n_cols), n_cols)
    edge = (rows == 0) | (cols == 0) | (rows == n_rows - 1) | (cols == n_cols - 1)
    return pd.DataFrame(
        {"plate": "p", "well": [f"w{i}" for i in range(len(rows))], "row": rows, "col": cols, "edge": edge,
         "group": groups if groups is not None else [f"g{i}" for i in range(len(rows))]}
    )  # fmt: skip


def _preds(models: dict, y, fold, cytokine="X"):
    return pd.concat(
        [
            pd.DataFrame(
                {"architecture": m, "augmentation": "none", "cytokine": cytokine, "repeat": 0, "fold": fold,
                 "well_index": np.arange(len(y)), "label": y, "balanced": True, "prob": prob}
            )
            for m, prob in models.items()
        ],
        ignore_index=True,
    )  # fmt: skip


def test_ring_is_the_distance_from_the_plate_edge():
    w = _wells(8, 12)
    r = permutation.ring(w).reshape(8, 12)
    assert (r[0] == 0).all() and (r[:, -1] == 0).all() and r[1, 1] == 1 and r[3, 5] == 2 and r.max() == 2


def test_a_plate_artefact_is_not_predictable_from_images():
    """Responders on edge wells only (evaporation): an image model that sees the edge (as a brighter, sparser
    well would show it) ranks them well, but says nothing within a ring: the test does not call it."""
    rng = np.random.default_rng(0)
    w = _wells()
    edge = w.edge.to_numpy()
    p_values = []
    for k in range(20):
        y = (rng.random(len(w)) < np.where(edge, 0.6, 0.05)).astype(int)
        fold = rng.permutation(np.arange(len(w)) % 2)
        sees_edge = edge + rng.normal(0, 0.3, len(w))
        obs, null, _ = permutation.conditional_test(
            _preds({"edge_reader": sees_edge}, y, fold), w, 199, np.random.default_rng(k)
        )
        assert obs > 0.65  # it does rank responders well
        p_values.append(permutation.permutation_p(null, obs))
    assert np.mean(np.array(p_values) < 0.05) <= 0.15  # calibrated: ~5% expected, not ~100%


def test_max_t_null_with_model_selection_and_exact_auc():
    """Each null value is the max over models of the mean per-fold sklearn ROC AUC of that permutation."""
    rng = np.random.default_rng(5)
    n = 24
    y = np.tile([0, 1], n // 2)
    fold = np.repeat([0, 1], n // 2)
    w = _wells(4, 6)
    models = {"a": rng.random(n), "b": np.round(rng.random(n), 1), "c": np.full(n, 0.7)}  # ties, constant
    perms = np.stack([np.concatenate([rng.permutation(y[fold == f]) for f in (0, 1)]) for _ in range(20)])
    original = permutation.permuted_labels
    try:
        permutation.permuted_labels = lambda label, strata, n_perm, rng: perms[:n_perm]
        observed, null, per_model = permutation.conditional_test(_preds(models, y, fold), w, 20, rng)
    finally:
        permutation.permuted_labels = original

    def mean_auc(labels, prob):
        return np.mean([roc_auc_score(labels[fold == f], prob[fold == f]) for f in (0, 1)])

    for m, prob in models.items():
        assert per_model[(m, "none")] == pytest.approx(mean_auc(y, prob))
    np.testing.assert_allclose(null, [max(mean_auc(p_, prob) for prob in models.values()) for p_ in perms])
    assert observed == pytest.approx(max(mean_auc(y, prob) for prob in models.values()))


def test_picking_the_best_of_many_coins_is_paid_for():
    rng = np.random.default_rng(3)
    w = _wells()
    y = rng.integers(0, 2, len(w))
    fold = np.arange(len(w)) % 2
    one = permutation.conditional_test(_preds({"c0": rng.random(len(w))}, y, fold), w, 499, rng)
    many = permutation.conditional_test(
        _preds({f"c{k}": rng.random(len(w)) for k in range(10)}, y, fold), w, 499, rng
    )
    assert np.median(many[1]) > np.median(one[1])


def test_decide_calls_only_significant_cytokines_that_beat_the_blind_baselines():
    rows = []
    for c, auc, pos_auc in [("good", 0.95, 0.5), ("edge", 0.85, 0.9), ("weak", 0.6, 0.5)]:
        rows += [
            {"architecture": a, "augmentation": g, "cytokine": c, "f1": 0.5, "roc_auc": x}
            for a, g, x in [
                ("profile", "none", auc),
                ("wide_cnn", "none", auc - 0.1),
                ("prevalence", "none", 0.5),
                ("position", "none", pos_auc),
                ("cell_count", "none", 0.6),
            ]
        ]  # fmt: skip
    tests = pd.DataFrame({"cytokine": ["good", "edge", "weak"], "p": [1e-4, 1e-4, 0.3], "n_perm": 9999})
    t = call.decide(
        pd.DataFrame(rows), {}, tests, ["good", "edge", "weak", "lost"], {"lost": "fold 0 ..."}, 0.05, 0.95
    )
    t = t.set_index("cytokine")
    assert t.loc["good", "predictable"] and t.loc["good", "best_family"] == "profile"
    assert not t.loc["edge", "predictable"] and t.loc["edge", "best_blind"] == "position"
    assert not t.loc["weak", "predictable"]
    assert (
        not t.loc["lost", "predictable"] and t.loc["lost", "reason"] == "fold 0 ..."
    )  # reported, not dropped
    assert t.q.to_numpy() == pytest.approx(stats.false_discovery_control([1e-4, 1e-4, 0.3, 1.0], method="bh"))
    assert t.loc["good", "study_vs_profile_auc_diff"] == pytest.approx(-0.1)
    assert t.loc["good", "auc_cell_count"] == pytest.approx(0.6)


def test_cnn_all_is_a_family_of_its_own_and_not_the_studys():
    rows = [
        {"architecture": a, "augmentation": g, "cytokine": "X", "f1": 0.5, "roc_auc": x}
        for a, g, x in [("profile", "none", 0.8), ("wide_cnn", "none", 0.6), ("cnn_all", "flips", 0.9),
                        ("prevalence", "none", 0.5), ("position", "none", 0.5)]
    ]  # fmt: skip
    tests = pd.DataFrame({"cytokine": ["X"], "p": [1e-4], "n_perm": 9999})
    t = call.decide(pd.DataFrame(rows), {}, tests, ["X"], {}, 0.05, 0.95).set_index("cytokine")
    assert t.loc["X", "best_family"] == "all-wells CNN" and t.loc["X", "best_predictor"] == "cnn_all/flips"
    assert t.loc["X", "auc_all-wells_CNN"] == pytest.approx(0.9)
    assert t.loc["X", "auc_study_CNN"] == pytest.approx(0.6)
    assert t.loc["X", "study_vs_profile_auc_diff"] == pytest.approx(-0.2)  # the study's own protocol


def test_paired_difference_uses_shared_draws():
    draws = {("X", "a", "none"): {"roc_auc": np.array([0.9, 0.8, 0.85])},
             ("X", "b", "none"): {"roc_auc": np.array([0.7, 0.7, 0.75])}}  # fmt: skip
    lo, hi = call.paired_difference(draws, "X", ("a", "none"), ("b", "none"), 0.95)
    assert 0.1 - 1e-9 <= lo <= hi <= 0.2 + 1e-9


def test_baselines_fit_on_the_training_fold_only_and_score_every_labelled_test_well():
    n = 40
    w = _wells(5, 8)
    y = np.tile([0, 1], n // 2)
    folds = pd.DataFrame(
        {"cytokine": "X", "repeat": 0, "well_index": np.arange(n), "fold": np.arange(n) % 4 // 2,
         "balanced": np.arange(n) < 20}
    )  # fmt: skip
    labels = pd.DataFrame(
        {"cytokine": "X", "well_index": np.arange(n), "label": y, "balanced": folds.balanced}
    )
    # `flipped` predicts the label one way in fold 0 and the other way in fold 1: a baseline fitted on the
    # training fold only gets every test well wrong; one that had seen the test fold could not.
    flipped = np.where(folds.fold == 0, y, 1 - y).astype(float)
    feats = {
        "prevalence": None,
        "same": pd.DataFrame({"x": y.astype(float)}),
        "flipped": pd.DataFrame({"x": flipped}),
    }
    pred = baselines.baseline_predictions(folds, labels, w, feats)
    assert len(pred) == 3 * n and pred.balanced.sum() == 3 * 20
    sc = metrics.score_predictions(pred).groupby("architecture").roc_auc.mean()
    assert sc["same"] == pytest.approx(1.0) and sc["flipped"] == pytest.approx(0.0)
    assert sc["prevalence"] == pytest.approx(0.5)
