"""The raw-plate reader against docs/plate-format.md: a plate read whole, every error kind, data folders.

The parts have their own files: test_plate_wells, test_plate_images, test_plate_csv, test_plate_validate.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import TINY_WELLS as WELLS
from conftest import append_line, plate_of, read, replace_in, write_image

from cytoops.plate import PlateError, Problem, check_data, read_data, read_plate


def test_problem_is_one_line_and_plate_error_joins_them():
    named = Problem("d/p/cytokines.csv", "row 3 (well A02)", "bad", "do this")
    bare = Problem("d/p/images", "", "is missing", "add it")
    assert str(named) == "d/p/cytokines.csv: row 3 (well A02): bad; fix: do this"
    assert str(bare) == "d/p/images: is missing; fix: add it"
    error = PlateError([named, bare])
    assert isinstance(error, ValueError)
    assert error.problems == [named, bare]
    assert str(error) == f"{named}\n{bare}"


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


def test_read_data_reads_every_plate_and_ignores_hidden_entries(tiny_plate):
    tiny_plate(plate_id="plate-1")
    data_dir = tiny_plate(plate_id="plate-2", seed=1)
    (data_dir / ".ipynb_checkpoints").mkdir()
    (data_dir / ".DS_Store").write_text("")
    plates = read_data(data_dir)
    assert [plate.plate_id for plate in plates] == ["plate-1", "plate-2"]


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


def test_a_broken_plate_yaml_is_located_but_never_quoted(tiny_plate):
    data_dir = tiny_plate()
    (plate_of(data_dir) / "plate.yaml").write_text("channels: [actin, mito\nSECRET_TOKEN: hunter2\n")
    with pytest.raises(PlateError) as caught:
        read(data_dir)
    [problem] = caught.value.problems
    assert problem.what == "cannot be read (not valid YAML at line 2, column 13)"
    assert "SECRET" not in str(caught.value) and "hunter2" not in str(caught.value)
