"""wrangle: binarize, balance, the min_wells cut-off, and `wrangle()` on tiny plates read from disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CYTOKINES, TINY_WELLS

from cytoops import wrangle
from cytoops.params import WrangleParams
from cytoops.plate import read_data

NAN = float("nan")


def series(*values) -> pd.Series:
    return pd.Series(values, dtype=float)


def mask(*flags) -> pd.Series:
    return pd.Series(flags, dtype=bool)


# ---- binarize ---------------------------------------------------------------------------------------------


def test_binarize_threshold_is_strictly_greater_and_keeps_nan():
    out = wrangle.binarize(series(-1.0, 0.0, 0.5, NAN, 2.0), "threshold", 0.0)
    np.testing.assert_array_equal(out.to_numpy(), [0.0, 0.0, 1.0, NAN, 1.0])
    out = wrangle.binarize(series(0.5, 0.6, NAN), "threshold", 0.5)
    np.testing.assert_array_equal(out.to_numpy(), [0.0, 1.0, NAN])


def test_binarize_threshold_needs_no_negative_controls():
    out = wrangle.binarize(series(1.0, -1.0), "threshold", 0.0, negative=mask(False, False))
    np.testing.assert_array_equal(out.to_numpy(), [1.0, 0.0])


def test_binarize_fold_change_against_the_negative_control_median():
    # controls 1, 2, 3 -> median 2; log2(v / 2) > 1  <=>  v > 4
    values = series(1.0, 2.0, 3.0, 4.0, 4.1, 16.0, NAN)
    negative = mask(True, True, True, False, False, False, False)
    out = wrangle.binarize(values, "fold_change", 1.0, negative)
    np.testing.assert_array_equal(out.to_numpy(), [0, 0, 0, 0, 1, 1, NAN])
    # threshold 0: above the control median
    out = wrangle.binarize(values, "fold_change", 0.0, negative)
    np.testing.assert_array_equal(out.to_numpy(), [0, 0, 1, 1, 1, 1, NAN])


def test_binarize_robust_z_against_the_negative_controls():
    # controls 10, 12, 14, 20 -> median 13, |dev| 3, 1, 1, 7 -> MAD 2 -> scale 1.4826 * 2 = 2.9652
    values = series(10.0, 12.0, 14.0, 20.0, 18.0, 19.0, NAN)
    negative = mask(True, True, True, True, False, False, False)
    z = (values - 13.0) / 2.9652  # 18 -> 1.686, 19 -> 2.023, 20 -> 2.361
    out = wrangle.binarize(values, "robust_z", 2.0, negative)
    np.testing.assert_array_equal(out.to_numpy(), [0, 0, 0, 1, 0, 1, NAN])
    np.testing.assert_array_equal(out.dropna().to_numpy(), (z.dropna() > 2.0).astype(float).to_numpy())


def test_binarize_controls_with_missing_readouts_use_the_measured_ones():
    # control NaN is ignored: median of (1, 3) is 2
    out = wrangle.binarize(series(1.0, 3.0, NAN, 2.5), "fold_change", 0.0, mask(True, True, True, False))
    np.testing.assert_array_equal(out.to_numpy(), [0, 1, NAN, 1])


@pytest.mark.parametrize("method", ["fold_change", "robust_z"])
def test_binarize_without_negative_controls_is_a_value_error(method):
    with pytest.raises(ValueError, match="needs negative_control wells"):
        wrangle.binarize(series(1.0, 2.0), method, 0.0, mask(False, False))
    with pytest.raises(ValueError, match="needs negative_control wells"):
        wrangle.binarize(series(1.0, 2.0), method, 0.0, None)


def test_binarize_with_unmeasured_negative_controls_is_a_value_error():
    with pytest.raises(ValueError, match="no measured negative-control wells"):
        wrangle.binarize(series(NAN, 2.0), "robust_z", 0.0, mask(True, False))


def test_binarize_robust_z_with_zero_mad_is_a_value_error():
    with pytest.raises(ValueError, match=r"MAD = 0"):
        wrangle.binarize(series(5.0, 5.0, 5.0, 9.0), "robust_z", 0.0, mask(True, True, True, False))


def test_binarize_fold_change_with_non_positive_readouts_is_a_value_error():
    with pytest.raises(ValueError, match="fold_change needs positive raw readouts"):
        wrangle.binarize(series(1.0, 2.0, -0.5), "fold_change", 0.0, mask(True, True, False))


# ---- balance ----------------------------------------------------------------------------------------------


def labels_with(n_pos: int, n_neg: int, n_nan: int = 0, start: int = 100) -> pd.Series:
    values = [1.0] * n_pos + [0.0] * n_neg + [NAN] * n_nan
    order = np.random.default_rng(0).permutation(len(values))
    return pd.Series(np.array(values)[order], index=pd.RangeIndex(start, start + len(values)))


def test_balance_gives_equal_classes_and_keeps_every_minority_well():
    y = labels_with(4, 11, n_nan=3)
    kept = wrangle.balance(y, np.random.default_rng(0))
    assert (y[kept] == 1).sum() == (y[kept] == 0).sum() == 4
    assert set(y.index[y == 1]) <= set(kept)


def test_balance_never_invents_wells_and_drops_missing_labels():
    y = labels_with(9, 5, n_nan=4)
    kept = wrangle.balance(y, np.random.default_rng(3))
    assert set(kept) <= set(y.index)
    assert kept.is_unique
    assert y[kept].notna().all()
    assert len(kept) == 10


def test_balance_is_seeded():
    y = labels_with(5, 40)
    first = wrangle.balance(y, np.random.default_rng(7))
    again = wrangle.balance(y, np.random.default_rng(7))
    assert list(first) == list(again)
    others = [list(wrangle.balance(y, np.random.default_rng(seed))) for seed in range(8, 18)]
    assert any(o != list(first) for o in others)


def test_balance_with_one_class_keeps_nothing():
    assert len(wrangle.balance(labels_with(0, 6), np.random.default_rng(0))) == 0


# ---- wrangle() on plates read from disk -------------------------------------------------------------------


def read(data_dir):
    return read_data(data_dir, image_size=32)


def cells_for(columns: dict[str, list[str]]) -> dict[tuple[str, str], str]:
    return {
        (well, name): text
        for name, texts in columns.items()
        for well, text in zip(TINY_WELLS, texts, strict=True)
    }


def test_wrangle_aligns_wells_images_and_labels(tiny_plate):
    # A02 has an image but no readouts: it is left out, so row i of the table is not image i of the plate
    plates = read(tiny_plate(no_readouts=("A02",)))
    plate = plates[0]
    w = wrangle.wrangle(plates, WrangleParams(image_size=32, min_wells=2))
    usable = [well for well in TINY_WELLS if well != "A02"]
    assert list(w.wells.well) == usable
    assert w.images.shape == (7, 3, 32, 32) and w.images.dtype == np.float32
    assert w.channels == ("actin", "mito", "nucleus")
    scaled = wrangle.normalize_images(plate.images)
    for i, well in enumerate(w.wells.well):
        np.testing.assert_array_equal(w.images[i], scaled[plate.wells.index(well)])
    assert set(w.labels.cytokine) == set(TINY_CYTOKINES)
    for row in w.labels.itertuples():
        well = w.wells.well.iloc[row.well_index]
        assert row.value == pytest.approx(plate.readouts.loc[well, row.cytokine])
        assert row.label == int(row.value > 0.0)
    assert len(w.embeddings) == len(w.wells)
    assert list(w.cytokines.cytokine) == list(TINY_CYTOKINES)


def test_wrangle_groups_come_from_the_layout(tiny_plate):
    w = wrangle.wrangle(read(tiny_plate()), WrangleParams(image_size=32, min_wells=2))
    groups = dict(zip(w.wells.well, w.wells.group, strict=True))
    assert groups["A01"] == groups["A02"] == "treatment:DMSO"
    assert groups["A03"] == groups["A04"] == "treatment:LPS"
    assert groups["B01"] == groups["B02"] == "treatment:drug-a"
    assert w.wells.group.nunique() == 4
    assert list(w.wells.role[:4]) == ["negative_control"] * 2 + ["positive_control"] * 2


def test_wrangle_without_layout_makes_every_well_its_own_group(tiny_plate):
    w = wrangle.wrangle(read(tiny_plate(layout=False)), WrangleParams(image_size=32, min_wells=2))
    assert list(w.wells.group) == [f"well:plate-1/{well}" for well in TINY_WELLS]
    assert w.wells.group.is_unique
    assert (w.wells.role == "sample").all()
    assert w.wells.treatment.isna().all()


def test_wrangle_min_wells_keeps_and_drops_with_counts_and_a_reason(tiny_plate):
    cells = cells_for(
        {
            "IL-6": ["1", "1", "1", "1", "-1", "-1", "-1", "-1"],  # 4 + 4 -> 8 balanced
            "TNF-α": ["1", "-1", "-1", "-1", "-1", "-1", "-1", "-1"],  # 1 + 7 -> 2 balanced
            "IL-12p40/p70": ["1", "1", "1", "-1", "-1", "-1", "-1", ""],  # 3 + 4, one missing -> 6
        }
    )
    w = wrangle.wrangle(read(tiny_plate(cells=cells)), WrangleParams(image_size=32, min_wells=6))
    c = w.cytokines.set_index("cytokine")
    assert c.loc["IL-6", ["n_measured", "n_pos", "n_neg", "n_balanced"]].tolist() == [8, 4, 4, 8]
    assert c.loc["TNF-α", ["n_measured", "n_pos", "n_neg", "n_balanced"]].tolist() == [8, 1, 7, 2]
    assert c.loc["IL-12p40/p70", ["n_measured", "n_pos", "n_neg", "n_balanced"]].tolist() == [7, 3, 4, 6]
    assert c.kept.to_dict() == {"IL-6": True, "TNF-α": False, "IL-12p40/p70": True}
    assert c.loc["TNF-α", "reason"] == "2 balanced wells < min_wells 6 (1 responders, 7 not)"
    assert c.loc["IL-6", "reason"] == c.loc["IL-12p40/p70", "reason"] == ""
    # the labels say which wells the balancing kept, class-balanced
    for name, n in [("IL-6", 8), ("TNF-α", 2), ("IL-12p40/p70", 6)]:
        rows = w.labels[(w.labels.cytokine == name) & w.labels.balanced]
        assert len(rows) == n and rows.label.sum() == n // 2
    assert len(w.labels[w.labels.cytokine == "IL-12p40/p70"]) == 7  # the missing readout has no label row


def test_wrangle_min_wells_boundary_is_inclusive(tiny_plate):
    cells = cells_for({name: ["1", "1", "1", "-1", "-1", "-1", "-1", "-1"] for name in TINY_CYTOKINES})
    data = tiny_plate(cells=cells)  # 3 + 5 -> 6 balanced wells each
    assert wrangle.wrangle(read(data), WrangleParams(image_size=32, min_wells=6)).cytokines.kept.all()
    assert not wrangle.wrangle(read(data), WrangleParams(image_size=32, min_wells=7)).cytokines.kept.any()


def test_wrangle_drops_a_cytokine_that_cannot_be_binarized_and_keeps_the_others(tiny_plate):
    # robust_z against the DMSO wells A01, A02: IL-6's two controls read the same -> MAD 0
    cells = cells_for(
        {
            "IL-6": ["5", "5", "9", "9", "1", "9", "1", "9"],
            "TNF-α": ["4", "6", "9", "9", "1", "9", "1", "1"],
            "IL-12p40/p70": ["2", "4", "8", "8", "0", "8", "0", "0"],
        }
    )
    w = wrangle.wrangle(
        read(tiny_plate(cells=cells)), WrangleParams(image_size=32, method="robust_z", min_wells=2)
    )
    c = w.cytokines.set_index("cytokine")
    assert not c.loc["IL-6", "kept"]
    assert "MAD = 0" in c.loc["IL-6", "reason"]
    assert c.loc["IL-6", "n_balanced"] == 0
    assert c.loc["TNF-α", "kept"] and c.loc["IL-12p40/p70", "kept"]
    assert "IL-6" not in set(w.labels.cytokine)
    # TNF-α: median 5, MAD 1 -> z > 0 for 6, 9, 9, 9: 4 responders, 4 not
    assert c.loc["TNF-α", ["n_pos", "n_neg", "n_balanced"]].tolist() == [4, 4, 8]


def test_wrangle_fold_change_uses_the_layout_negative_controls(tiny_plate):
    cells = cells_for({name: ["1", "1", "4", "4", "1", "4", "1", "1"] for name in TINY_CYTOKINES})
    w = wrangle.wrangle(
        read(tiny_plate(cells=cells)), WrangleParams(image_size=32, method="fold_change", threshold=1.0)
    )
    labels = w.labels[w.labels.cytokine == "IL-6"].sort_values("well_index")
    assert labels.label.tolist() == [0, 0, 1, 1, 0, 1, 0, 0]  # log2(4 / 1) = 2 > 1


def test_wrangle_fold_change_without_a_layout_drops_every_cytokine_with_the_reason(tiny_plate):
    w = wrangle.wrangle(read(tiny_plate(layout=False)), WrangleParams(image_size=32, method="fold_change"))
    assert not w.cytokines.kept.any()
    assert w.cytokines.reason.str.contains("needs negative_control wells").all()
    assert len(w.labels) == 0


def test_wrangle_balancing_is_seeded_by_params(tiny_plate):
    cells = cells_for({name: ["1", "-1", "-1", "-1", "-1", "-1", "-1", "-1"] for name in TINY_CYTOKINES})
    plates = read(tiny_plate(cells=cells))
    picks = [
        tuple(wrangle.wrangle(plates, WrangleParams(image_size=32, min_wells=2, seed=s)).labels.balanced)
        for s in (1, 1, *range(2, 12))
    ]
    assert picks[0] == picks[1]
    assert len(set(picks)) > 1


def test_wrangle_two_plates_stack_in_order(tiny_plate):
    tiny_plate(plate_id="plate-1", seed=0)
    data = tiny_plate(plate_id="plate-2", seed=1)
    w = wrangle.wrangle(read(data), WrangleParams(image_size=32, min_wells=2))
    assert list(w.wells.plate) == ["plate-1"] * 8 + ["plate-2"] * 8
    assert w.images.shape[0] == len(w.wells) == 16
    assert w.labels.well_index.max() == 15


def test_wrangle_with_no_plates_is_a_value_error():
    with pytest.raises(ValueError, match="no plates"):
        wrangle.wrangle([], WrangleParams())


def test_save_and_load_round_trip(tiny_plate, tmp_path):
    w = wrangle.wrangle(read(tiny_plate()), WrangleParams(image_size=32, min_wells=2))
    wrangle.save(w, tmp_path / "out")
    back = wrangle.load(tmp_path / "out")
    np.testing.assert_array_equal(back.images, w.images)
    assert back.channels == w.channels
    assert list(back.wells.well) == list(w.wells.well)
    assert list(back.wells.group) == list(w.wells.group)
    pd.testing.assert_frame_equal(back.labels, w.labels, check_dtype=False)
    assert list(back.cytokines.kept) == list(w.cytokines.kept)


def test_save_and_load_round_trip_without_embeddings(tiny_plate, tmp_path):
    w = wrangle.run(tiny_plate(embeddings=False), tmp_path / "out", WrangleParams(image_size=32, min_wells=2))
    assert w.embeddings.shape == (8, 0)
    back = wrangle.load(tmp_path / "out")
    assert back.embeddings.shape == (8, 0)
    assert list(back.wells.well) == list(w.wells.well)


# ---- identifiers stay strings between stages (issue 14) ---------------------------------------------------


def test_cytokines_named_like_missing_values_and_numeric_plate_ids_survive_a_round_trip(tiny_plate, tmp_path):
    from cytoops import dataset

    names = ("NA", "None", "NULL")
    tiny_plate(plate_id="001", cytokines=names, seed=1)
    data = tiny_plate(plate_id="1", cytokines=names, seed=2)
    w = wrangle.run(data, tmp_path / "w", WrangleParams(min_wells=2))
    back = wrangle.load(tmp_path / "w")
    assert sorted(set(back.wells.plate)) == ["001", "1"]  # two plates, not one plate 1
    assert set(back.labels.cytokine) == set(names)
    assert list(back.cytokines.cytokine) == list(names)
    assert wrangle.kept_cytokines(back.cytokines) == wrangle.kept_cytokines(w.cytokines)
    assert back.wells.group.nunique() == w.wells.group.nunique()
    # every kept cytokine has its labels when train reads the stage back
    (tmp_path / "views.npz").parent.mkdir(exist_ok=True)
    from cytoops import augment
    from cytoops.params import Params, TrainParams

    augment.save(augment.make_bank(w.images, ("none",)), tmp_path / "views.npz")
    p = Params(train=TrainParams(architectures=("wide_cnn",)))
    inputs = dataset.load_inputs(tmp_path / "w", tmp_path / "views.npz", None, p)
    assert inputs.kept and set(inputs.kept) <= set(inputs.labels.cytokine)


@pytest.mark.parametrize("where", ["out", "out/sub"])
def test_wrangle_into_a_file_is_one_line_naming_it(tiny_plate, tmp_path, where):
    from pathlib import Path

    from typer.testing import CliRunner

    from cytoops import cli

    data_dir = tiny_plate()
    (tmp_path / "out").write_text("a file, not a folder")
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    args = ["wrangle", "--data", str(data_dir), "--out", str(tmp_path / where), "--params", str(params)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    [line] = result.output.splitlines()
    assert (
        line.startswith(f"error: {tmp_path / 'out'}: is a file where a folder is needed") and "fix: " in line
    )
