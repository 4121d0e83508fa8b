"""verdict.transfer: the leave-one-plate-out estimate, on hand-made plates, through wrangle and the stage."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cytoops import augment, dataset, profile, train, wrangle
from cytoops import params as params_mod
from cytoops.plate import read_data
from cytoops.verdict import baselines, stage, transfer

VP = params_mod.VerdictParams(n_boot=200, seed=7)


def _plates(n_plates: int, wells_per_plate: int = 96, seed: int = 0):
    """(wells, labels, features) of n plates, treatment groups of 4 wells. Cytokines: `planted` (feature
    `signal` = label + noise on every plate), `noise` (a coin per treatment, unrelated to anything),
    `plate_specific` (the signal's sign flips on the last plate: it holds within each plate, not across)."""
    rng = np.random.default_rng(seed)
    n = n_plates * wells_per_plate
    plate = np.repeat([f"p{i}" for i in range(n_plates)], wells_per_plate)
    local = np.tile(np.arange(wells_per_plate), n_plates)
    rows, cols = local // 12, local % 12
    treatment = local // 4
    wells = pd.DataFrame(
        {"plate": plate, "well": [f"{chr(65 + r)}{c + 1:02d}" for r, c in zip(rows, cols, strict=True)],
         "row": rows, "col": cols, "edge": (rows == 0) | (cols == 0) | (rows == 7) | (cols == 11),
         "group": [f"treatment:t{t}" for t in treatment]}
    )  # fmt: skip
    coin = lambda: rng.permutation(np.repeat([0, 1], wells_per_plate // 8))[treatment]  # noqa: E731
    planted = np.concatenate([coin()[:wells_per_plate] for _ in range(n_plates)])
    noise = np.concatenate([coin()[:wells_per_plate] for _ in range(n_plates)])
    specific = np.concatenate([coin()[:wells_per_plate] for _ in range(n_plates)])
    flip = np.where(plate == plate[-1], -1.0, 1.0)
    labels = pd.concat(
        [pd.DataFrame({"cytokine": name, "slug": name, "well_index": np.arange(n), "value": y, "label": y,
                       "balanced": True})
         for name, y in (("planted", planted), ("noise", noise), ("plate_specific", specific))],
        ignore_index=True,
    )  # fmt: skip
    table = pd.DataFrame(
        {
            "plate": plate,
            "well": wells.well,
            "role": "sample",
            "cell_count": rng.poisson(20, n).astype(float),
            "signal": planted + 0.5 * rng.normal(size=n),
            "specific": flip * (2 * specific - 1) + 0.5 * rng.normal(size=n),
            **{f"junk_{k}": rng.normal(size=n) for k in range(4)},
        }
    )
    features = {
        "prevalence": None,
        "position": baselines.position_features(wells),
        "cell_count": table[["cell_count"]],
    }
    return wells, labels, transfer.refit_features(features, table)


NO_TRAINER = pd.DataFrame(columns=["cytokine", "architecture"])


def test_splits_hold_out_each_plate_whole():
    out = transfer.splits(np.array(["a", "b", "a", "c", "b"]))
    assert [p for p, _, _ in out] == ["a", "b", "c"]
    for plate, trn, tst in out:
        assert set(tst) == {i for i, p in enumerate("abacb") if p == plate}
        assert set(trn) == set(range(5)) - set(tst)


def test_no_held_out_plate_well_is_in_its_own_training_set(monkeypatch):
    wells, labels, features = _plates(3, 48)
    seen = []
    real_base, real_profile = baselines.fit_predict, profile.fit_predict

    def spy_base(x_train, y_train, x_test):
        seen.append(("base", x_train[:, 0].copy(), x_test[:, 0].copy()))
        return real_base(x_train, y_train, x_test)

    def spy_profile(x_train, y_train, x_test, seed):
        seen.append(("profile", x_train.index.to_numpy(), x_test.index.to_numpy()))
        return real_profile(x_train, y_train, x_test, seed)

    monkeypatch.setattr(baselines, "fit_predict", spy_base)
    monkeypatch.setattr(profile, "fit_predict", spy_profile)
    ids = pd.DataFrame({"well_id": np.arange(len(wells), dtype=float)})  # column 0 names the well
    feats = {"prevalence": None, "position": ids, "profile": features["profile"]}
    preds, missing = transfer.predictions(wells, labels, ["planted", "noise"], feats, VP.seed)
    assert missing.empty
    assert {kind for kind, _, _ in seen} == {"base", "profile"} and len(seen) == 2 * 3 * 2
    plate = wells.plate.to_numpy()
    for _, trained_on, tested_on in seen:
        trained_on, tested_on = trained_on.astype(int), tested_on.astype(int)
        held_out = set(plate[tested_on])
        assert len(held_out) == 1  # one plate is tested at a time ...
        assert not held_out & set(plate[trained_on])  # ... and none of its wells is trained on
        assert set(trained_on) | set(tested_on) == set(range(len(wells)))  # every other labelled well is
    # every labelled well is predicted once per predictor, by a fit that never saw its plate
    per = preds.groupby(["cytokine", "architecture"]).well_index.agg(lambda s: sorted(s))
    assert all(v == list(range(len(wells))) for v in per)
    assert (preds.plate.to_numpy() == plate[preds.well_index]).all()


def test_a_planted_signal_holds_on_another_plate_noise_does_not():
    wells, labels, features = _plates(3)
    lopo = transfer.leave_one_plate_out(
        wells, labels, ["planted", "noise", "plate_specific"], features, NO_TRAINER, VP
    )
    pooled = lopo[lopo.held_out_plate == transfer.POOLED].set_index(["cytokine", "predictor"])
    planted = pooled.loc[("planted", "profile/none")]
    assert planted.roc_auc > 0.9 and planted.lo > 0.8 and planted.n_wells == 288
    noise = pooled.loc[("noise", "profile/none")]
    assert abs(noise.roc_auc - 0.5) < 0.1 and noise.lo < 0.5 < noise.hi
    for name in ("cell_count/none", "position/none"):  # neither sees the planted signal
        assert abs(pooled.loc[("planted", name)].roc_auc - 0.5) < 0.12
    assert pooled.loc[("planted", "prevalence/none")].roc_auc == 0.5
    # a signal whose sign flips on the last plate: what the first two teach is wrong there, and the pooled
    # estimate (the mean over held-out plates) says it does not hold on another plate
    per_plate = lopo[(lopo.cytokine == "plate_specific") & (lopo.predictor == "profile/none")]
    per_plate = per_plate.set_index("held_out_plate").roc_auc
    assert per_plate["p2"] < 0.2
    lopo_specific = pooled.loc[("plate_specific", "profile/none")].roc_auc
    assert lopo_specific < 0.5
    assert lopo_specific == pytest.approx(per_plate[["p0", "p1", "p2"]].mean())
    # every interval is around its estimate, and the rows are the documented table
    assert list(lopo.columns) == transfer.COLUMNS
    assert ((lopo.lo <= lopo.roc_auc + 1e-9) & (lopo.roc_auc <= lopo.hi + 1e-9)).all()


def test_the_trainers_families_are_noted_not_left_out():
    wells, labels, features = _plates(2, 48)
    trained = pd.DataFrame(
        {
            "cytokine": "planted",
            "architecture": ["wide_cnn", "deep_cnn", "vit_linear", "multitask_cnn", "profile"],
        }
    )
    lopo = transfer.leave_one_plate_out(wells, labels, ["planted"], features, trained, VP)
    notes = lopo[lopo.note == transfer.NOT_RETRAINED]
    assert sorted(notes.family) == ["multitask CNN", "study CNN", "study ViT"]  # one row per family
    assert notes.roc_auc.isna().all() and (notes.held_out_plate == transfer.POOLED).all()
    assert "profile/none" in set(lopo.predictor)  # the profile is refit, not noted
    no_table = transfer.leave_one_plate_out(wells, labels, ["planted"], {"prevalence": None}, trained, VP)
    assert no_table.set_index("family").loc["profile", "note"] == transfer.NO_PROFILE_TABLE


def test_training_plates_with_one_class_are_said_not_fitted():
    wells, labels, features = _plates(2, 48)
    labels = labels[labels.cytokine == "planted"].copy()
    on_p0 = wells.plate.to_numpy()[labels.well_index] == "p0"
    labels.loc[on_p0, "label"] = 1  # p0's wells all respond: holding out p1 leaves one class to train on
    lopo = transfer.leave_one_plate_out(wells, labels, ["planted"], features, NO_TRAINER, VP)
    held_p1 = lopo[lopo.held_out_plate == "p1"]
    assert held_p1.roc_auc.isna().all() and (held_p1.note.str.contains("one class: not fitted")).all()
    held_p0 = lopo[lopo.held_out_plate == "p0"]  # p0 holds one class itself: nothing to score on it
    assert held_p0.roc_auc.isna().all() and (held_p0.note.str.contains("one class: no AUC")).all()
    assert len(held_p0) == len(held_p1) == len(features) and transfer.POOLED not in set(lopo.held_out_plate)


def test_one_plate_gives_no_estimate_and_leaves_the_table_as_it_was():
    wells, labels, features = _plates(1)
    lopo = transfer.leave_one_plate_out(wells, labels, ["planted"], features, NO_TRAINER, VP)
    assert lopo.empty and list(lopo.columns) == transfer.COLUMNS
    table = pd.DataFrame({"cytokine": ["planted"], "best_predictor": ["profile/none"], "roc_auc": [0.9]})
    out = transfer.attach(table, lopo)
    pd.testing.assert_frame_equal(out[table.columns], table)
    assert out[transfer.TABLE_COLUMNS].isna().all().all()
    assert list(transfer.attach(pd.DataFrame(), lopo).columns) == transfer.TABLE_COLUMNS  # nothing kept


def test_attach_takes_the_pooled_row_of_the_best_predictor_only():
    lopo = pd.DataFrame(
        [("a", "profile", "profile/none", "p0", 10, 0.9, 0.8, 1.0, ""),
         ("a", "profile", "profile/none", transfer.POOLED, 20, 0.85, 0.7, 0.95, ""),
         ("b", "profile", "profile/none", transfer.POOLED, 20, 0.6, 0.5, 0.7, ""),
         ("b", "study CNN", "", transfer.POOLED, np.nan, np.nan, np.nan, np.nan, transfer.NOT_RETRAINED)],
        columns=transfer.COLUMNS,
    )  # fmt: skip
    table = pd.DataFrame(
        {"cytokine": ["a", "b", "c"], "best_predictor": ["profile/none", "wide_cnn/flips", np.nan]}
    )
    out = transfer.attach(table, lopo).set_index("cytokine")
    assert out.loc["a", transfer.TABLE_COLUMNS].tolist() == [0.85, 0.7, 0.95]
    assert out.loc[["b", "c"], transfer.TABLE_COLUMNS].isna().all().all()  # a CNN is not refit per plate


def test_the_verdict_imports_no_trainer():
    code = "import sys, cytoops.verdict.stage, cytoops.report; print('cytoops.train' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- two plates on disk, through wrangle, train's profile model and the verdict stage --------------------


def _cheap_profile(w: wrangle.Wrangled) -> pd.DataFrame:
    """A profile-shaped table (META, cell_count, features) without segmentation: per-channel well means."""
    table = w.wells[["plate", "well", "role"]].astype(str).reset_index(drop=True)
    table["cell_count"] = [float(baselines.count_nuclei(im[w.channels.index("nucleus")])) for im in w.images]
    for k, channel in enumerate(w.channels):
        table[f"well_mean_{channel}"] = w.images[:, k].mean(axis=(1, 2))
        table[f"well_sd_{channel}"] = w.images[:, k].std(axis=(1, 2))
    return table


def test_two_plates_through_wrangle_and_the_verdict_stage(wide_plate, tmp_path):
    wide_plate(plate_id="plate-1", seed=0, treatments=24, replicates=2)
    data = wide_plate(plate_id="plate-2", seed=1, treatments=24, replicates=2)
    p = params_mod.from_dict(
        {"wrangle": {"image_size": 32}, "augment": {"strategies": ["none"]},
         "train": {"architectures": ["profile"], "workers": 1}, "verdict": {"n_perm": 199, "n_boot": 200}}
    )  # fmt: skip
    w = wrangle.wrangle(read_data(data, image_size=32), p.wrangle)
    # wrangle keeps both plates' wells in one table, each labelled on its own plate
    assert w.wells.plate.value_counts().to_dict() == {"plate-1": 48, "plate-2": 48}
    il6 = w.labels[w.labels.cytokine == "IL-6"]
    assert set(w.wells.plate[il6.well_index]) == {"plate-1", "plate-2"}
    table = _cheap_profile(w)
    inputs = dataset.make_inputs(w, augment.make_bank(w.images, ("none",)), None, table, p)
    result = train.cross_validate(inputs, p.train, progress=False)
    v = stage.compute(w, result, p, table)
    reports = tmp_path / "reports"
    stage.save(v, reports, None)
    from cytoops import report

    page = report.write(v, reports).read_text(encoding="utf-8")
    lopo = pd.read_csv(reports / "verdict" / "leave_one_plate_out.csv", keep_default_na=False, na_values=[""])
    assert list(lopo.columns) == transfer.COLUMNS
    assert set(lopo.held_out_plate) == {"plate-1", "plate-2", transfer.POOLED}
    pooled = lopo[lopo.held_out_plate == transfer.POOLED].set_index(["cytokine", "predictor"])
    # IL-6's responders have a brighter actin channel on both plates: a profile fit on one sees the other
    assert pooled.loc[("IL-6", "profile/none"), "roc_auc"] > 0.9
    assert pooled.loc[("IL-6", "profile/none"), "n_wells"] == 96
    assert abs(pooled.loc[("TNF-α", "profile/none"), "roc_auc"] - 0.5) < 0.2  # TNF-α is noise
    predictable = pd.read_csv(reports / "predictable.csv").set_index("cytokine")
    best = predictable.loc["IL-6"]
    assert best.best_predictor == "profile/none"
    assert best.lopo_roc_auc == pytest.approx(pooled.loc[("IL-6", "profile/none"), "roc_auc"])
    assert best.lopo_lo <= best.lopo_roc_auc <= best.lopo_hi
    assert "AUC on another plate</th>" in page and "(2 plates," in page
    assert any("leave one plate out, 2 plates" in line for line in stage.summary_lines(v, p.verdict.alpha))
