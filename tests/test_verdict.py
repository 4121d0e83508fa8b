"""The verdict: permutation p, BH, exchangeable shuffles, baselines on the same folds, and the call itself
(pure noise is never called predictable; a label planted in the images is)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, matthews_corrcoef, roc_auc_score

from cytoops import augment, evaluate, train, verdict, wrangle
from cytoops import params as params_mod

# ---- hand-computed cases ------------------------------------------------------------------------------


def test_permutation_p_is_b_plus_one_over_n_plus_one():
    null = np.array([0.1, 0.5, 0.7])
    assert verdict.permutation_p(null, 0.6) == pytest.approx(2 / 4)  # one null value (0.7) reaches 0.6
    assert verdict.permutation_p(null, 0.8) == pytest.approx(1 / 4)  # none: the floor 1 / (n + 1)
    assert verdict.permutation_p(null, 0.5) == pytest.approx(3 / 4)  # ties count as reaching it
    assert verdict.permutation_p(np.zeros(9999), 0.9) == pytest.approx(1e-4)


def test_benjamini_hochberg_matches_a_hand_calculation_and_scipy():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    # sorted 0.005, 0.01, 0.03, 0.04, 0.5 -> p * 5 / rank = 0.025, 0.025, 0.05, 0.05, 0.5 -> min from the top
    expected = np.array([0.025, 0.05, 0.05, 0.025, 0.5])
    assert verdict.benjamini_hochberg(p) == pytest.approx(expected)
    assert verdict.benjamini_hochberg(p) == pytest.approx(stats.false_discovery_control(p, method="bh"))
    # a later small p pulls earlier ones down (step-up); NaN is left out of m
    q = verdict.benjamini_hochberg(np.array([0.02, 0.03, np.nan]))
    assert q[:2] == pytest.approx([0.03, 0.03]) and np.isnan(q[2])


def test_holm_matches_a_hand_calculation():
    # sorted 0.01, 0.02, 0.04 -> x3, x2, x1 = 0.03, 0.04, 0.04 (running max)
    assert verdict.holm(np.array([0.04, 0.01, 0.02])) == pytest.approx([0.04, 0.03, 0.04])


def test_weighted_metrics_equal_sklearn_with_sample_weights():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    prob = np.round(rng.random(40), 1)  # ties on purpose
    w = rng.integers(0, 3, (5, 40)).astype(float)
    w[0] = 1.0
    m = verdict.weighted_metrics(y, prob, w)
    point = verdict.fold_metrics(y, prob)
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
    w = verdict.cluster_bootstrap_weights(groups, 200, np.random.default_rng(1))
    assert w.shape == (200, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 2] == w[:, 4]).all()  # a group's wells move together
    assert (w[:, [0, 2, 5]].sum(axis=1) == 3).all()  # 3 groups drawn each time


def test_shuffles_keep_plates_groups_and_counts():
    plates = np.array(["p1"] * 10 + ["p2"] * 6)
    groups = np.array(["A", "A", "B", "B", "C", "C", "D", "D", "D", "E", "F", "F", "G", "G", "H", "I"])
    y = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 0])
    strata = verdict.exchangeable_strata(plates, groups)
    kinds = sorted((k, len(part)) for k, part in strata)
    # p1: A, B, C have 2 wells (3 blocks), D (3 wells) and E (1) have unique sizes: pooled, 4 wells;
    # p2: F, G have 2 wells (2 blocks), H and I one each (2 blocks)
    assert kinds == [("blocks", 2), ("blocks", 2), ("blocks", 3), ("wells", 4)]
    perms = verdict.permuted_labels(y, strata, 500, np.random.default_rng(0))
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
    wells_only = verdict.exchangeable_strata(plates, np.arange(16).astype(str))
    assert [(k, len(part)) for k, part in wells_only] == [("blocks", 10), ("blocks", 6)]


@pytest.mark.parametrize("statistic", ["roc_auc", "f1"])
def test_conditional_test_with_repeated_cv_and_model_selection(statistic):
    """Two repeats with their own folds (cells = a fold in each repeat); max over models."""
    rng = np.random.default_rng(3)
    n_groups = 30
    group = np.repeat(np.arange(n_groups), 2)
    y = np.repeat(rng.permutation(np.repeat([0, 1], n_groups // 2)), 2)
    wells = pd.DataFrame({"plate": "p", "group": [f"g{g}" for g in group]})
    rows = []
    for repeat in (0, 1):
        fold_of_group = rng.permutation(np.repeat([0, 1], n_groups // 2))
        fold = fold_of_group[group]
        for model, prob in (("perfect", 0.1 + 0.8 * y), ("coin", rng.random(len(y)))):
            rows.append(
                pd.DataFrame(
                    {
                        "architecture": model,
                        "augmentation": "none",
                        "cytokine": "X",
                        "repeat": repeat,
                        "fold": fold,
                        "well_index": np.arange(len(y)),
                        "label": y,
                        "prob": prob,
                    }
                )
            )
    preds = pd.concat(rows, ignore_index=True)
    observed, null, per_model = verdict.conditional_test(
        preds, wells, 999, np.random.default_rng(0), statistic
    )
    assert observed == pytest.approx(1.0) and per_model[("perfect", "none")] == pytest.approx(1.0)
    assert verdict.permutation_p(null, observed) == pytest.approx(1 / 1000)
    # the coin alone: its F1 is typical of the null, and the null is the same statistic (mean over 4 folds)
    coin = preds[preds.architecture == "coin"]
    obs_coin, null_coin, _ = verdict.conditional_test(coin, wells, 999, np.random.default_rng(0), statistic)
    assert 0.05 < verdict.permutation_p(null_coin, obs_coin) < 1
    scores = verdict.score_predictions(coin)
    assert obs_coin == pytest.approx(scores[statistic].mean()) and len(scores) == 4
    # picking the best of many coins is paid for: the max over models moves the null up
    many = pd.concat([coin.assign(architecture=f"coin{k}", prob=rng.random(len(coin))) for k in range(10)])
    _, null_many, _ = verdict.conditional_test(many, wells, 999, np.random.default_rng(0), statistic)
    assert np.median(null_many) > np.median(null_coin)


@pytest.mark.parametrize("statistic", ["roc_auc", "f1"])
def test_conditional_null_is_the_metric_of_the_shuffled_labels(statistic, monkeypatch):
    """Each null value = max over models of the mean per-fold metric (sklearn, via evaluate.fold_scores) of
    that permutation's labels: the vectorized ranks/calls algebra checked against the metric itself, ties
    in the probabilities included."""
    rng = np.random.default_rng(5)
    n = 24
    y = np.tile([0, 1], n // 2)
    fold = np.repeat([0, 1], n // 2)
    wells = pd.DataFrame({"plate": "p", "group": [f"g{i}" for i in range(n)]})
    models = {"a": rng.random(n), "b": np.round(rng.random(n), 1), "c": np.full(n, 0.7)}  # ties, constant
    preds = pd.concat(
        [
            pd.DataFrame(
                {"architecture": m, "augmentation": "none", "cytokine": "X", "repeat": 0, "fold": fold,
                 "well_index": np.arange(n), "label": y, "prob": prob}
            )
            for m, prob in models.items()
        ],
        ignore_index=True,
    )  # fmt: skip
    # permutations within each fold (each keeps its count of responders), handed to the test as they are
    perms = np.stack([np.concatenate([rng.permutation(y[fold == f]) for f in (0, 1)]) for _ in range(20)])
    monkeypatch.setattr(verdict, "permuted_labels", lambda label, strata, n_perm, rng: perms[:n_perm])
    observed, null, per_model = verdict.conditional_test(
        preds, wells, len(perms), np.random.default_rng(0), statistic
    )

    def mean_metric(labels, prob):
        return np.mean([evaluate.fold_scores(labels[fold == f], prob[fold == f])[statistic] for f in (0, 1)])

    for m, prob in models.items():
        assert per_model[(m, "none")] == pytest.approx(mean_metric(y, prob))
    want = [max(mean_metric(perm, prob) for prob in models.values()) for perm in perms]
    np.testing.assert_allclose(null, want)
    assert observed == pytest.approx(max(mean_metric(y, prob) for prob in models.values()))


def test_conditional_test_rejects_an_unknown_statistic():
    with pytest.raises(ValueError, match="statistic is 'accuracy': choose one of roc_auc, f1"):
        verdict.conditional_test(pd.DataFrame(), pd.DataFrame(), 9, np.random.default_rng(0), "accuracy")


def test_count_nuclei_counts_blobs():
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.zeros((32, 32))
    centres = [(5, 5), (5, 20), (16, 12), (26, 6), (25, 26)]
    for cy, cx in centres:
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 1.5**2))
    img += np.random.default_rng(0).normal(0, 0.01, img.shape)
    assert verdict.count_nuclei(img) == len(centres)


def test_baselines_use_the_given_folds_and_fit_on_the_training_fold_only():
    n = 40
    wells = pd.DataFrame(
        {
            "plate": "p",
            "well": [f"W{i}" for i in range(n)],
            "row": np.arange(n) % 8,
            "col": np.arange(n) // 8,
            "edge": False,
            "group": [f"g{i}" for i in range(n)],
        }
    )
    y = np.tile([0, 1], n // 2)
    folds = pd.DataFrame(
        {"cytokine": "X", "repeat": 0, "well_index": np.arange(n), "fold": np.arange(n) % 4 // 2}
    )
    labels = pd.DataFrame({"cytokine": "X", "well_index": np.arange(n), "label": y, "balanced": True})
    # `flipped` predicts the label one way in fold 0 and the other way in fold 1: a model fitted on the
    # training fold only gets every test well wrong; one that had seen the test fold could not.
    flipped = np.where(folds.fold == 0, y, 1 - y).astype(float)
    feats = {
        "prevalence": None,
        "same": pd.DataFrame({"x": y.astype(float)}),
        "flipped": pd.DataFrame({"x": flipped}),
    }
    pred = verdict.baseline_predictions(folds, labels, wells, feats)
    assert (
        set(zip(pred.well_index, pred.fold, strict=True))
        == set(zip(folds.well_index, folds.fold, strict=True))
        or len(pred) == 3 * n
    )
    sc = verdict.score_predictions(pred).groupby("augmentation").f1.mean()
    assert sc["same"] == pytest.approx(1.0)
    assert sc["flipped"] == pytest.approx(0.0)
    assert sc["prevalence"] == pytest.approx(2 * 0.5 / 1.5)  # always "responder" on balanced wells: F1 = 2/3


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
        {"architecture": "baseline", "augmentation": "embeddings", "cytokine": cyt, "f1": rng.random(8)}
    )
    h = verdict.hypotheses(means, base, 0.7, 0.05).set_index("hypothesis")
    assert h.loc["augmentation", "test"].startswith("Friedman") and 0 <= h.loc["augmentation", "p"] <= 1
    assert "deep_cnn" in h.loc["wide_cnn > deep_cnn", "skipped"]
    assert h.loc["CNN > ViT", "skipped"] == "no ViT was run"
    assert not h.loc["CNN better than embeddings", "skipped"]
    h2 = verdict.hypotheses(means, base.iloc[0:0], 0.7, 0.05).set_index("hypothesis")
    assert "embeddings" in h2.loc["CNN better than embeddings", "skipped"]


def test_decide_needs_q_under_alpha_and_beating_every_baseline():
    rows = []
    for c, f1, auc in [("good", 0.9, 0.95), ("edge", 0.8, 0.85), ("weak", 0.72, 0.6)]:
        rows.append(
            {"architecture": "wide_cnn", "augmentation": "none", "cytokine": c, "f1": f1, "roc_auc": auc}
        )
        rows.append(
            {
                "architecture": "baseline",
                "augmentation": "prevalence",
                "cytokine": c,
                "f1": 0.67,
                "roc_auc": 0.5,
            }
        )
        rows.append(
            {
                "architecture": "baseline",
                "augmentation": "position",
                "cytokine": c,
                "f1": 0.85 if c == "edge" else 0.5,
                "roc_auc": 0.9 if c == "edge" else 0.5,
            }
        )
    tests = pd.DataFrame(
        {"cytokine": ["good", "edge", "weak"], "p_conditional": [1e-4, 1e-4, 0.3], "n_conditional": 9999}
    )
    t = verdict.decide(pd.DataFrame(rows), tests, ["good", "edge", "weak"], 0.05, "both", "conditional")
    t = t.set_index("cytokine")
    assert t.loc["good", "predictable"]
    assert not t.loc["edge", "predictable"] and t.loc["edge", "best_baseline"] == "position"
    assert not t.loc["weak", "predictable"]
    assert t.q.to_numpy() == pytest.approx(verdict.benjamini_hochberg(np.array([1e-4, 1e-4, 0.3])))
    assert {"signal_in_images", "q_images"} <= set(t.columns) and not t.signal_in_images.any()  # no p_images
    # a cytokine without a p of the chosen test counts as p = 1
    t2 = verdict.decide(pd.DataFrame(rows), tests, ["good", "edge", "weak"], 0.05, "both", "refit")
    assert (t2.p == 1).all() and not t2.predictable.any()


def test_refit_choice_takes_the_smallest_p_first_and_caps():
    t = pd.DataFrame(
        {
            "cytokine": list("abcd"),
            "architecture": ["wide_cnn", "wide_cnn", None, "deep_cnn"],
            "p_conditional": [0.5, 0.01, 0.001, 0.01],
            "f1": [0.6, 0.7, 0.9, 0.8],
            "predictable": [False, True, False, False],
            "beats_baseline": [True, True, False, False],
        }
    )
    assert verdict.refit_choice(t, "top", 2) == ["d", "b"]  # c has no model; ties on p go to the higher F1
    assert verdict.refit_choice(t, "called", 0) == ["b"]
    assert verdict.refit_choice(t, "candidates", 0) == ["b", "a"]
    assert verdict.refit_choice(t, "none", 3) == []


def test_truth_scoring(tmp_path):
    plate = tmp_path / "plate-1"
    plate.mkdir()
    truth = {
        "cytokines": {
            "A": {"cause": "morphology", "driver": "cell_count"},
            "B": {"cause": "position"},
            "C": {"cause": "noise"},
            "D": {"cause": "morphology"},
        }
    }
    (plate / "truth.json").write_text(json.dumps(truth))
    t = verdict.find_truth(tmp_path, ["plate-1"])
    table = pd.DataFrame(
        {
            "cytokine": ["A", "B", "C", "D"],
            "predictable": [True, True, False, False],
            "q": [0.01, 0.01, 0.5, 0.5],
            "f1": 0.8,
            "best_baseline": "prevalence",
        }
    )
    scored = verdict.score_truth(table, t).set_index("cytokine").outcome
    assert scored.to_dict() == {
        "A": "found",
        "B": "wrongly called",
        "C": "correctly not called",
        "D": "missed",
    }
    s = verdict.truth_summary(verdict.score_truth(table, t))
    assert s["morphology_found"] == 1 and s["wrongly_called"] == {"B": "position"}
    assert verdict.find_truth(tmp_path, ["other-plate"]) == {}


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
    inputs = train.Inputs(
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
        "verdict": {"n_perm": 999, "n_boot": 200, "refit_scope": "none", **verdict_overrides},
    }
    known = {f.name for f in dataclasses.fields(params_mod.TrainParams)}
    raw["train"] = {k: v for k, v in raw["train"].items() if k in known}
    return params_mod.from_dict(raw)


@pytest.fixture(scope="module")
def planted_and_noise():
    w, inputs = _tiny_world(0, planted=("planted",), noise=("noise-1", "noise-2", "noise-3"))
    p = _params()
    result = train.cross_validate(inputs, p.train, progress=False)
    return w, inputs, result, p


def test_noise_is_never_called_and_a_planted_label_is(planted_and_noise):
    w, _, result, p = planted_and_noise
    v = verdict.compute(w, result, p)
    t = v.table.set_index("cytokine")
    assert t.loc["planted", "predictable"], t.loc["planted"].to_dict()
    assert t.loc["planted", "p_conditional"] == pytest.approx(1 / 1000)
    assert t.loc["planted", "f1"] > t.loc["planted", "best_baseline_f1"]
    for name in ("noise-1", "noise-2", "noise-3"):
        assert not t.loc[name, "predictable"], t.loc[name].to_dict()
    # the same folds as the models, and intervals around every figure
    base = v.predictions[v.predictions.architecture == verdict.BASELINE_ARCH]
    f = result.folds.set_index(["cytokine", "repeat", "well_index"]).fold
    assert (
        base.set_index(["cytokine", "repeat", "well_index"]).fold
        == f.reindex(base.set_index(["cytokine", "repeat", "well_index"]).index)
    ).all()
    assert (t.f1_lo <= t.f1).all() and (t.f1 <= t.f1_hi + 1e-9).all()
    # the model's F1 is evaluate's F1
    means = evaluate.per_cytokine(evaluate.score(result.predictions, result.fits)).set_index("cytokine")
    assert t.loc["planted", "f1"] == pytest.approx(means.loc["planted", "f1"])


def test_pure_noise_plate_calls_nothing():
    w, inputs = _tiny_world(1, planted=(), noise=("n1", "n2", "n3", "n4"))
    p = _params()
    result = train.cross_validate(inputs, p.train, progress=False)
    v = verdict.compute(w, result, p)
    assert not v.table.predictable.any(), v.table[["cytokine", "f1", "p", "q", "reason"]]


def test_refit_null_reruns_the_best_model_on_shuffled_labels(planted_and_noise):
    _, inputs, result, p = planted_and_noise
    pred = result.predictions[result.predictions.cytokine == "planted"]
    observed = np.mean(
        [evaluate.fold_scores(g.label.to_numpy(), g.prob.to_numpy())["f1"] for _, g in pred.groupby("fold")]
    )
    null, refit_observed, seconds = verdict.refit_null(
        inputs, p.train, "planted", "wide_cnn", "none", 3, seed=0, statistic="f1"
    )
    assert refit_observed == pytest.approx(observed)  # the same fit, on the real labels, in this process
    assert len(null) == 3 and (null < observed).all() and seconds > 0
    assert verdict.permutation_p(null, refit_observed) == pytest.approx(1 / 4)
    # the other statistic, ROC AUC: the same fit scored by its ranking
    auc = np.mean(
        [
            evaluate.fold_scores(g.label.to_numpy(), g.prob.to_numpy())["roc_auc"]
            for _, g in pred.groupby("fold")
        ]
    )
    _, refit_auc, _ = verdict.refit_null(
        inputs, p.train, "planted", "wide_cnn", "none", 1, seed=0, statistic="roc_auc"
    )
    assert refit_auc == pytest.approx(auc)
    # stop early once 1 null F1 reaches a (here impossible) observed F1 of 0: one permutation is enough
    inputs_noise = dataclasses.replace(inputs, kept=("noise-1",))
    null2, _, _ = verdict.refit_null(
        inputs_noise, p.train, "noise-1", "wide_cnn", "none", 5, seed=0, stop_after=1
    )
    assert len(null2) <= 5
