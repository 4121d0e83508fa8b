"""Read raw plates (the contract in docs/plate-format.md) and the `cytoops validate` command.

`read_plate` collects every problem it can find in a plate folder before it raises, so that a user
fixes a plate in one pass. Each problem is one line naming the file, the well or row, and the fix.
Rows of CSV files are numbered as a spreadsheet shows them: the header is row 1.

Strict where a mistake would silently change science (unknown cells, duplicate wells, mixed image
sizes or dtypes), forgiving where exports vary (well spellings, .tif/.TIFF, blank lines, a UTF-8 BOM,
an empty trailing column, range flags). No TensorFlow here: the CLI imports this at start-up.

Hostile input: an entry named like a well image that cannot be opened (a broken or looping link) is an
error naming it, never a silently dropped well. Images are read one well at a time and shrunk to the working
size at once (`validate` keeps no pixels at all), so a plate of 2048 px images needs no more memory than one
well's file; sizes and dtypes come from the files. A cytokine name whose slug would pass SLUG_MAX characters
gets a shortened one (its start and a hash), with a warning.
"""

from __future__ import annotations

import csv
import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
import typer
import yaml
from scipy import ndimage

DEFAULT_CHANNELS = ("actin", "mito", "nucleus")
DEFAULT_PATTERN = "{well}.tif"
FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}  # plate format -> (rows, columns)
CONFIG_KEYS = ("channels", "image_pattern", "format")
ROLES = ("sample", "negative_control", "positive_control")
IMAGE_DTYPES = ("uint8", "uint16", "float32")
MISSING = {"", "na", "nan", "n/a"}  # compared lower case
BELOW = {"oor<", "<lloq"}  # compared lower case with spaces removed
ABOVE = {"oor>", ">uloq"}
SLUG_MAX = 64  # characters: MLflow keys built from a slug stay far under its 250-character limit
FLAG_MARGIN = 0.05  # range flags sit this fraction of the measured span beyond the measured values
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
WELL = re.compile(r"([A-Za-z]{1,2})(\d{1,3})")
GREEK_NAMES = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu "
    "nu xi omicron pi rho sigma tau upsilon phi chi psi omega"
).split()
GREEK = {
    **dict(zip("αβγδεζηθικλμνξοπρστυφχψω", GREEK_NAMES, strict=True)),
    **dict(zip("ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ", [n.capitalize() for n in GREEK_NAMES], strict=True)),
    "ς": "sigma",
    "µ": "mu",  # MICRO SIGN, as in "µg/ml"
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a plate, as one line of text."""

    file: str  # path of the file concerned, as given
    where: str  # "well B03", "row 12 (well C05), column 'IL-6'", "key 'format'", or "" when none
    what: str
    fix: str
    level: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        return f"{self.file}: {place}{self.what}; fix: {self.fix}"


class PlateError(ValueError):
    """A plate (or data folder) that cannot be used; `problems` holds errors first, then warnings."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


@dataclass(frozen=True, eq=False)  # eq=False: fields hold arrays and frames, so compare plates by identity
class Plate:
    """One plate as read: images of the wells that have one, and the tables indexed by canonical well."""

    plate_id: str  # folder name
    path: Path
    channels: tuple[str, ...]
    format: int  # 96, 384 or 1536
    wells: tuple[str, ...]  # wells with an image, row-major; the first axis of `images`
    # float32 (len(wells), C, S, S), values as read (not rescaled), each resized to image_size as it was read;
    # (len(wells), C, 0, 0) when read with keep_images=False (validate: every file decoded, checked, dropped)
    images: np.ndarray
    image_dtype: str  # dtype of the files, e.g. "uint16"
    source_size: int  # side of the image files (the most common one), before any resizing
    readouts: pd.DataFrame | None  # every row of cytokines.csv: index "well", one float column per cytokine
    layout: pd.DataFrame | None  # index "well": treatment, concentration, role (+ any extra columns, as text)
    embeddings: pd.DataFrame | None  # index "well": float columns
    left_out: tuple[tuple[str, str], ...]  # (well, reason), row-major
    warnings: tuple[Problem, ...]

    @property
    def usable_wells(self) -> tuple[str, ...]:
        """Wells with both an image and a readouts row, row-major."""
        if self.readouts is None:
            return ()
        have = set(self.readouts.index)
        return tuple(well for well in self.wells if well in have)

    def cytokine_slugs(self) -> dict[str, str]:
        """Cytokine name as in the file -> its slug (unique per plate, checked on reading)."""
        if self.readouts is None:
            return {}
        return {name: slugify(name) for name in self.readouts.columns}


# --- wells and names ---------------------------------------------------------------------------------


def _row_index(letters: str) -> int:
    """'A' -> 0, 'P' -> 15, 'AF' -> 31; -1 when the letters name no row."""
    letters = letters.upper()
    if len(letters) == 1:
        return ord(letters) - ord("A")
    if letters[0] == "A" and "A" <= letters[1] <= "F":
        return 26 + ord(letters[1]) - ord("A")
    return -1


def _row_name(index: int) -> str:
    return chr(ord("A") + index) if index < 26 else "A" + chr(ord("A") + index - 26)


def canonical_well(text: str, fmt: int | None = None) -> str:
    """'a1', 'A01', 'A001' -> 'A01'. ValueError when malformed, or outside the plate format `fmt` if given."""
    match = WELL.fullmatch(str(text).strip())
    row = _row_index(match.group(1)) if match else -1
    column = int(match.group(2)) if match else 0
    if row < 0 or not 1 <= column <= 48:
        raise ValueError(f"{text!r} is not a well name (a row letter A-AF and a column 1-48, like A01)")
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"{fmt!r} is not a plate format (96, 384 or 1536)")
        rows, columns = FORMATS[fmt]
        if row >= rows or column > columns:
            last = _row_name(rows - 1)
            raise ValueError(
                f"well {text!r} is outside a {fmt}-well plate (rows A-{last}, columns 1-{columns})"
            )
    return f"{_row_name(row)}{column:02d}"


def well_row_col(well: str) -> tuple[int, int]:
    """'B03' -> (1, 2): zero-based row and column, for sorting and plate maps."""
    canonical = canonical_well(well)
    return _row_index(canonical[:-2]), int(canonical[-2:]) - 1


def _row_major(wells) -> list[str]:
    return sorted(wells, key=well_row_col)


def _smallest_format(wells) -> int:
    for fmt, (rows, columns) in FORMATS.items():
        if all(row < rows and column < columns for row, column in map(well_row_col, wells)):
            return fmt
    return 1536  # unreachable: canonical wells always fit 1536


def _long_slug(name: str) -> str:
    spelled = "".join(GREEK.get(char, char) for char in str(name))
    plain = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode()
    return re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_.-]", "_", plain)).strip("_.-")


def slugify(name: str) -> str:
    """A name safe for file names, MLflow metric keys and model names: 'TNF-α' -> 'TNF-alpha',
    'IL-12p40/p70' -> 'IL-12p40_p70', 'Activin A' -> 'Activin_A'. ValueError when nothing usable is left.
    At most SLUG_MAX characters: a longer one keeps its start and ends in '-' and 8 hex digits of a hash of
    the whole name (so two long names that differ only at the end still differ)."""
    slug = _long_slug(name)
    if not slug:
        raise ValueError(f"{name!r} has no letter or digit to make a file name of")
    if len(slug) > SLUG_MAX:
        digest = hashlib.sha256(str(name).encode()).hexdigest()[:8]
        slug = slug[: SLUG_MAX - 9].rstrip("_.-") + "-" + digest
    return slug


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _well_fix(fmt: int | None) -> str:
    if fmt is None:
        return "write the well as a row letter and a column number, like A01"
    return f"correct the well, or the format in plate.yaml (now {fmt})"


# --- plate.yaml -----------------------------------------------------------------------------------------


def _pattern_problem(pattern: object) -> str | None:
    """What is wrong with an image_pattern, or None."""
    if not isinstance(pattern, str):
        return f"must be text, not {type(pattern).__name__}"
    if pattern.count("{well}") != 1:
        return f"{pattern!r} must hold {{well}} exactly once"
    if pattern.count("{channel}") > 1 or re.sub(r"\{well\}|\{channel\}", "", pattern).count("{"):
        return f"{pattern!r} may hold only {{well}} and at most one {{channel}}"
    if not pattern.lower().endswith((".tif", ".tiff")):
        return f"{pattern!r} must end with .tif or .tiff"
    return None


def _read_config(path: Path, problems: list[Problem]) -> tuple[tuple[str, ...], str, int | None] | None:
    """(channels, image_pattern, format or None) from plate.yaml with defaults; None when it has errors."""
    file = path / "plate.yaml"
    if not file.exists():
        return DEFAULT_CHANNELS, DEFAULT_PATTERN, None
    name = str(file)
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        fix = "write valid YAML, e.g. 'channels: [actin, mito, nucleus]' on its own line"
        problems.append(Problem(name, "", f"cannot be read ({_one_line(exc)})", fix))
        return None
    config = {} if config is None else config
    if not isinstance(config, dict):
        fix = "write 'key: value' lines with the keys channels, image_pattern, format"
        problems.append(Problem(name, "", f"holds a {type(config).__name__}, not keys", fix))
        return None
    before = len(problems)
    for key in config:
        if key not in CONFIG_KEYS:
            fix = f"remove it; the keys are {', '.join(CONFIG_KEYS)}"
            problems.append(Problem(name, f"key {key!r}", "is not a plate.yaml key", fix))
    channels = config.get("channels", list(DEFAULT_CHANNELS))
    names_ok = isinstance(channels, list) and all(isinstance(c, str) and c.strip() for c in channels)
    if not (names_ok and channels and len(set(channels)) == len(channels)):
        what = f"must be a non-empty list of distinct names, not {channels!r}"
        fix = "write e.g. 'channels: [actin, mito, nucleus]'"
        problems.append(Problem(name, "key 'channels'", what, fix))
    pattern = config.get("image_pattern", DEFAULT_PATTERN)
    if _pattern_problem(pattern):
        fix = "write e.g. 'image_pattern: \"{well}.tif\"' or '\"{well}_{channel}.tif\"'"
        problems.append(Problem(name, "key 'image_pattern'", _pattern_problem(pattern), fix))
    fmt = config.get("format")
    if fmt is not None and (type(fmt) is not int or fmt not in FORMATS):
        fix = "write 'format: 96', 'format: 384' or 'format: 1536', or remove it to infer the format"
        problems.append(Problem(name, "key 'format'", f"must be 96, 384 or 1536, not {fmt!r}", fix))
    if len(problems) > before:
        return None
    return tuple(channels), pattern, fmt


# --- images ---------------------------------------------------------------------------------------------


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


def _load_tiff(file: Path, well: str, problems: list[Problem]) -> np.ndarray | None:
    where = f"well {well}"
    try:
        with tifffile.TiffFile(file) as tiff:
            dtype = np.dtype(tiff.series[0].dtype)  # from the header: a wrong file is never decoded
            if dtype.name not in IMAGE_DTYPES:
                what = f"has dtype {dtype.name}; supported are {', '.join(IMAGE_DTYPES)}"
                problems.append(Problem(str(file), where, what, "export it as uint8, uint16 or float32"))
                return None
            array = tiff.asarray()
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises many types for broken files (TiffFileError, zlib.error, ...)
        what = f"cannot be read as a TIFF ({type(exc).__name__}: {_one_line(exc)})"
        problems.append(Problem(str(file), where, what, "re-export the image: it is truncated or not a TIFF"))
        return None
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        fix = "re-export it without NaN or infinite pixels"
        problems.append(Problem(str(file), where, "holds NaN or infinite values", fix))
        return None
    return array


def _well_image(
    files: dict[str, Path], well: str, channels: tuple[str, ...], problems: list[Problem]
) -> tuple[np.ndarray, Path] | None:
    """One well's (C, Y, X) image from its file ("" key) or its per-channel files."""
    where = f"well {well}"
    if "" in files:
        file = files[""]
        array = _load_tiff(file, well, problems)
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
        planes = [_load_tiff(files[channel], well, problems) for channel in channels]
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


def _resize(image: np.ndarray, size: int) -> np.ndarray:
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


def _read_images(
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
        problems.append(Problem(str(folder), "", f"cannot be listed ({_one_line(exc)})", "make it readable"))
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
            problems.append(Problem(str(entry), "", str(exc), _well_fix(fmt)))
            continue
        if not entry.is_file():  # a dangling or looping symbolic link, a socket, ...
            kind = "a broken or looping symbolic link" if entry.is_symlink() else "not a regular file"
            what = f"is named like an image but is {kind}: it cannot be read"
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
    for well in _row_major(found):
        files = found[well]
        missing = [channel for channel in channels if "" not in files and channel not in files]
        for channel in missing:
            expected = folder / pattern.format(well=well, channel=channel)
            fix = f"add {expected.name} (or remove the well's other channel files)"
            problems.append(Problem(str(expected), f"well {well}, channel {channel}", "is missing", fix))
        image = None if missing else _well_image(files, well, channels, problems)
        if image is None:
            continue
        array, file = image
        read[well] = (array.dtype.name, array.shape[-1], file)
        if keep_images:
            kept[well] = _resize(array.astype(np.float32, copy=False), image_size or array.shape[-1])
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


# --- CSV tables -----------------------------------------------------------------------------------------


def _read_table(
    file: Path, plate_id: str, fmt: int | None, problems: list[Problem]
) -> tuple[list[str], list[tuple[str, str, list[str]]]] | None:
    """A per-well CSV as (value column names, [(where, well, value cells)]); bad rows are reported and
    skipped. Handles the `well` column (any case) and an optional `plate` column. None when unusable."""
    name = str(file)
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        problems.append(Problem(name, "", "is not UTF-8 text", "save it as 'CSV UTF-8' (comma-separated)"))
        return None
    except (OSError, csv.Error) as exc:
        what = f"cannot be read ({_one_line(exc)})"
        problems.append(Problem(name, "", what, "save it as a plain CSV file"))
        return None
    if not lines:
        fix = "write a header row with a 'well' column, then one row per well"
        problems.append(Problem(name, "", "is empty", fix))
        return None
    header = [cell.strip() for cell in lines[0][1]]
    lowered = [column.lower() for column in header]
    if lowered.count("well") != 1:
        what = "has no 'well' column" if "well" not in lowered else "has more than one 'well' column"
        fix = "name the one column of well ids 'well' (comma-separated, header in the first row)"
        problems.append(Problem(name, "row 1", what, fix))
        return None
    names = [column.lower() if column.lower() in ("well", "plate") else column for column in header]
    repeated = [column for column, count in Counter(names).items() if column and count > 1]
    for column in repeated:
        what = f"column {column!r} appears twice"
        problems.append(Problem(name, "row 1", what, "give each column one name"))
    keep, unnamed = [], False
    for index, column in enumerate(header):
        if column.lower() in ("well", "plate"):
            continue
        if not column:
            if all(index >= len(row) or not row[index].strip() for _, row in lines[1:]):
                continue  # an empty column an export left behind
            fix = "name the column in the header row, or delete it"
            problems.append(Problem(name, f"column {index + 1}", "has values but no name", fix))
            unnamed = True
        keep.append(index)
    if repeated or unnamed:
        return None

    well_at = lowered.index("well")
    plate_at = lowered.index("plate") if "plate" in lowered else None
    seen: dict[str, int] = {}
    rows = []
    for number, row in lines[1:]:
        if len(row) < len(header) or any(cell.strip() for cell in row[len(header) :]):
            what = f"has {len(row)} cells but the header has {len(header)} columns"
            problems.append(Problem(name, f"row {number}", what, "give every row one cell per header column"))
            continue
        try:
            well = canonical_well(row[well_at], fmt)
        except ValueError as exc:
            problems.append(Problem(name, f"row {number}", str(exc), _well_fix(fmt)))
            continue
        where = f"row {number} (well {well})"
        if plate_at is not None and row[plate_at].strip() != plate_id:
            what = f"plate {row[plate_at].strip()!r} is not this folder's plate {plate_id!r}"
            fix = "move the row to its plate's folder, or correct the plate column (the folder name)"
            problems.append(Problem(name, where, what, fix))
            continue
        if well in seen:
            what = f"well {well} already has row {seen[well]}"
            problems.append(Problem(name, where, what, "keep one row per well"))
            continue
        seen[well] = number
        rows.append((where, well, [row[index].strip() for index in keep]))
    return [header[index] for index in keep], rows


def _number(text: str) -> float | None:
    """A plain number, NaN for a missing cell, None for anything else."""
    if text.lower() in MISSING:
        return np.nan
    return float(text) if NUMBER.fullmatch(text) else None


def _readout(text: str) -> float | str | None:
    """A readout cell: a number, NaN (missing), "below"/"above" (range flags), or None when invalid."""
    compact = "".join(text.lower().split())
    if compact in BELOW:
        return "below"
    if compact in ABOVE:
        return "above"
    if text.startswith("*"):  # extrapolated: the number stands
        return float(text[1:].strip()) if NUMBER.fullmatch(text[1:].strip()) else None
    return _number(text)


def _read_readouts(path: Path, plate_id: str, fmt: int | None, problems: list) -> pd.DataFrame | None:
    file = path / "cytokines.csv"
    table = _read_table(file, plate_id, fmt, problems)
    if table is None:
        return None
    columns, rows = table
    name = str(file)
    if not columns:
        fix = "add one column per cytokine next to 'well', named as the assay names it"
        problems.append(Problem(name, "row 1", "has no cytokine column", fix))
        return None
    slugs: dict[str, str] = {}
    for column in columns:
        try:
            slug = slugify(column).lower()  # lower: file names must differ on case-insensitive disks too
        except ValueError as exc:
            problems.append(Problem(name, f"column {column!r}", str(exc), "rename the cytokine"))
            continue
        if len(_long_slug(column)) > SLUG_MAX:
            what = (
                f"cytokine name is {len(column)} characters: file names, MLflow metrics and the model "
                f"registry use the shortened {slugify(column)!r}"
            )
            fix = f"nothing to do, or give the cytokine a name under {SLUG_MAX} characters"
            where = f"column {column[:40] + '...'!r}"
            problems.append(Problem(name, where, what, fix, level="warning"))
        if slug in slugs:
            what = f"cytokines {slugs[slug]!r} and {column!r} give the same slug {slugify(column)!r}"
            problems.append(Problem(name, "row 1", what, "rename one of them so that their names differ"))
        slugs.setdefault(slug, column)

    values = np.full((len(rows), len(columns)), np.nan)
    flags = []
    for i, (where, _, cells) in enumerate(rows):
        for j, text in enumerate(cells):
            value = _readout(text)
            if value is None:
                what = f"{text!r} is not a number, a missing value or a range flag"
                fix = "write a number, leave it empty (or NA), or use OOR <, OOR >, <LLOQ, >ULOQ, *12.3"
                problems.append(Problem(name, f"{where}, column {columns[j]!r}", what, fix))
            elif isinstance(value, str):
                flags.append((i, j, value))
            else:
                values[i, j] = value
    measured = [values[:, j][~np.isnan(values[:, j])] for j in range(len(columns))]
    for i, j, flag in flags:
        low, high = (measured[j].min(), measured[j].max()) if measured[j].size else (0.0, 0.0)
        span = (high - low) or 1.0
        values[i, j] = low - FLAG_MARGIN * span if flag == "below" else high + FLAG_MARGIN * span
    index = pd.Index([well for _, well, _ in rows], name="well")
    frame = pd.DataFrame(values, index=index, columns=columns)
    return frame.loc[_row_major(frame.index)]


def _read_layout(path: Path, plate_id: str, fmt: int | None, problems: list[Problem]) -> pd.DataFrame | None:
    file = path / "layout.csv"
    if not file.exists():
        return None
    table = _read_table(file, plate_id, fmt, problems)
    if table is None:
        return None
    columns, rows = table
    name = str(file)
    known = [column.lower() for column in columns]
    if "treatment" not in known:
        what = "has no 'treatment' column: each well is its own group, folds cannot keep replicates together"
        fix = "add a 'treatment' column naming each well's compound or condition"
        problems.append(Problem(name, "row 1", what, fix, level="warning"))
    records = []
    for where, well, cells in rows:
        record = {"treatment": well, "concentration": np.nan, "role": "sample"}
        for column, text in zip(columns, cells, strict=True):
            key = column.lower()
            if key == "treatment":
                record[key] = text
                if not text:
                    fix = "name the compound or condition (e.g. DMSO for untreated wells)"
                    problems.append(Problem(name, where, "has no treatment", fix))
            elif key == "concentration":
                record[key] = _number(text)
                if record[key] is None:
                    what = f"concentration {text!r} is not a number"
                    fix = "write a plain number (state the unit elsewhere), or leave it empty"
                    problems.append(Problem(name, where, what, fix))
            elif key == "role":
                record[key] = "_".join(text.lower().replace("-", " ").split()) or "sample"
                if record[key] not in ROLES:
                    what = f"role {text!r} is not one of {', '.join(ROLES)}"
                    fix = "use one of these roles, or leave it empty (sample)"
                    problems.append(Problem(name, where, what, fix))
            else:
                record[column] = text
        records.append(record)
    extras = [column for column in columns if column.lower() not in ("treatment", "concentration", "role")]
    index = pd.Index([well for _, well, _ in rows], name="well")
    frame = pd.DataFrame(records, index=index, columns=["treatment", "concentration", "role", *extras])
    frame["concentration"] = frame["concentration"].astype(float)
    return frame.loc[_row_major(frame.index)]


def _read_embeddings(path: Path, plate_id: str, fmt: int | None, problems: list) -> pd.DataFrame | None:
    file = path / "embeddings.csv"
    if not file.exists():
        return None
    table = _read_table(file, plate_id, fmt, problems)
    if table is None:
        return None
    columns, rows = table
    name = str(file)
    if not columns:
        fix = "add the vector's columns next to 'well'"
        problems.append(Problem(name, "row 1", "has no embedding column", fix))
        return None
    values = np.full((len(rows), len(columns)), np.nan)
    for i, (where, _, cells) in enumerate(rows):
        for j, text in enumerate(cells):
            if NUMBER.fullmatch(text):
                values[i, j] = float(text)
            else:
                what = f"{text!r} is not a number"
                fix = "write every embedding value as a number (no empty cells)"
                problems.append(Problem(name, f"{where}, column {columns[j]!r}", what, fix))
    frame = pd.DataFrame(values, index=pd.Index([w for _, w, _ in rows], name="well"), columns=columns)
    return frame.loc[_row_major(frame.index)]


# --- plates ---------------------------------------------------------------------------------------------


def _wells_phrase(wells: list[str]) -> str:
    return f"well {wells[0]}" if len(wells) == 1 else f"wells {', '.join(wells)}"


def read_plate(
    path: Path, image_size: int | None = None, require_readouts: bool = True, keep_images: bool = True
) -> Plate:
    """Read one plate folder. Collects every problem it can find, then raises PlateError if any is an
    error; warnings (left-out wells, ignored files) go in Plate.warnings. `image_size` resizes all
    thumbnails to that size, each as it is read (without it, all must share one size). Without
    `keep_images` every image is decoded and checked but none is kept (Plate.images has no pixels)."""
    path = Path(path)
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive number of pixels, not {image_size}")
    if not path.is_dir():
        fix = "pass a plate folder (images/, cytokines.csv)"
        raise PlateError([Problem(str(path), "", "is not a folder", fix)])
    problems: list[Problem] = []
    config = _read_config(path, problems)
    channels, pattern, fmt = config or (DEFAULT_CHANNELS, DEFAULT_PATTERN, None)
    found, images, dtype, source_size = set(), {}, "", 0
    if config is not None:  # with a broken plate.yaml, image problems would only mislead
        found, images, dtype, source_size = _read_images(
            path, channels, pattern, fmt, image_size, problems, keep_images
        )
    readouts = None
    if (path / "cytokines.csv").exists():
        readouts = _read_readouts(path, path.name, fmt, problems)
    elif require_readouts:
        fix = "add cytokines.csv: a 'well' column and one column per cytokine"
        problems.append(Problem(str(path / "cytokines.csv"), "", "is missing", fix))
    layout = _read_layout(path, path.name, fmt, problems)
    embeddings = _read_embeddings(path, path.name, fmt, problems)

    left_out: list[tuple[str, str]] = []
    if config is not None and found and readouts is not None:
        left_out = _match_wells(path, found, readouts, layout, embeddings, problems)

    errors = [problem for problem in problems if problem.level == "error"]
    warnings = tuple(problem for problem in problems if problem.level != "error")
    if errors:
        raise PlateError(errors + list(warnings))
    wells = tuple(_row_major(images))
    all_wells = set(wells) | set(readouts.index if readouts is not None else ())
    for table in (layout, embeddings):
        all_wells |= set(table.index) if table is not None else set()
    return Plate(
        plate_id=path.name,
        path=path,
        channels=channels,
        format=fmt or _smallest_format(all_wells),
        wells=wells,
        images=np.stack([images[well] for well in wells]),  # float32 already: no second copy
        image_dtype=dtype,
        source_size=source_size,
        readouts=readouts,
        layout=layout,
        embeddings=embeddings,
        left_out=tuple(sorted(left_out, key=lambda item: well_row_col(item[0]))),
        warnings=warnings,
    )


def _match_wells(
    path: Path,
    found: set[str],
    readouts: pd.DataFrame,
    layout: pd.DataFrame | None,
    embeddings: pd.DataFrame | None,
    problems: list[Problem],
) -> list[tuple[str, str]]:
    """(well, reason) of the wells left out for lacking an image or readouts; a table lacking a usable well
    is an error."""
    no_image = [well for well in readouts.index if well not in found]
    no_readouts = [well for well in _row_major(found) if well not in readouts.index]
    if no_image:
        what = "readouts but no image: left out"
        fix = "add the images to images/ if they exist; otherwise nothing to do"
        where = _wells_phrase(no_image)
        problems.append(Problem(str(path / "images"), where, what, fix, level="warning"))
    if no_readouts:
        what = "an image but no readouts: left out"
        fix = "add the rows to cytokines.csv if the wells were measured; otherwise nothing to do"
        where = _wells_phrase(no_readouts)
        problems.append(Problem(str(path / "cytokines.csv"), where, what, fix, level="warning"))
    left_out = [(well, "readouts but no image") for well in no_image]
    left_out += [(well, "image but no readouts") for well in no_readouts]
    usable = [well for well in _row_major(found) if well in readouts.index]
    if not usable:
        what = "no well has both an image and readouts"
        fix = "check that cytokines.csv belongs to this plate and names wells as the image files do"
        problems.append(Problem(str(path / "cytokines.csv"), "", what, fix))
    for table, file in ((layout, "layout.csv"), (embeddings, "embeddings.csv")):
        lacking = [] if table is None else [well for well in usable if well not in table.index]
        if lacking:
            what = "an image and readouts but no row here"
            fix = f"add a row for every usable well, or remove {file}"
            problems.append(Problem(str(path / file), _wells_phrase(lacking), what, fix))
    return left_out


def _scan(
    data_dir: Path, image_size: int | None, require_readouts: bool, keep_images: bool = True
) -> tuple[list[Plate], list]:
    """All plates of a data folder that read cleanly, and every problem (errors and warnings)."""
    data_dir = Path(data_dir)
    name = str(data_dir)
    fix = "pass the data folder that holds one folder per plate"
    if not data_dir.is_dir():
        return [], [Problem(name, "", "does not exist" if not data_dir.exists() else "is not a folder", fix)]
    if (data_dir / "images").is_dir() or (data_dir / "cytokines.csv").exists():
        return [], [Problem(name, "", "is a plate folder, not a data folder", f"{fix}: its parent folder")]
    try:
        entries = sorted(data_dir.iterdir())
    except OSError as exc:
        return [], [Problem(name, "", f"cannot be listed ({_one_line(exc)})", "make it readable")]
    folders = [entry for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    if not folders:
        fix = "add one folder per plate (images/ and cytokines.csv inside), e.g. with `cytoops demo-plate`"
        return [], [Problem(name, "", "holds no plate folder", fix)]
    plates, problems = [], []
    for folder in folders:
        try:
            plate = read_plate(folder, image_size, require_readouts, keep_images)
        except PlateError as exc:
            problems.extend(exc.problems)
            continue
        plates.append(plate)
        problems.extend(plate.warnings)
    for plate in plates[1:]:
        first = plates[0]
        if plate.channels != first.channels:
            theirs, ours = "/".join(first.channels), "/".join(plate.channels)
            what = f"has channels {ours} but plate {first.plate_id} has {theirs}"
            fix = "give all plates the same channels, in one order"
            problems.append(Problem(str(plate.path), "", what, fix))
        if image_size is None and plate.source_size != first.source_size:
            size, other = plate.source_size, first.source_size
            what = f"has {size}x{size} images but plate {first.plate_id} has {other}x{other}"
            fix = "give an image size (--image-size) to resize them"
            problems.append(Problem(str(plate.path), "", what, fix))
        if plate.image_dtype != first.image_dtype:
            what = f"has {plate.image_dtype} images but plate {first.plate_id} has {first.image_dtype}"
            fix = "check that pixel values are comparable across plates (they are used as read)"
            problems.append(Problem(str(plate.path), "", what, fix, level="warning"))
    return plates, problems


def read_data(data_dir: Path, image_size: int | None = None, require_readouts: bool = True) -> list[Plate]:
    """Every plate folder of `data_dir` (hidden entries ignored); PlateError with all plates' problems."""
    plates, problems = _scan(data_dir, image_size, require_readouts)
    if any(problem.level == "error" for problem in problems):
        raise PlateError(sorted(problems, key=lambda problem: problem.level != "error"))
    return plates


def check_data(
    data_dir: Path, image_size: int | None = None, keep_images: bool = True
) -> tuple[list[Plate], list[Problem]]:
    """The plates that read cleanly and all problems (errors and warnings); never raises for bad input."""
    return _scan(data_dir, image_size, require_readouts=True, keep_images=keep_images)


WORKING_SIZE = 64  # wrangle.image_size's default: the size validate compares files with
LARGE_IMAGE_FACTOR = 4  # images this many times the working size (or more) get a note


def large_image_note(plates: list[Plate], image_size: int) -> str | None:
    """One line when the image files are far larger than the size they are used at, else None."""
    side = max((plate.source_size for plate in plates), default=0)
    if side < LARGE_IMAGE_FACTOR * image_size:
        return None
    return (
        f"note: images are {side}x{side}, {side / image_size:.0f}x the working size "
        f"{image_size}x{image_size}: "
        f"each is shrunk as it is read (one at a time in memory); export smaller thumbnails to read faster"
    )


def _summary(plate: Plate, image_size: int | None) -> str:
    size = image_size or plate.source_size
    n_cytokines = 0 if plate.readouts is None else plate.readouts.shape[1]
    n_missing = 0 if plate.readouts is None else int(plate.readouts.isna().to_numpy().sum())
    reasons = Counter(reason for _, reason in plate.left_out)
    left = f" ({', '.join(f'{n} {reason}' for reason, n in reasons.items())})" if reasons else ""
    return (
        f"{plate.plate_id}: {len(plate.wells)} wells with images, {len(plate.usable_wells)} usable, "
        f"{plate.format}-well format, channels {'/'.join(plate.channels)}, images {size}x{size} "
        f"{plate.image_dtype}, {n_cytokines} cytokines, {n_missing} missing readouts, "
        f"{len(plate.left_out)} wells left out{left}"
    )


def validate_command(
    data_dir: Path = typer.Argument(..., help="Data folder holding one folder per plate."),
    image_size: int | None = typer.Option(
        None, "--image-size", min=1, help="Resize thumbnails to this size (else all must share one size)."
    ),
) -> None:
    """Check raw plates against the plate format: one summary line per plate, then every problem.
    Exit code 0 when the data is usable, 1 when not. Writes nothing."""
    plates, problems = check_data(data_dir, image_size, keep_images=False)
    for plate in plates:
        typer.echo(_summary(plate, image_size))
    note = large_image_note(plates, image_size or WORKING_SIZE)
    if note:
        typer.echo(note)
    errors = [problem for problem in problems if problem.level == "error"]
    for problem in errors + [problem for problem in problems if problem.level != "error"]:
        typer.echo(f"{problem.level}: {problem}")
    if errors or not plates:
        n_warnings = len(problems) - len(errors)
        typer.echo(f"{data_dir}: not usable: {len(errors)} error(s), {n_warnings} warning(s)")
        raise typer.Exit(1)
    typer.echo(f"{data_dir}: usable: {len(plates)} plate(s), {len(problems)} warning(s)")
