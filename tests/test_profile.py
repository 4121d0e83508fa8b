"""profile: segmentation, measurements, per-plate normalization and the model that reads the profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cytoops import profile

SIZE = 48


def blobs(rng, n_cells: int, radius: float, actin: float) -> np.ndarray:
    """(3, SIZE, SIZE) scaled 0..1: n round nuclei on a grid, actin around them, mito speckle."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = rng.normal(0.02, 0.005, (3, SIZE, SIZE))
    side = int(np.ceil(np.sqrt(n_cells)))
    step = SIZE / side
    for k in range(n_cells):
        cy, cx = (k // side + 0.5) * step, (k % side + 0.5) * step
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        image[2] += 0.8 * np.exp(-d2 / (2 * radius**2))
        image[0] += actin * np.exp(-d2 / (2 * (2.5 * radius) ** 2))
        image[1] += 0.3 * np.exp(-d2 / (2 * (2 * radius) ** 2)) * rng.random((SIZE, SIZE))
    return np.clip(image, 0, 1)


def test_segment_finds_each_nucleus_and_grows_cells_around_them():
    rng = np.random.default_rng(0)
    for n in (4, 9, 16):
        nuclei, cells = profile.segment(blobs(rng, n, 1.8, 0.5), ("actin", "mito", "nucleus"))
        assert nuclei.max() == n
        assert (cells >= nuclei).all() and (cells[nuclei > 0] == nuclei[nuclei > 0]).all()
        assert (cells > 0).sum() > (nuclei > 0).sum()


def test_an_empty_well_has_no_objects_and_no_crash():
    row = profile.measure_well(np.zeros((3, SIZE, SIZE)), ("actin", "mito", "nucleus"))
    assert row["cell_count"] == 0


def _plate(n_wells: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(4, 17, n_wells)
    actin = rng.uniform(0.2, 0.8, n_wells)
    images = np.stack([blobs(rng, int(c), 1.8, float(a)) for c, a in zip(counts, actin, strict=True)])
    wells = pd.DataFrame(
        {"plate": "p", "well": [f"W{i:02d}" for i in range(n_wells)],
         "role": ["negative_control"] * 6 + ["sample"] * (n_wells - 6)}
    )  # fmt: skip
    return images, wells, counts, actin


def test_profile_counts_cells_and_normalizes_to_the_negative_controls():
    images, wells, counts, actin = _plate()
    table = profile.profile_wells(images, wells, ("actin", "mito", "nucleus"))
    assert list(table.columns[:4]) == [*profile.META, profile.COUNT]
    np.testing.assert_array_equal(table.cell_count.to_numpy(), counts)
    feats = table[profile.feature_columns(table)].drop(columns=profile.COUNT)
    assert feats.notna().all().all() and len(feats.columns) > 50
    controls = feats[wells.role.eq("negative_control").to_numpy()]
    assert controls.median().abs().max() < 1e-6  # robust z to the controls: their median is 0
    # a measurement of actin intensity follows the actin the wells were drawn with
    col = [c for c in feats if c.startswith("Cells_actin_Intensity_MeanIntensity")][0]
    assert np.corrcoef(feats[col], actin)[0, 1] > 0.9


def test_profile_without_a_nucleus_channel_is_a_value_error():
    images, wells, _, _ = _plate(8)
    with pytest.raises(ValueError, match="'nucleus' channel"):
        profile.profile_wells(images, wells, ("actin", "mito", "dna"))


def test_fit_predict_sees_only_the_training_wells_and_finds_a_planted_feature():
    rng = np.random.default_rng(1)
    n = 120
    x = pd.DataFrame(rng.normal(size=(n, 30)), columns=[f"f{i}" for i in range(30)])
    y = (x.f3 + 0.3 * rng.normal(size=n) > 0.5).astype(int).to_numpy()
    train, test = np.arange(n) < 80, np.arange(n) >= 80
    prob = profile.fit_predict(x[train], y[train], x[test], seed=0)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[test], prob) > 0.9
    # the test wells' values never reach the fit: changing them changes nothing but their own predictions
    x2 = x.copy()
    x2.loc[test, :] = rng.normal(size=(int(test.sum()), 30))
    again = profile.fit_predict(x2[train], y[train], x[test], seed=0)
    np.testing.assert_allclose(prob, again)
    # and labels shuffled carry nothing
    noise = profile.fit_predict(x[train], rng.permutation(y[train]), x[test], seed=0)
    assert roc_auc_score(y[test], noise) < 0.8


def test_fit_predict_with_one_class_is_a_value_error():
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(10, 3)), columns=list("abc"))
    with pytest.raises(ValueError, match="one class"):
        profile.fit_predict(x, np.zeros(10, int), x, seed=0)


def _pycytominer_table(images, wells, channels):
    """The profile table as the stage made it before `Normalization`: pycytominer's `normalize` per plate."""
    import warnings

    from pycytominer import normalize

    raw = profile.measure(images, channels)
    raw = raw.loc[:, raw.notna().mean() >= 0.9]
    raw = raw.fillna(raw.median())
    features = [c for c in raw.columns if c != profile.COUNT]
    meta = wells[["plate", "well", "role"]].astype(str).reset_index(drop=True)
    controls = int((meta.role == "negative_control").sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return normalize(
            pd.concat([meta, raw[features]], axis=1),
            features=features,
            meta_features=profile.META,
            samples="role == 'negative_control'" if controls >= 3 else "all",
            method="mad_robustize" if controls >= 3 else "standardize",
            mad_robustize_epsilon=1e-6,
        )


@pytest.mark.parametrize("n_controls", [6, 2])
def test_the_kept_normalization_is_pycytominers_to_the_last_bit(n_controls):
    images, wells, _, _ = _plate(16)
    wells = wells.assign(role=["negative_control"] * n_controls + ["sample"] * (16 - n_controls))
    profiled = profile.profile_plates(images, wells, ("actin", "mito", "nucleus"))
    norm = profiled.normalization["p"]
    assert norm.method == ("mad_robustize" if n_controls == 6 else "standardize")
    assert norm.n_reference == (6 if n_controls == 6 else 16)
    reference = _pycytominer_table(images, wells, ("actin", "mito", "nucleus"))
    kept = profile.feature_columns(profiled.table)[1:]
    np.testing.assert_array_equal(profiled.table[kept].to_numpy(), reference[kept].to_numpy())
    # a served model normalizes one well's raw measurements with the plate's statistics: the same numbers
    raw = profile.measure(images[:3], ("actin", "mito", "nucleus"))
    again = profile.features_of(raw, norm)
    np.testing.assert_allclose(
        again[kept].to_numpy(), profiled.table[kept].to_numpy()[:3], rtol=0, atol=1e-12
    )


def test_fit_returns_a_model_whose_probabilities_are_fit_predicts_old_ones():
    """`fit_predict` answered with scikit-learn's pipeline; it now answers with the fitted `ProfileModel`
    (plain numbers, what a served model stores): the same probabilities."""
    import warnings

    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(2)
    x = pd.DataFrame(rng.normal(size=(90, 20)), columns=[f"f{i}" for i in range(20)])
    x["f19"] = x.f3 * 0.999 + 0.001 * rng.normal(size=90)  # dropped by the correlation filter
    y = (x.f3 - x.f7 + 0.5 * rng.normal(size=90) > 0).astype(int).to_numpy()
    model = profile.fit(x[:60], y[:60], seed=4)
    assert "f19" not in model.columns and len(model.columns) < 20
    old = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=np.logspace(-2, 1, 7), penalty="l1", solver="liblinear",
            cv=StratifiedKFold(3, shuffle=True, random_state=4), scoring="roc_auc",
            class_weight="balanced", max_iter=5000, random_state=4,
        ),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        old.fit(x[:60][list(model.columns)].to_numpy(), y[:60])
    want = old.predict_proba(x[60:][list(model.columns)].to_numpy())[:, 1]
    np.testing.assert_allclose(profile.fit_predict(x[:60], y[:60], x[60:], seed=4), want, rtol=0, atol=1e-12)
    again = profile.ProfileModel.from_dict(model.as_dict())  # through JSON-able numbers and back
    np.testing.assert_array_equal(again.predict_proba(x[60:]), model.predict_proba(x[60:]))
    with pytest.raises(ValueError, match=r"the profile model reads 1 columns these wells lack"):
        model.predict_proba(x[60:].drop(columns=[model.columns[0]]))


def test_measure_with_a_memo_measures_the_same_images_once(monkeypatch):
    images = _plate(6)[0][:4]
    channels = ("actin", "mito", "nucleus")
    memo, calls = {}, []
    real = profile.measure_well
    monkeypatch.setattr(profile, "measure_well", lambda *a: calls.append(1) or real(*a))
    first = profile.measure(images, channels, memo=memo)
    first.loc[0, profile.COUNT] = -1.0  # a caller's change does not reach the memo
    again = profile.measure(images, channels, memo=memo)
    assert len(calls) == 4 and again.loc[0, profile.COUNT] >= 0
    pd.testing.assert_frame_equal(again, profile.measure(images, channels))
    profile.measure(images[:2], channels, memo=memo)  # other images are measured
    assert len(calls) == 4 + 2 + 4


def test_measure_in_worker_processes_gives_the_same_table_to_the_last_bit():
    images = _plate(20, seed=3)[0]
    channels = ("actin", "mito", "nucleus")
    moved = []
    parallel = profile.measure(images, channels, progress=moved.append, workers=2)
    pd.testing.assert_frame_equal(parallel, profile.measure(images, channels), check_exact=True)
    assert sum(moved) == 20 and len(moved) == 3  # the bar moves by chunks of CHUNK wells
