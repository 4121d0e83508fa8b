"""A per-well CSV file (cytokines.csv, layout.csv, embeddings.csv) as rows of cells, and its number cells."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np

from cytoops.plate.problems import Problem, irregular, one_line
from cytoops.plate.wells import canonical_well, well_fix

MISSING = {"", "na", "nan", "n/a"}  # compared lower case
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def read_values(file: Path, plate_id: str, fmt: int | None, problems: list[Problem], column: str, fix: str):
    """`read_table` of a file that needs value columns: None, and a problem naming the missing `column`
    (e.g. 'cytokine') and the `fix`, when it has none."""
    table = read_table(file, plate_id, fmt, problems)
    if table is not None and not table[0]:
        problems.append(Problem(str(file), "row 1", f"has no {column} column", fix))
        return None
    return table


def read_table(
    file: Path, plate_id: str, fmt: int | None, problems: list[Problem]
) -> tuple[list[str], list[tuple[str, str, list[str]]]] | None:
    """A per-well CSV as (value column names, [(where, well, value cells)]); bad rows are reported and
    skipped. Handles the `well` column (any case) and an optional `plate` column. None when unusable."""
    name = str(file)
    kind = irregular(file)
    if kind:  # a pipe or a device is never opened: reading one may never end
        problems.append(Problem(name, "", f"is {kind}, not a regular file", "put the CSV file itself here"))
        return None
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        problems.append(Problem(name, "", "is not UTF-8 text", "save it as 'CSV UTF-8' (comma-separated)"))
        return None
    except (OSError, csv.Error) as exc:
        what = f"cannot be read ({one_line(exc)})"
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
            problems.append(Problem(name, f"row {number}", str(exc), well_fix(fmt)))
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


def parse_number(text: str) -> float | None:
    """A plain number, NaN for a missing cell, None for anything else."""
    if text.lower() in MISSING:
        return np.nan
    return float(text) if NUMBER.fullmatch(text) else None
