"""The raw-plate reader against PLATE_FORMAT.md: every accepted variant, every error kind, `validate`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import typer
from typer.testing import CliRunner

from cytoops.plate import (
    Plate,
    PlateError,
    Problem,
    canonical_well,
    check_data,
    read_data,
    read_plate,
    slugify,
    validate_command,
    well_row_col,
)

WELLS = ("A01", "A02", "A03", "A04", "B01", "B02", "B03", "B04")


def plate_of(data_dir: Path, plate_id: str = "plate-1") -> Path:
    return data_dir / plate_id


def read(data_dir: Path, **options) -> Plate:
    return read_plate(plate_of(data_dir), **options)


def write_image(plate: Path, name: str, array: np.ndarray) -> None:
    tifffile.imwrite(plate / "images" / name, array, photometric="minisblack")


def replace_in(file: Path, old: str, new: str) -> None:
    text = file.read_text(encoding="utf-8")
    assert old in text
    file.write_text(text.replace(old, new, 1), encoding="utf-8")


def append_line(file: Path, line: str) -> None:
    with file.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


# --- wells and names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [("A1", None, "A01"), ("a01", None, "A01"), ("A001", None, "A01"), (" p24 ", 384, "P24"),
     ("AF48", 1536, "AF48"), ("h12", 96, "H12"), ("B3", None, "B03")],
)  # fmt: skip
def test_canonical_well_accepts_spellings(text, fmt, expected):
    assert canonical_well(text, fmt) == expected


@pytest.mark.parametrize(
    ("text", "fmt", "match"),
    [("", None, "is not a well name"), ("A", None, "is not a well name"), ("11", None, "is not a well name"),
     ("A0", None, "is not a well name"), ("A49", None, "is not a well name"),
     ("AG01", None, "is not a well name"), ("A0001", None, "is not a well name"), ("2A", None, "not a well"),
     ("I01", 96, "outside a 96-well plate"), ("A13", 96, "outside a 96-well plate"),
     ("Q01", 384, r"outside a 384-well plate \(rows A-P, columns 1-24\)")],
)  # fmt: skip
def test_canonical_well_rejects(text, fmt, match):
    with pytest.raises(ValueError, match=match):
        canonical_well(text, fmt)


def test_well_row_col():
    assert well_row_col("B03") == (1, 2)
    assert well_row_col("a1") == (0, 0)
    assert well_row_col("AF48") == (31, 47)


@pytest.mark.parametrize(
    ("name", "slug"),
    [("TNF-α", "TNF-alpha"), ("IFN-γ", "IFN-gamma"), ("IL-12p40/p70", "IL-12p40_p70"),
     ("Activin A", "Activin_A"), ("IL-1β", "IL-1beta"), (" MIP-1α (CCL3) ", "MIP-1alpha_CCL3"),
     ("IL-6", "IL-6"), ("TGF-β1 µg/ml", "TGF-beta1_mug_ml"), ("Café--IL..8", "Cafe--IL..8")],
)  # fmt: skip
def test_slugify(name, slug):
    assert slugify(name) == slug


def test_slugify_rejects_a_name_without_letters():
    with pytest.raises(ValueError, match="no letter or digit"):
        slugify("/ -")


def test_problem_is_one_line_and_plate_error_joins_them():
    named = Problem("d/p/cytokines.csv", "row 3 (well A02)", "bad", "do this")
    bare = Problem("d/p/images", "", "is missing", "add it")
    assert str(named) == "d/p/cytokines.csv: row 3 (well A02): bad; fix: do this"
    assert str(bare) == "d/p/images: is missing; fix: add it"
    error = PlateError([named, bare])
    assert isinstance(error, ValueError)
    assert error.problems == [named, bare]
    assert str(error) == f"{named}\n{bare}"


# --- a good plate and its accepted variants ------------------------------------------------------------


def test_reads_the_tiny_plate(tiny_plate):
    plate = read(tiny_plate())
    assert plate.plate_id == "plate-1"
    assert plate.channels == ("actin", "mito", "nucleus")
    assert plate.format == 96
    assert plate.wells == WELLS
    assert plate.usable_wells == WELLS
    assert plate.images.dtype == np.float32 and plate.images.shape == (8, 3, 16, 16)
    assert plate.image_dtype == "uint16"
    on_disk = tifffile.imread(plate.path / "images" / "B02.tif")
    np.testing.assert_array_equal(plate.images[5], on_disk.astype(np.float32))  # values as read
    assert list(plate.readouts.columns) == ["IL-6", "TNF-α", "IL-12p40/p70"]
    assert plate.readouts.index.name == "well" and tuple(plate.readouts.index) == WELLS
    assert all(dtype == np.float64 for dtype in plate.readouts.dtypes)
    assert plate.cytokine_slugs() == {"IL-6": "IL-6", "TNF-α": "TNF-alpha", "IL-12p40/p70": "IL-12p40_p70"}
    assert list(plate.layout.columns) == ["treatment", "concentration", "role"]
    assert plate.layout.loc["A01"].tolist()[0] == "DMSO" and np.isnan(
        plate.layout.loc["A01", "concentration"]
    )
    assert plate.layout.loc["B01", "concentration"] == 1.5
    assert plate.layout["role"].tolist().count("negative_control") == 2
    assert plate.embeddings.shape == (8, 4) and plate.embeddings.index.name == "well"
    assert plate.left_out == () and plate.warnings == ()


@pytest.mark.parametrize("style", ["A01", "A1", "a01", "A001"])
def test_well_spellings_are_one_well(tiny_plate, style):
    plate = read(tiny_plate(well_style=style))
    assert plate.wells == WELLS
    assert tuple(plate.readouts.index) == WELLS
    assert tuple(plate.layout.index) == WELLS and tuple(plate.embeddings.index) == WELLS


def test_well_header_is_case_insensitive(tiny_plate):
    data_dir = tiny_plate()
    replace_in(plate_of(data_dir) / "cytokines.csv", "well,", "Well,")
    replace_in(plate_of(data_dir) / "layout.csv", "well,", "WELL,")
    assert read(data_dir).usable_wells == WELLS


def test_one_file_per_channel(tiny_plate):
    plate = read(tiny_plate(image_pattern="{well}_{channel}.tif"))
    assert plate.wells == WELLS and plate.images.shape == (8, 3, 16, 16)
    mito = tifffile.imread(plate.path / "images" / "A03_mito.tif")
    np.testing.assert_array_equal(plate.images[2, 1], mito.astype(np.float32))


@pytest.mark.parametrize("suffix", [".TIFF", ".tiff", ".Tif"])
def test_tiff_extension_in_any_case(tiny_plate, suffix):
    data_dir = tiny_plate()
    images = plate_of(data_dir) / "images"
    (images / "A02.tif").rename(images / f"A02{suffix}")
    assert read(data_dir).wells == WELLS


def test_channels_and_a_two_dimensional_image_for_one_channel(tiny_plate):
    plate = read(tiny_plate(channels=("dapi",)))
    assert plate.channels == ("dapi",) and plate.images.shape == (8, 1, 16, 16)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_image_dtypes(tiny_plate, dtype):
    plate = read(tiny_plate(dtype=dtype))
    assert plate.image_dtype == dtype and plate.images.dtype == np.float32


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


def test_a_well_with_readouts_but_no_image_is_left_out(tiny_plate):
    plate = read(tiny_plate(no_image=("B03",), extra_readouts=("C05",)))
    assert plate.wells == tuple(w for w in WELLS if w != "B03")
    assert plate.left_out == (("B03", "readouts but no image"), ("C05", "readouts but no image"))
    assert "B03" in plate.readouts.index and "B03" not in plate.usable_wells
    [warning] = plate.warnings
    assert warning.level == "warning" and warning.where == "wells B03, C05" and "no image" in warning.what


def test_an_image_with_no_readouts_is_left_out(tiny_plate):
    plate = read(tiny_plate(no_readouts=("A02",)))
    assert "A02" in plate.wells and "A02" not in plate.usable_wells
    assert plate.left_out == (("A02", "image but no readouts"),)
    [warning] = plate.warnings
    assert warning.file.endswith("cytokines.csv") and warning.where == "well A02"


def test_resizing_shrinks_by_area_and_enlarges(tiny_plate):
    data_dir = tiny_plate()
    big = read(data_dir)
    small = read(data_dir, image_size=8)
    assert small.images.shape == (8, 3, 8, 8) and small.images.dtype == np.float32
    expected = big.images.reshape(8, 3, 8, 2, 8, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(small.images, expected, rtol=1e-5)
    large = read(data_dir, image_size=24)
    assert large.images.shape == (8, 3, 24, 24)
    assert large.images.min() >= big.images.min() and large.images.max() <= big.images.max()
    odd = read(data_dir, image_size=10)  # not a divisor: still the mean brightness, nothing cropped
    np.testing.assert_allclose(odd.images.mean(axis=(2, 3)), big.images.mean(axis=(2, 3)), rtol=1e-4)


def test_image_size_lets_sizes_differ(tiny_plate):
    data_dir = tiny_plate()
    write_image(plate_of(data_dir), "A01.tif", np.ones((3, 32, 32), np.uint16))
    plate = read(data_dir, image_size=16)
    assert plate.images.shape == (8, 3, 16, 16)
    np.testing.assert_allclose(plate.images[0], 1.0)


def test_format_from_plate_yaml_or_inferred(tiny_plate):
    assert read_plate(plate_of(tiny_plate(plate_id="p96"), "p96")).format == 96
    assert read_plate(plate_of(tiny_plate(plate_id="p384", plate_yaml={"format": 384}), "p384")).format == 384
    assert read_plate(plate_of(tiny_plate(plate_id="i384", extra_readouts=("I13",)), "i384")).format == 384
    assert (
        read_plate(plate_of(tiny_plate(plate_id="i1536", extra_readouts=("AF48",)), "i1536")).format == 1536
    )


def test_readouts_optional_when_not_required(tiny_plate):
    plate = read(tiny_plate(readouts=False), require_readouts=False)
    assert plate.readouts is None and plate.usable_wells == () and plate.cytokine_slugs() == {}
    assert plate.wells == WELLS and plate.left_out == ()


def test_optional_files_may_be_absent(tiny_plate):
    plate = read(tiny_plate(layout=False, embeddings=False))
    assert plate.layout is None and plate.embeddings is None


def test_stray_files_are_warnings_and_hidden_files_are_ignored(tiny_plate):
    data_dir = tiny_plate()
    images = plate_of(data_dir) / "images"
    (images / "notes.txt").write_text("exported by the imager")
    (images / ".DS_Store").write_bytes(b"\0\1")
    (images / ".ipynb_checkpoints").mkdir()
    plate = read(data_dir)
    [warning] = plate.warnings
    assert warning.file.endswith("notes.txt") and "ignored" in warning.what


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


def test_read_data_reads_every_plate_and_ignores_hidden_entries(tiny_plate):
    tiny_plate(plate_id="plate-1")
    data_dir = tiny_plate(plate_id="plate-2", seed=1)
    (data_dir / ".ipynb_checkpoints").mkdir()
    (data_dir / ".DS_Store").write_text("")
    plates = read_data(data_dir)
    assert [plate.plate_id for plate in plates] == ["plate-1", "plate-2"]


# --- errors: each names the file, the well or row, and the fix ----------------------------------------


def _edited(edit, **options):
    """A maker of a tiny plate written with `options`, then changed by `edit(plate folder)`."""

    def make(tiny_plate):
        data_dir = tiny_plate(**options)
        edit(plate_of(data_dir))
        return data_dir

    return make


def _bad_image(name, array):
    return _edited(lambda plate: write_image(plate, name, array))


def _truncated(plate):
    file = plate / "images" / "A02.tif"
    file.write_bytes(file.read_bytes()[:300])


def _nan_image():
    array = np.zeros((3, 16, 16), np.float32)
    array[1, 2, 3] = np.nan
    return array


ERRORS = [
    # wells
    pytest.param(
        _edited(lambda p: replace_in(p / "cytokines.csv", "\nA02,", "\n2A,")),
        r"cytokines\.csv: row 3: '2A' is not a well name.*; fix: ",
        id="malformed-well",
    ),
    pytest.param(
        lambda make: make(plate_yaml={"format": 96}, extra_readouts=("M01",)),
        r"cytokines\.csv: row 10: well 'M01' is outside a 96-well plate.*; fix: correct the well",
        id="well-outside-format",
    ),
    pytest.param(
        _edited(lambda p: (p / "images" / "B04.tif").rename(p / "images" / "ZZ4.tif")),
        r"ZZ4\.tif: 'ZZ4' is not a well name",
        id="image-name-not-a-well",
    ),
    # plate.yaml
    pytest.param(
        lambda make: make(plate_yaml={"colour": "red"}),
        r"plate\.yaml: key 'colour': is not a plate\.yaml key; fix: remove it",
        id="yaml-unknown-key",
    ),
    pytest.param(
        _edited(lambda p: (p / "plate.yaml").write_text("channels: [actin, mito\n")),
        r"plate\.yaml: cannot be read \(",
        id="yaml-syntax",
    ),
    pytest.param(
        _edited(lambda p: (p / "plate.yaml").write_text("- actin\n- mito\n")),
        r"plate\.yaml: holds a list, not keys",
        id="yaml-not-a-mapping",
    ),
    # images
    pytest.param(
        _edited(lambda p: p.joinpath("images").rename(p / "pics")), r"images: is missing", id="no-images"
    ),
    pytest.param(
        _edited(lambda p: [f.rename(f.with_suffix(".png")) for f in (p / "images").iterdir()]),
        r"images: holds no image named like '\{well\}\.tif'",
        id="no-matching-image",
    ),
    pytest.param(
        _edited(lambda p: (p / "images" / "A02.tif").write_bytes(b"not a tiff at all")),
        r"A02\.tif: well A02: cannot be read as a TIFF .*; fix: re-export",
        id="unreadable-image",
    ),
    pytest.param(_edited(_truncated), r"A02\.tif: well A02: cannot be read as a TIFF", id="truncated-image"),
    pytest.param(
        _bad_image("A03.tif", np.zeros((1, 3, 16, 16), np.uint16)),
        r"A03\.tif: well A03: has shape \(1, 3, 16, 16\); expected \(C, Y, X\)",
        id="four-dimensional-image",
    ),
    pytest.param(
        _bad_image("A03.tif", np.zeros((2, 16, 16), np.uint16)),
        r"A03\.tif: well A03: has shape \(2, 16, 16\); expected \(C, Y, X\) with C = 3",
        id="channel-count",
    ),
    pytest.param(
        _bad_image("A03.tif", np.zeros((16, 16), np.uint16)),
        r"A03\.tif: well A03: has shape \(16, 16\); expected \(C, Y, X\) with C = 3",
        id="two-dimensional-for-three-channels",
    ),
    pytest.param(_bad_image("B01.tif", _nan_image()), r"B01\.tif: well B01: holds NaN", id="nan-image"),
    pytest.param(
        _bad_image("B01.tif", np.zeros((3, 16, 16), np.int32)),
        r"B01\.tif: well B01: has dtype int32; supported are uint8, uint16, float32",
        id="unsupported-dtype",
    ),
    pytest.param(
        _bad_image("B01.tif", np.zeros((3, 16, 12), np.uint16)),
        r"B01\.tif: well B01: is 12 wide and 16 high; thumbnails must be square",
        id="not-square",
    ),
    pytest.param(
        _bad_image("B02.tif", np.zeros((3, 8, 8), np.uint16)),
        r"B02\.tif: well B02: is 8x8 but most images of this plate are 16x16; fix: .*--image-size",
        id="sizes-differ",
    ),
    pytest.param(
        _bad_image("B02.tif", np.zeros((3, 16, 16), np.uint8)),
        r"B02\.tif: well B02: has dtype uint8 but most images of this plate are uint16",
        id="dtypes-differ",
    ),
    pytest.param(
        _bad_image("a2.TIF", np.zeros((3, 16, 16), np.uint16)),
        r"a2\.TIF: well A02: names the same image as A02\.tif",
        id="two-files-one-well",
    ),
    pytest.param(
        _edited(lambda p: (p / "images" / "B03_mito.tif").unlink(), image_pattern="{well}_{channel}.tif"),
        r"B03_mito\.tif: well B03, channel mito: is missing; fix: add B03_mito\.tif",
        id="missing-channel-file",
    ),
    # cytokines.csv
    pytest.param(
        lambda make: make(readouts=False), r"cytokines\.csv: is missing; fix: add", id="no-readouts"
    ),
    pytest.param(
        lambda make: make(cells={("A03", "IL-12p40/p70"): "high"}),
        r"cytokines\.csv: row 4 \(well A03\), column 'IL-12p40/p70': 'high' is not a number.*; fix: write",
        id="bad-cell",
    ),
    pytest.param(
        _edited(lambda p: replace_in(p / "cytokines.csv", "A02,plate-1", "A02,plate-2"), plate_column=True),
        r"row 3 \(well A02\): plate 'plate-2' is not this folder's plate 'plate-1'",
        id="plate-column",
    ),
    pytest.param(
        _edited(lambda p: append_line(p / "cytokines.csv", "a1,1,2,3")),
        r"cytokines\.csv: row 10 \(well A01\): well A01 already has row 2; fix: keep one row per well",
        id="duplicate-well",
    ),
    pytest.param(
        lambda make: make(cytokines=("IL-12p40/p70", "IL-12p40_p70")),
        r"cytokines 'IL-12p40/p70' and 'IL-12p40_p70' give the same slug 'IL-12p40_p70'",
        id="slug-collision",
    ),
    pytest.param(
        lambda make: make(cytokines=("IL-6", "il-6")),
        r"cytokines 'IL-6' and 'il-6' give the same slug",
        id="slug-collision-by-case",
    ),
    pytest.param(
        lambda make: make(cytokines=()), r"cytokines\.csv: row 1: has no cytokine column", id="no-cytokine"
    ),
    pytest.param(
        _edited(lambda p: replace_in(p / "cytokines.csv", "well,", "position,")),
        r"cytokines\.csv: row 1: has no 'well' column",
        id="no-well-column",
    ),
    pytest.param(
        lambda make: make(cytokines=("IL-6", "IL-6")),
        r"cytokines\.csv: row 1: column 'IL-6' appears twice",
        id="repeated-column",
    ),
    pytest.param(
        _edited(lambda p: (p / "cytokines.csv").write_text("well,IL-6\nC01,1\n")),
        r"cytokines\.csv: no well has both an image and readouts",
        id="no-usable-well",
    ),
    pytest.param(
        _edited(lambda p: append_line(p / "cytokines.csv", "C01,1")),
        r"cytokines\.csv: row 10: has 2 cells but the header has 4 columns",
        id="short-row",
    ),
    pytest.param(
        _edited(lambda p: (p / "cytokines.csv").write_bytes(b"well,IL-6\nA01,\xb5\n")),
        r"cytokines\.csv: is not UTF-8 text",
        id="not-utf8",
    ),
    # layout.csv
    pytest.param(
        _edited(lambda p: replace_in(p / "layout.csv", "drug-b,10,sample", "drug-b,10,blank")),
        r"layout\.csv: row 8 \(well B03\): role 'blank' is not one of sample, negative_control, positive_",
        id="layout-role",
    ),
    pytest.param(
        _edited(lambda p: replace_in(p / "layout.csv", "drug-a,1.5", "drug-a,1.5 uM")),
        r"layout\.csv: row 6 \(well B01\): concentration '1\.5 uM' is not a number",
        id="layout-concentration",
    ),
    pytest.param(
        _edited(lambda p: replace_in(p / "layout.csv", "A02,DMSO", "A02,")),
        r"layout\.csv: row 3 \(well A02\): has no treatment",
        id="layout-empty-treatment",
    ),
    pytest.param(
        _edited(lambda p: append_line(p / "layout.csv", "B4,drug-b,10,sample")),
        r"layout\.csv: row 10 \(well B04\): well B04 already has row 9",
        id="layout-duplicate",
    ),
    pytest.param(
        _edited(lambda p: replace_in(p / "layout.csv", "well,", "Position,")),
        r"layout\.csv: row 1: has no 'well' column",
        id="layout-no-well-column",
    ),
    pytest.param(
        _edited(lambda p: replace_in(p / "layout.csv", "\nB02,", "\nC02,")),
        r"layout\.csv: well B02: an image and readouts but no row here",
        id="layout-misses-a-well",
    ),
    # embeddings.csv
    pytest.param(
        _edited(lambda p: replace_in(p / "embeddings.csv", "\nA04,", "\nA04,x")),
        r"embeddings\.csv: row 5 \(well A04\), column 'emb_0': '\S*x\S*' is not a number",
        id="embedding-not-a-number",
    ),
    pytest.param(
        _edited(lambda p: append_line(p / "embeddings.csv", "A01,1,2,3,4")),
        r"embeddings\.csv: row 10 \(well A01\): well A01 already has row 2",
        id="embedding-duplicate",
    ),
]


@pytest.mark.parametrize(("make", "match"), ERRORS)
def test_errors(tiny_plate, make, match):
    data_dir = make(tiny_plate)
    with pytest.raises(PlateError, match=match) as caught:
        read(data_dir)
    assert all(problem.file and problem.fix for problem in caught.value.problems)
    assert all("\n" not in str(problem) for problem in caught.value.problems)


@pytest.mark.parametrize(
    ("key", "value"),
    [("channels", "actin"), ("channels", []), ("channels", ["a", "a"]), ("format", "384"), ("format", 100),
     ("format", True), ("image_pattern", 5), ("image_pattern", "{well}.png"),
     ("image_pattern", "{channel}.tif"), ("image_pattern", "{well}_{site}.tif")],
)  # fmt: skip
def test_plate_yaml_wrong_values(tiny_plate, key, value):
    with pytest.raises(PlateError, match=rf"plate\.yaml: key '{key}': .*; fix: write"):
        read(tiny_plate(plate_yaml={key: value}))


def test_every_problem_is_collected_before_raising(tiny_plate):
    data_dir = tiny_plate(cells={("A01", "IL-6"): "oops"}, no_image=("A04",))
    plate = plate_of(data_dir)
    (plate / "images" / "B01.tif").write_bytes(b"garbage")
    replace_in(plate / "layout.csv", "drug-b,10,sample", "drug-b,ten,sample")
    (plate / "images" / "readme.md").write_text("x")
    with pytest.raises(PlateError) as caught:
        read(data_dir)
    errors = [problem for problem in caught.value.problems if problem.level == "error"]
    warnings = [problem for problem in caught.value.problems if problem.level == "warning"]
    assert [p.file.rsplit("/", 1)[-1] for p in errors] == ["B01.tif", "cytokines.csv", "layout.csv"]
    assert {p.file.rsplit("/", 1)[-1] for p in warnings} == {"readme.md", "images"}
    assert caught.value.problems[: len(errors)] == errors  # errors first
    assert len(str(caught.value).splitlines()) == len(caught.value.problems)


def test_data_dir_errors(tmp_path, tiny_plate):
    with pytest.raises(PlateError, match=r"nowhere: does not exist; fix: pass the data folder"):
        read_data(tmp_path / "nowhere")
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    with pytest.raises(PlateError, match=r"empty: holds no plate folder"):
        read_data(tmp_path / "empty")
    data_dir = tiny_plate()
    with pytest.raises(PlateError, match=r"plate-1: is a plate folder, not a data folder"):
        read_data(plate_of(data_dir))


def test_read_data_aggregates_plates_and_checks_them_against_each_other(tiny_plate):
    tiny_plate(plate_id="plate-1", cells={("A01", "IL-6"): "bad"})
    tiny_plate(plate_id="plate-2", size=8)
    data_dir = tiny_plate(plate_id="plate-3", size=8, channels=("dapi",))
    with pytest.raises(PlateError) as caught:
        read_data(data_dir)
    text = str(caught.value)
    assert "plate-1/cytokines.csv: row 2 (well A01), column 'IL-6'" in text
    assert "plate-3: has channels dapi but plate plate-2 has actin/mito/nucleus" in text


def test_check_data_never_raises(tmp_path, tiny_plate):
    plates, problems = check_data(tmp_path / "nowhere")
    assert plates == [] and len(problems) == 1
    tiny_plate(plate_id="good", no_readouts=("A01",))
    data_dir = tiny_plate(plate_id="bad", cytokines=())
    plates, problems = check_data(data_dir)
    assert [plate.plate_id for plate in plates] == ["good"]
    assert sorted(problem.level for problem in problems) == ["error", "warning"]


# --- the validate command -------------------------------------------------------------------------------


def invoke(*args: str):
    app = typer.Typer()
    app.command()(validate_command)
    return CliRunner().invoke(app, [str(arg) for arg in args])


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.rglob("*"))}


def test_validate_a_good_plate(tiny_plate):
    data_dir = tiny_plate(no_image=("B04",), cells={("A01", "IL-6"): "NA", ("A02", "IL-6"): ""})
    before = listing(data_dir)
    result = invoke(data_dir)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        "plate-1: 7 wells with images, 7 usable, 96-well format, channels actin/mito/nucleus, "
        "images 16x16 uint16, 3 cytokines, 2 missing readouts, 1 wells left out (1 readouts but no image)"
    )
    assert lines[1].startswith("warning: ") and "well B04: readouts but no image" in lines[1]
    assert lines[-1].endswith("usable: 1 plate(s), 1 warning(s)")
    assert listing(data_dir) == before


def test_validate_with_image_size(tiny_plate):
    result = invoke(tiny_plate(), "--image-size", "8")
    assert result.exit_code == 0 and "images 8x8 uint16" in result.output


def test_validate_a_bad_plate(tiny_plate):
    data_dir = tiny_plate(cells={("A03", "IL-6"): "lots"}, plate_yaml={"format": 384})
    plate = plate_of(data_dir)
    (plate / "images" / "B01.tif").write_bytes(b"")
    (plate / "images" / "thumbs.db").write_bytes(b"")
    before = listing(data_dir)
    result = invoke(data_dir)
    assert result.exit_code == 1
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    _, problems = check_data(data_dir)
    lines = result.output.splitlines()
    assert len(problems) == 3
    for problem in problems:
        assert f"{problem.level}: {problem}" in lines
    assert lines[-1].endswith("not usable: 2 error(s), 1 warning(s)")
    assert listing(data_dir) == before


def test_validate_a_missing_folder(tmp_path):
    result = invoke(tmp_path / "nowhere")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nowhere: does not exist" in result.output


# --- hostile names and links (issue 14) -----------------------------------------------------------------


def test_a_very_long_cytokine_name_gets_a_bounded_slug_and_validate_says_so(tiny_plate):
    from cytoops import tracking
    from cytoops.plate import SLUG_MAX

    long_a, long_b = "IL-" + "x" * 297, "IL-" + "x" * 296 + "y"
    data_dir = tiny_plate(cytokines=("IL-6", long_a, long_b))
    slugs = {slugify(long_a), slugify(long_b)}
    assert len(slugs) == 2 and all(len(slug) <= SLUG_MAX for slug in slugs)
    assert slugify("IL-6") == "IL-6"  # short names unchanged
    key = tracking.metric_key("val_loss", slugify(long_a), "deep_cnn", "hvflip", "r9", "f9")
    assert len(key) < 250  # MLflow's limit on a metric name
    result = invoke(data_dir)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "cytokine name is 300 characters" in line]
    assert len(warned) == 2 and all(line.startswith("warning: ") for line in warned)
    assert slugify(long_a) in result.output


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_broken_symlink_named_like_a_well_image_is_an_error_naming_it(tiny_plate, kind):
    data_dir = tiny_plate(no_image=("B04",))
    link = plate_of(data_dir) / "images" / "B04.tif"
    link.symlink_to(link if kind == "loop" else link.parent / "gone.tif")
    with pytest.raises(PlateError) as err:
        read_plate(plate_of(data_dir))
    errors = [p for p in err.value.problems if p.level == "error"]
    assert len(errors) == 1 and errors[0].file == str(link) and "well B04" in str(errors[0])
    result = invoke(data_dir)
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_validate_keeps_no_pixels_and_notes_images_far_larger_than_the_working_size(tiny_plate):
    data_dir = tiny_plate(size=256)
    plates, problems = check_data(data_dir, keep_images=False)
    assert plates[0].images.shape == (8, 3, 0, 0) and plates[0].source_size == 256 and not problems
    result = invoke(data_dir)
    assert result.exit_code == 0, result.output
    assert "images 256x256 uint16" in result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note: images are 256x256")]
    assert len(notes) == 1 and "4x the working size 64x64" in notes[0]
    shutil.rmtree(plate_of(data_dir))
    small = invoke(tiny_plate(plate_id="small", size=16))
    assert small.exit_code == 0 and "note:" not in small.output


def test_each_image_is_resized_as_it_is_read(tiny_plate, monkeypatch):
    """At most one full-size well image is alive at a time: each is shrunk before the next file is read."""
    import cytoops.plate as plate_mod

    alive, peak, real_resize, real_load = [], [], plate_mod._resize, plate_mod._load_tiff

    def load(file, well, problems):
        array = real_load(file, well, problems)
        alive.append(well)
        peak.append(len(set(alive)))
        return array

    def resize(image, size):
        alive.clear()
        return real_resize(image, size)

    monkeypatch.setattr(plate_mod, "_load_tiff", load)
    monkeypatch.setattr(plate_mod, "_resize", resize)
    plate = read_plate(plate_of(tiny_plate(size=64)), image_size=32)
    assert plate.images.shape == (8, 3, 32, 32) and plate.images.dtype == np.float32
    assert max(peak) == 1
