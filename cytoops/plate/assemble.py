"""A plate folder read whole (`read_plate`), and a data folder of plates (`read_data`, `check_data`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cytoops.plate.config import DEFAULT_CHANNELS, DEFAULT_PATTERN, read_config
from cytoops.plate.embeddings import read_embeddings
from cytoops.plate.images import read_images
from cytoops.plate.layout import read_layout, spelling_problems
from cytoops.plate.problems import PlateError, Problem, one_line, present
from cytoops.plate.readouts import read_readouts
from cytoops.plate.slugs import slugify
from cytoops.plate.wells import row_major, smallest_format, well_row_col, wells_phrase


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
    config = read_config(path, problems)
    channels, pattern, fmt = config or (DEFAULT_CHANNELS, DEFAULT_PATTERN, None)
    found, images, dtype, source_size = set(), {}, "", 0
    if config is not None:  # with a broken plate.yaml, image problems would only mislead
        found, images, dtype, source_size = read_images(
            path, channels, pattern, fmt, image_size, problems, keep_images
        )
    readouts = None
    if present(path / "cytokines.csv"):
        readouts = read_readouts(path, path.name, fmt, problems)
    elif require_readouts:
        fix = "add cytokines.csv: a 'well' column and one column per cytokine"
        problems.append(Problem(str(path / "cytokines.csv"), "", "is missing", fix))
    layout = read_layout(path, path.name, fmt, problems)
    embeddings = read_embeddings(path, path.name, fmt, problems)

    left_out: list[tuple[str, str]] = []
    if config is not None and found and readouts is not None:
        left_out = _match_wells(path, found, readouts, layout, embeddings, problems)

    errors = [problem for problem in problems if problem.level == "error"]
    warnings = tuple(problem for problem in problems if problem.level != "error")
    if errors:
        raise PlateError(errors + list(warnings))
    wells = tuple(row_major(images))
    all_wells = set(wells) | set(readouts.index if readouts is not None else ())
    for table in (layout, embeddings):
        all_wells |= set(table.index) if table is not None else set()
    return Plate(
        plate_id=path.name,
        path=path,
        channels=channels,
        format=fmt or smallest_format(all_wells),
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
    no_readouts = [well for well in row_major(found) if well not in readouts.index]
    if no_image:
        what = "readouts but no image: left out"
        fix = "add the images to images/ if they exist; otherwise nothing to do"
        where = wells_phrase(no_image)
        problems.append(Problem(str(path / "images"), where, what, fix, level="warning"))
    if no_readouts:
        what = "an image but no readouts: left out"
        fix = "add the rows to cytokines.csv if the wells were measured; otherwise nothing to do"
        where = wells_phrase(no_readouts)
        problems.append(Problem(str(path / "cytokines.csv"), where, what, fix, level="warning"))
    left_out = [(well, "readouts but no image") for well in no_image]
    left_out += [(well, "image but no readouts") for well in no_readouts]
    usable = [well for well in row_major(found) if well in readouts.index]
    if not usable:
        what = "no well has both an image and readouts"
        fix = "check that cytokines.csv belongs to this plate and names wells as the image files do"
        problems.append(Problem(str(path / "cytokines.csv"), "", what, fix))
    for table, file in ((layout, "layout.csv"), (embeddings, "embeddings.csv")):
        lacking = [] if table is None else [well for well in usable if well not in table.index]
        if lacking:
            what = "an image and readouts but no row here"
            fix = f"add a row for every usable well, or remove {file}"
            problems.append(Problem(str(path / file), wells_phrase(lacking), what, fix))
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
        return [], [Problem(name, "", f"cannot be listed ({one_line(exc)})", "make it readable")]
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
    layouts = [(p.plate_id, p.path / "layout.csv", p.layout) for p in plates if p.layout is not None]
    problems.extend(spelling_problems(layouts, data_dir))
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
