"""cytoops.plate.images: image files by pattern, TIFFs read and checked, resized as read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import TINY_WELLS as WELLS
from conftest import invoke_validate, plate_of, read, write_image

from cytoops.plate import PlateError, read_plate

REPO = Path(__file__).resolve().parents[1]


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

    def load(file, well, *args):
        array = real_load(file, well, *args)
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


# --- hostile images (issue 19): sizes from the header, never a file's bytes in a message -----------------


def zeros_tiff(file: Path, shape: tuple[int, int, int], tile: int = 1024) -> None:
    """A valid zlib TIFF of uint16 zeros shaped (C, Y, X), one page, tiled; every tile points at one
    compressed block, so it is kilobytes on disk whatever it declares (and decodes to all of it)."""
    block = zlib.compress(bytes(tile * tile * 2))
    count = shape[0] * -(-shape[1] // tile) * -(-shape[2] // tile)
    tifffile.imwrite(
        file, iter([block] * count), shape=shape, dtype="uint16", tile=(tile, tile), compression="zlib",
        photometric="minisblack", planarconfig="separate", metadata=None,
    )  # fmt: skip
    data = bytearray(file.read_bytes())
    with tifffile.TiffFile(file) as tiff:
        offsets, counts = tiff.pages[0].tags["TileOffsets"], tiff.pages[0].tags["TileByteCounts"]
        first, width = offsets.value[0], {4: 4, 16: 8}[offsets.dtype]
        assert tiff.byteorder == "<" and offsets.valueoffset < first  # the tags come before the data
        for i in range(len(offsets.value)):
            data[offsets.valueoffset + i * width : offsets.valueoffset + (i + 1) * width] = first.to_bytes(
                width, "little"
            )
    file.write_bytes(bytes(data[: first + counts.value[0]]))


# Run from a small launcher process: on Linux a child's ru_maxrss counts the memory of the process it was
# forked from (kept across exec), so a child forked from a long pytest session would report that size.
LAUNCHER = """
import os, subprocess, sys
args = [sys.executable, "-c", "from cytoops.cli import main; main()", "validate", sys.argv[1]]
with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
    sys.stdout.write(proc.stdout.read().decode())
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
print(f"launcher: status {proc.returncode} peak {usage.ru_maxrss * 1024}")
"""


def validate_in_a_process(data_dir: Path) -> tuple[int, str, int]:
    """(exit status, output, peak resident memory in bytes) of `cytoops validate DATA_DIR` in its own process:
    ru_maxrss of that one child, from os.wait4 in a small launcher."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, str(data_dir)], capture_output=True, text=True, env=env, check=True
    )
    output, last = done.stdout.rstrip("\n").rsplit("\n", 1)
    _, _, status, _, peak = last.split()
    return int(status), output, int(peak)


def test_validate_refuses_a_small_file_declaring_a_huge_image_before_decoding_it(tiny_plate):
    data_dir = tiny_plate()
    file = plate_of(data_dir) / "images" / "A02.tif"
    zeros_tiff(file, (3, 20000, 20000))  # 2.4 GB of zeros as decoded: the old reader peaked at 2.5 GB
    assert file.stat().st_size < 24_000
    status, output, peak = validate_in_a_process(data_dir)
    assert status == 1 and "Traceback" not in output, output
    line = next(line for line in output.splitlines() if line.startswith("error: "))
    assert line.startswith(f"error: {file}: well A02: declares an image of shape (3, 20000, 20000)"), line
    assert peak < 1e9, f"validate peaked at {peak / 1e9:.2f} GB"


def test_the_size_limit_reads_a_file_at_it_and_refuses_one_past_it(tiny_plate):
    from cytoops.plate.images import MAX_IMAGE_SIDE, max_side

    assert max_side(None) == max_side(64) == MAX_IMAGE_SIDE == 4096 and max_side(8192) == 8192
    data_dir = tiny_plate()
    file = plate_of(data_dir) / "images" / "A01.tif"
    zeros_tiff(file, (3, 4096, 4096))  # large but sane: read and shrunk like any other
    plate = read(data_dir, image_size=16)
    assert plate.images.shape == (8, 3, 16, 16) and not plate.images[0].any()
    for shape in [(3, 4097, 4097), (4, 4096, 4096)]:  # one pixel too wide; one plane too many
        zeros_tiff(file, shape)
        with pytest.raises(
            PlateError, match=rf"A01\.tif: well A01: declares an image of shape {re.escape(str(shape))}"
        ):
            read(data_dir, image_size=16)


def test_a_channel_file_may_declare_one_plane_only(tiny_plate):
    data_dir = tiny_plate(image_pattern="{well}_{channel}.tif")
    zeros_tiff(plate_of(data_dir) / "images" / "B02_mito.tif", (2, 4096, 4096))
    with pytest.raises(PlateError, match=r"B02_mito\.tif: well B02: declares .* over the limit of 1 x 4096"):
        read(data_dir)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda entry: entry.symlink_to("/dev/null"), "a symbolic link to a character device"),
        (lambda entry: os.mkfifo(entry), "a named pipe (FIFO)"),
    ],
    ids=["link-to-device", "fifo"],
)
def test_a_device_or_pipe_named_like_an_image_is_said_to_be_one(tiny_plate, make, kind):
    data_dir = tiny_plate(no_image=("B04",))
    entry = plate_of(data_dir) / "images" / "B04.tif"
    make(entry)
    with pytest.raises(
        PlateError, match=rf"B04\.tif: well B04: is named like an image but is {re.escape(kind)}, not a "
    ):
        read(data_dir)


@pytest.mark.parametrize("header", [b"SHELL=/bin/sh\0", b"II*\0"])
def test_an_unreadable_image_is_never_quoted(tiny_plate, tmp_path, header):
    # a link named like an image to a file of secrets (/proc/self/environ, say): the old reader echoed
    # tifffile's "not a TIFF file: header=b'SHEL'"
    secrets = tmp_path / "environ"
    secrets.write_bytes(header + b"SECRET_TOKEN=hunter2\0" * 8)
    data_dir = tiny_plate(no_image=("B04",))
    (plate_of(data_dir) / "images" / "B04.tif").symlink_to(secrets)
    result = invoke_validate(data_dir)
    assert result.exit_code == 1 and "B04.tif: well B04: cannot be read as a TIFF (" in result.output
    for secret in ("SHEL", "SECRET", "hunter2"):
        assert secret not in result.output
