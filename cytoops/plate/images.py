"""The well images: files named by the pattern, TIFFs read and checked, each resized as it is read.

Hostile input: an entry named like a well image that cannot be opened (a broken or looping link) is an
error naming it, never a silently dropped well. Images are read one well at a time and shrunk to the working
size at once (`validate` keeps no pixels at all), so a plate of 2048 px images needs no more memory than one
well's file; sizes and dtypes come from the files. A file is decoded only when its header declares at most
`max_side` pixels a side and the pixels of the well's channels at that side: a small compressed file claiming
a huge image is an error naming it, not gigabytes of zeros. A problem never quotes a file's bytes.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage

from cytoops.plate.problems import Problem, irregular, one_line
from cytoops.plate.wells import canonical_well, row_major, well_fix

IMAGE_DTYPES = ("uint8", "uint16", "float32")
# px: the largest side decoded, unless wrangle.image_size is larger (docs/plate-format.md); 3 x 4096 x 4096
# uint16 is 100 MB as read and 200 MB as float32, one well at a time
MAX_IMAGE_SIDE = 4096
TIFF_HEADERS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")  # little and big endian, classic and BigTIFF
QUOTABLE = (OSError, zlib.error)  # errors whose messages hold no file content (a path, a zlib error code)


def _pattern_regex(pattern: str, channels: tuple[str, ...]) -> re.Pattern:
    """A file-name regex for the pattern: any well spelling, .tif or .tiff in any case."""
    stem = pattern[: pattern.lower().rfind(".tif")]
    names = "|".join(re.escape(c) for c in sorted(channels, key=len, reverse=True))
    parts = []
    for part in re.split(r"(\{well\}|\{channel\})", stem):
        if part == "{well}":
            parts.append(r"(?P<well>[A-Za-z]{1,2}\d{1,3})")
        elif part == "{channel}":
            parts.append(f"(?P<channel>{names})")
        else:
            parts.append(re.escape(part))
    return re.compile("".join(parts) + r"(?i:\.tiff?)")


def max_side(image_size: int | None) -> int:
    """The largest image side the reader decodes: MAX_IMAGE_SIDE, or the working size when that is larger."""
    return max(MAX_IMAGE_SIDE, image_size or 0)


def _too_large(shape: tuple[int, ...], planes: int, side: int) -> bool:
    """Whether a declared shape passes `side` on an axis, or holds more pixels than `planes` side x side."""
    return max(shape, default=0) > side or math.prod(shape) > planes * side * side


def _load_tiff(file: Path, well: str, problems: list[Problem], planes: int, side: int) -> np.ndarray | None:
    """The file's pixels, or None with a problem; `planes` (the channels in it) and `side` (max_side) bound
    what its header may declare before anything is decoded."""
    where = f"well {well}"
    fix = "re-export the image: it is truncated or not a TIFF"
    try:
        with file.open("rb") as handle:
            header = handle.read(4)
        if header not in TIFF_HEADERS:  # said without quoting the bytes: the file may hold anything
            problems.append(Problem(str(file), where, "cannot be read as a TIFF (no TIFF header)", fix))
            return None
        with tifffile.TiffFile(file) as tiff:
            series = tiff.series[0]  # shape and dtype from the header: a wrong file is never decoded
            dtype, shape = np.dtype(series.dtype), tuple(int(n) for n in series.shape)
            if dtype.name not in IMAGE_DTYPES:
                what = f"has dtype {dtype.name}; supported are {', '.join(IMAGE_DTYPES)}"
                problems.append(Problem(str(file), where, what, "export it as uint8, uint16 or float32"))
                return None
            if _too_large(shape, planes, side):
                gigabytes = math.prod(shape) * dtype.itemsize / 1e9
                what = (
                    f"declares an image of shape {shape} ({gigabytes:.1f} GB as read), over the limit of "
                    f"{planes} x {side} x {side}; it is not decoded"
                )
                fix = (
                    f"export thumbnails of at most {side}x{side} (they are shrunk to wrangle.image_size "
                    "anyway); a small file that declares this much is damaged or hostile"
                )
                problems.append(Problem(str(file), where, what, fix))
                return None
            array = tiff.asarray()
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files (TiffFileError, zlib.error, ...)
        # only messages that cannot hold the file's bytes are quoted (a TiffFileError may echo its header)
        detail = f": {one_line(exc)}" if isinstance(exc, QUOTABLE) else ""
        what = f"cannot be read as a TIFF ({type(exc).__name__}{detail})"
        problems.append(Problem(str(file), where, what, fix))
        return None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        fix = "re-export it without NaN or infinite pixels"
        problems.append(Problem(str(file), where, "holds NaN or infinite values", fix))
        return None
    return array


def _well_image(
    files: dict[str, Path], well: str, channels: tuple[str, ...], problems: list[Problem], side: int
) -> tuple[np.ndarray, Path] | None:
    """One well's (C, Y, X) image from its file ("" key) or its per-channel files, none over `side` a side."""
    where = f"well {well}"
    if "" in files:
        file = files[""]
        array = _load_tiff(file, well, problems, len(channels), side)
        if array is None:
            return None
        if array.ndim == 2 and len(channels) == 1:
            array = array[None]
        if array.ndim != 3 or array.shape[0] != len(channels):
            what = (
                f"has shape {array.shape}; expected (C, Y, X) with C = {len(channels)} ({'/'.join(channels)})"
            )
            fix = "export one plane per configured channel, channels first, or set 'channels' in plate.yaml"
            problems.append(Problem(str(file), where, what, fix))
            return None
    else:
        file = files[channels[0]]
        planes = [_load_tiff(files[channel], well, problems, 1, side) for channel in channels]
        if any(plane is None for plane in planes):
            return None
        for channel, plane in zip(channels, planes, strict=True):
            if plane.shape != planes[0].shape or plane.ndim != 2:
                what = f"has shape {plane.shape}; expected a 2-D image shaped like channel {channels[0]}'s"
                fix = "export each channel as one 2-D plane, all of one size"
                problems.append(Problem(str(files[channel]), where, what, fix))
                return None
        if len({plane.dtype for plane in planes}) > 1:
            fix = "export all channels of a plate with one dtype"
            problems.append(Problem(str(file), where, "its channel files differ in dtype", fix))
            return None
        array = np.stack(planes)
    if array.shape[1] != array.shape[2] or array.shape[1] == 0:
        what = f"is {array.shape[2]} wide and {array.shape[1]} high; thumbnails must be square"
        fix = "export square thumbnails (cytoops resizes but never crops)"
        problems.append(Problem(str(file), where, what, fix))
        return None
    return array, file


def _area_weights(source: int, size: int) -> np.ndarray:
    """(size, source) matrix averaging source pixels into `size` equal bins, by overlap."""
    edges = np.linspace(0, source, size + 1)
    pixels = np.arange(source)
    low = np.clip(edges[:-1, None], pixels, pixels + 1)
    high = np.clip(edges[1:, None], pixels, pixels + 1)
    return (high - low) * size / source


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(C, S, S) -> (C, size, size): area averaging to shrink, linear interpolation to enlarge; no crop."""
    side = image.shape[-1]
    if side == size:
        return image
    if side > size:
        weights = _area_weights(side, size)
        return (weights @ image @ weights.T).astype(np.float32)
    factor = size / side
    enlarged = ndimage.zoom(image, (1, factor, factor), order=1, mode="nearest", grid_mode=True)
    return enlarged.astype(np.float32)


def read_images(
    path: Path,
    channels: tuple[str, ...],
    pattern: str,
    fmt: int | None,
    image_size: int | None,
    problems: list[Problem],
    keep_images: bool = True,
) -> tuple[set[str], dict[str, np.ndarray], str, int]:
    """(wells that have image files, well -> float32 (C, S, S) image for those read cleanly, dtype, side of
    the files). One well's file is in memory at a time: it is resized to `image_size` as soon as it is read
    (kept at its own size without one), or only checked and dropped when not `keep_images`."""
    folder = path / "images"
    if not folder.is_dir():
        fix = "put the thumbnails in an images/ folder inside the plate folder"
        problems.append(Problem(str(folder), "", "is missing", fix))
        return set(), {}, "", 0
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        problems.append(Problem(str(folder), "", f"cannot be listed ({one_line(exc)})", "make it readable"))
        return set(), {}, "", 0
    found = _image_files(entries, channels, pattern, fmt, problems)
    if not found:
        what = f"holds no image named like {pattern!r}"
        fix = "export one TIFF per well (e.g. A01.tif), or set image_pattern in plate.yaml"
        problems.append(Problem(str(folder), "", what, fix))
        return set(), {}, "", 0
    kept, read = _read_wells(found, folder, channels, pattern, image_size, problems, keep_images)
    dtype, size = _check_alike(read, image_size, problems)
    if not keep_images:
        kept = {well: np.empty((len(channels), 0, 0), np.float32) for well in read}
    return set(found), kept, dtype, size


def _image_files(
    entries: list[Path], channels: tuple[str, ...], pattern: str, fmt: int | None, problems: list[Problem]
) -> dict[str, dict[str, Path]]:
    """well -> {channel ("" for a one-file well) -> file} of the entries of images/ named like the pattern."""
    regex = _pattern_regex(pattern, channels)
    found: dict[str, dict[str, Path]] = {}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        match = regex.fullmatch(entry.name) if not entry.is_dir() else None
        if match is None:
            what = f"matches no image name ({pattern!r}, channels {', '.join(channels)}) and is ignored"
            fix = "rename it to match image_pattern in plate.yaml, or move it out of images/"
            problems.append(Problem(str(entry), "", what, fix, level="warning"))
            continue
        try:
            well = canonical_well(match["well"], fmt)
        except ValueError as exc:
            problems.append(Problem(str(entry), "", str(exc), well_fix(fmt)))
            continue
        kind = irregular(entry)  # a dangling or looping link, a device, a pipe, ...: never opened
        if kind:
            what = f"is named like an image but is {kind}, not a regular file: it is not read"
            fix = "put the image file itself here (or a link that resolves to it), or remove the entry"
            problems.append(Problem(str(entry), f"well {well}", what, fix))
            continue
        channel = match.groupdict().get("channel") or ""
        files = found.setdefault(well, {})
        if channel in files:
            what = f"names the same image as {files[channel].name}"
            problems.append(Problem(str(entry), f"well {well}", what, "keep one of the two files"))
            continue
        files[channel] = entry
    return found


def _read_wells(
    found: dict[str, dict[str, Path]],
    folder: Path,
    channels: tuple[str, ...],
    pattern: str,
    image_size: int | None,
    problems: list[Problem],
    keep_images: bool,
) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, int, Path]]]:
    """(well -> float32 image resized as read, if `keep_images`; well -> (dtype, side, file)), clean wells."""
    kept: dict[str, np.ndarray] = {}
    read: dict[str, tuple[str, int, Path]] = {}  # well -> (dtype, side, file) of every image read cleanly
    for well in row_major(found):
        files = found[well]
        missing = [channel for channel in channels if "" not in files and channel not in files]
        for channel in missing:
            expected = folder / pattern.format(well=well, channel=channel)
            fix = f"add {expected.name} (or remove the well's other channel files)"
            problems.append(Problem(str(expected), f"well {well}, channel {channel}", "is missing", fix))
        image = None if missing else _well_image(files, well, channels, problems, max_side(image_size))
        if image is None:
            continue
        array, file = image
        read[well] = (array.dtype.name, array.shape[-1], file)
        if keep_images:
            kept[well] = resize(array.astype(np.float32, copy=False), image_size or array.shape[-1])
        del array, image  # the full-size file is not kept: one well at a time in memory
    return kept, read


def _check_alike(
    read: dict[str, tuple[str, int, Path]], image_size: int | None, problems: list[Problem]
) -> tuple[str, int]:
    """(the plate's most common dtype and side); an image of another dtype (or side, without image_size) is
    an error."""
    dtypes = Counter(dtype for dtype, _, _ in read.values())
    dtype = dtypes.most_common(1)[0][0] if dtypes else ""
    sizes = Counter(side for _, side, _ in read.values())
    size = sizes.most_common(1)[0][0] if sizes else 0
    for well, (well_dtype, side, file) in read.items():
        if well_dtype != dtype:
            what = f"has dtype {well_dtype} but most images of this plate are {dtype}"
            fix = "export all images of a plate with one dtype (pixel values are used as read)"
            problems.append(Problem(str(file), f"well {well}", what, fix))
        if image_size is None and side != size:
            what = f"is {side}x{side} but most images of this plate are {size}x{size}"
            fix = "export all thumbnails at one size, or give an image size (--image-size) to resize them"
            problems.append(Problem(str(file), f"well {well}", what, fix))
    return dtype, size
