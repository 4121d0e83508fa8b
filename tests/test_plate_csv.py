"""The plate's CSV files: cytokines.csv (numbers, missing cells, range flags), layout.csv, exports' quirks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_WELLS as WELLS
from conftest import invoke_validate, plate_of, read, replace_in

from cytoops.plate import check_data


def test_well_header_is_case_insensitive(tiny_plate):
    data_dir = tiny_plate()
    replace_in(plate_of(data_dir) / "cytokines.csv", "well,", "Well,")
    replace_in(plate_of(data_dir) / "layout.csv", "well,", "WELL,")
    assert read(data_dir).usable_wells == WELLS


def test_range_flags_sit_beyond_the_measured_values(tiny_plate):
    cells = {(well, "IL-6"): value for well, value in zip(WELLS[:4], ["1", "3", "*2", ""], strict=True)}
    cells |= {
        ("B01", "IL-6"): "OOR <",
        ("B02", "IL-6"): "<LLOQ",
        ("B03", "IL-6"): "OOR >",
        ("B04", "IL-6"): ">ULOQ",
    }
    plate = read(tiny_plate(cells=cells))
    il6 = plate.readouts["IL-6"]
    # measured 1, 3, 2 (extrapolated *2 counts): lo 1, hi 3, span 2
    assert il6[["B01", "B02"]].tolist() == pytest.approx([0.9, 0.9])
    assert il6[["B03", "B04"]].tolist() == pytest.approx([3.1, 3.1])
    assert il6["A03"] == 2.0 and np.isnan(il6["A04"])


def test_range_flags_without_measured_values(tiny_plate):
    cells = {(well, "IL-6"): "NA" for well in WELLS}
    cells |= {("A01", "IL-6"): "oor<", ("A02", "IL-6"): "OOR >"}
    il6 = read(tiny_plate(cells=cells)).readouts["IL-6"]
    assert il6["A01"] == pytest.approx(-0.05) and il6["A02"] == pytest.approx(0.05)


def test_range_flags_with_one_measured_value(tiny_plate):
    cells = {(well, "IL-6"): "" for well in WELLS} | {("A01", "IL-6"): "2", ("A02", "IL-6"): ">ULOQ"}
    assert read(tiny_plate(cells=cells)).readouts.loc["A02", "IL-6"] == pytest.approx(2.05)  # span 1.0


@pytest.mark.parametrize("text", ["", "NA", "na", "NaN", "nan", "n/a", "N/A", "  "])
def test_missing_cells(tiny_plate, text):
    plate = read(tiny_plate(cells={("B02", "TNF-α"): text}))
    assert np.isnan(plate.readouts.loc["B02", "TNF-α"])
    assert plate.readouts.isna().to_numpy().sum() == 1
    assert "B02" in plate.usable_wells  # missing for that cytokine only


@pytest.mark.parametrize(("text", "value"), [("*12.3", 12.3), ("* 7", 7.0), ("-1e-2", -0.01), (".5", 0.5)])
def test_numbers_and_extrapolated_values(tiny_plate, text, value):
    assert read(tiny_plate(cells={("A01", "IL-6"): text})).readouts.loc["A01", "IL-6"] == pytest.approx(value)


def test_plate_column_equal_to_the_folder(tiny_plate):
    plate = read(tiny_plate(plate_column=True))
    assert list(plate.readouts.columns) == ["IL-6", "TNF-α", "IL-12p40/p70"]


def test_forgiving_csv_exports(tiny_plate):
    data_dir = tiny_plate()
    cytokines = plate_of(data_dir) / "cytokines.csv"
    lines = cytokines.read_text(encoding="utf-8").splitlines()
    text = "\r\n".join([lines[0] + ","] + [line + "," for line in lines[1:]] + [",,,,", ""])
    cytokines.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # BOM, CRLF, empty trailing column and row
    replace_in(plate_of(data_dir) / "layout.csv", "negative_control", "Negative control")
    plate = read(data_dir)
    assert list(plate.readouts.columns) == ["IL-6", "TNF-α", "IL-12p40/p70"]
    assert plate.layout.loc["A01", "role"] == "negative_control"


def test_layout_extras_and_no_treatment(tiny_plate):
    data_dir = tiny_plate()
    (plate_of(data_dir) / "layout.csv").write_text("well,replicate\n" + "".join(f"{w},1\n" for w in WELLS))
    plate = read(data_dir)
    assert plate.layout["treatment"].tolist() == list(WELLS)  # each well its own group
    assert plate.layout["role"].eq("sample").all() and plate.layout["concentration"].isna().all()
    assert plate.layout["replicate"].tolist() == ["1"] * 8
    [warning] = plate.warnings
    assert "no 'treatment' column" in warning.what


# --- one compound, two spellings (issue 19) ----------------------------------------------------------------


def write_layout(data_dir, treatments: dict[str, str], plate_id: str = "plate-1") -> None:
    rows = "".join(f"{well},{treatments.get(well, 'DMSO')},,sample\n" for well in WELLS)
    (plate_of(data_dir, plate_id) / "layout.csv").write_text("well,treatment,concentration,role\n" + rows)


def test_treatments_that_differ_only_in_case_spaces_or_punctuation_are_a_warning(tiny_plate):
    data_dir = tiny_plate()
    spelled = {"A01": "CPD-007", "A02": "CPD-007", "A03": "CPD-007", "A04": "CPD-007", "B01": "CPD-007"}
    write_layout(data_dir, spelled | {"B02": "CPD 007", "B03": "cpd_007", "B04": "CPD-008"})
    result = invoke_validate(data_dir)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "differ only in case" in line]
    assert warned == [
        f"warning: {plate_of(data_dir) / 'layout.csv'}: column 'treatment': treatments 'CPD-007' "
        "(wells A01, A02, A03 +2 more), 'CPD 007' (well B02) and 'cpd_007' (well B03) differ only in case, "
        "spaces or punctuation: folds keep them apart; fix: spell each compound one way in every well "
        "(or rename one, if they are different compounds)"
    ]
    assert result.output.splitlines()[-1].endswith("usable: 1 plate(s), 1 warning(s)")


def test_treatment_spellings_are_compared_across_plates(tiny_plate):
    tiny_plate(plate_id="plate-1")
    data_dir = tiny_plate(plate_id="plate-2", seed=1)
    write_layout(data_dir, {"A01": "LPS"}, plate_id="plate-1")
    write_layout(data_dir, {"B01": "lps", "B02": "lps"}, plate_id="plate-2")
    _, problems = check_data(data_dir)
    [warning] = [p for p in problems if "differ only in case" in p.what]
    assert warning.file == str(data_dir) and warning.level == "warning"
    assert "'LPS' (well plate-1/A01) and 'lps' (wells plate-2/B01, plate-2/B02)" in warning.what
    write_layout(data_dir, {"B01": "LPS", "B02": "LPS"}, plate_id="plate-2")
    assert not [p for p in check_data(data_dir)[1] if "differ only in case" in p.what]


# --- files that are not files ------------------------------------------------------------------------------


def test_a_pipe_in_place_of_a_csv_is_said_to_be_one_and_never_opened(tiny_plate):
    data_dir = tiny_plate()
    layout = plate_of(data_dir) / "layout.csv"
    layout.unlink()
    os.mkfifo(layout)  # opening it would wait for a writer forever: run in a process with a time limit
    code = "from cytoops.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", code, "validate", str(data_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: {layout}: is a named pipe (FIFO), not a regular file; fix: " in result.stdout
