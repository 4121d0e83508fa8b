"""The `cytoops validate` command: summary lines, problems, exit status; it writes nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import invoke_validate, plate_of

from cytoops.plate import check_data, slugify


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(path): (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.rglob("*"))}


def test_validate_a_good_plate(tiny_plate):
    data_dir = tiny_plate(no_image=("B04",), cells={("A01", "IL-6"): "NA", ("A02", "IL-6"): ""})
    before = listing(data_dir)
    result = invoke_validate(data_dir)
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
    result = invoke_validate(tiny_plate(), "--image-size", "8")
    assert result.exit_code == 0 and "images 8x8 uint16" in result.output


def test_validate_a_bad_plate(tiny_plate):
    data_dir = tiny_plate(cells={("A03", "IL-6"): "lots"}, plate_yaml={"format": 384})
    plate = plate_of(data_dir)
    (plate / "images" / "B01.tif").write_bytes(b"")
    (plate / "images" / "thumbs.db").write_bytes(b"")
    before = listing(data_dir)
    result = invoke_validate(data_dir)
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
    result = invoke_validate(tmp_path / "nowhere")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "nowhere: does not exist" in result.output


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
    result = invoke_validate(data_dir)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.output.splitlines() if "cytokine name is 300 characters" in line]
    assert len(warned) == 2 and all(line.startswith("warning: ") for line in warned)
    assert slugify(long_a) in result.output


def test_validate_keeps_no_pixels_and_notes_images_far_larger_than_the_working_size(tiny_plate):
    data_dir = tiny_plate(size=256)
    plates, problems = check_data(data_dir, keep_images=False)
    assert plates[0].images.shape == (8, 3, 0, 0) and plates[0].source_size == 256 and not problems
    result = invoke_validate(data_dir)
    assert result.exit_code == 0, result.output
    assert "images 256x256 uint16" in result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note: images are 256x256")]
    assert len(notes) == 1 and "4x the working size 64x64" in notes[0]
    shutil.rmtree(plate_of(data_dir))
    small = invoke_validate(tiny_plate(plate_id="small", size=16))
    assert small.exit_code == 0 and "note:" not in small.output
