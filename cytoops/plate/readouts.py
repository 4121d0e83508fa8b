"""cytokines.csv: one column per cytokine; numbers, missing cells and Luminex-style range flags."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytoops.plate.problems import Problem
from cytoops.plate.slugs import SLUG_MAX, long_slug, slugify
from cytoops.plate.table import NUMBER, parse_number, read_values
from cytoops.plate.wells import row_major

BELOW = {"oor<", "<lloq"}  # compared lower case with spaces removed
ABOVE = {"oor>", ">uloq"}
FLAG_MARGIN = 0.05  # range flags sit this fraction of the measured span beyond the measured values


def _readout(text: str) -> float | str | None:
    """A readout cell: a number, NaN (missing), "below"/"above" (range flags), or None when invalid."""
    compact = "".join(text.lower().split())
    if compact in BELOW:
        return "below"
    if compact in ABOVE:
        return "above"
    if text.startswith("*"):  # extrapolated: the number stands
        return float(text[1:].strip()) if NUMBER.fullmatch(text[1:].strip()) else None
    return parse_number(text)


def read_readouts(path: Path, plate_id: str, fmt: int | None, problems: list) -> pd.DataFrame | None:
    """cytokines.csv by well, one float column per cytokine (range flags placed); None when unusable."""
    file = path / "cytokines.csv"
    fix = "add one column per cytokine next to 'well', named as the assay names it"
    table = read_values(file, plate_id, fmt, problems, "cytokine", fix)
    if table is None:
        return None
    columns, rows = table
    name = str(file)
    slugs: dict[str, str] = {}
    for column in columns:
        try:
            slug = slugify(column).lower()  # lower: file names must differ on case-insensitive disks too
        except ValueError as exc:
            problems.append(Problem(name, f"column {column!r}", str(exc), "rename the cytokine"))
            continue
        if len(long_slug(column)) > SLUG_MAX:
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
    return frame.loc[row_major(frame.index)]
