"""The `cytoops validate` command: one summary line per plate, then every problem; exit 1 when unusable."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import typer

from cytoops.plate.assemble import Plate, check_data

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
