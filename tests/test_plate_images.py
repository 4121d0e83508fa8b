"""cytoops.plate.images: image files by pattern, TIFFs read and checked, resized as read."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from conftest import TINY_WELLS as WELLS
from conftest import invoke_validate, plate_of, read, write_image

from cytoops.plate import PlateError, read_plate


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


def test_stray_files_are_warnings_and_hidden_files_are_ignored(tiny_plate):
    data_dir = tiny_plate()
    images = plate_of(data_dir) / "images"
    (images / "notes.txt").write_text("exported by the imager")
    (images / ".DS_Store").write_bytes(b"\0\1")
    (images / ".ipynb_checkpoints").mkdir()
    plate = read(data_dir)
    [warning] = plate.warnings
    assert warning.file.endswith("notes.txt") and "ignored" in warning.what


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_broken_symlink_named_like_a_well_image_is_an_error_naming_it(tiny_plate, kind):
    data_dir = tiny_plate(no_image=("B04",))
    link = plate_of(data_dir) / "images" / "B04.tif"
    link.symlink_to(link if kind == "loop" else link.parent / "gone.tif")
    with pytest.raises(PlateError) as err:
        read_plate(plate_of(data_dir))
    errors = [p for p in err.value.problems if p.level == "error"]
    assert len(errors) == 1 and errors[0].file == str(link) and "well B04" in str(errors[0])
    result = invoke_validate(data_dir)
    assert result.exit_code == 1 and "Traceback" not in result.output


def test_each_image_is_resized_as_it_is_read(tiny_plate, monkeypatch):
    """At most one full-size well image is alive at a time: each is shrunk before the next file is read."""
    from cytoops.plate import images as plate_mod

    alive, peak, real_resize, real_load = [], [], plate_mod.resize, plate_mod._load_tiff

    def load(file, well, problems):
        array = real_load(file, well, problems)
        alive.append(well)
        peak.append(len(set(alive)))
        return array

    def resize(image, size):
        alive.clear()
        return real_resize(image, size)

    monkeypatch.setattr(plate_mod, "_load_tiff", load)
    monkeypatch.setattr(plate_mod, "resize", resize)
    plate = read_plate(plate_of(tiny_plate(size=64)), image_size=32)
    assert plate.images.shape == (8, 3, 32, 32) and plate.images.dtype == np.float32
    assert max(peak) == 1
