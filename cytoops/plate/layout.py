"""layout.csv: each well's treatment, concentration and role."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytoops.plate.problems import Problem, present
from cytoops.plate.table import parse_number, read_table
from cytoops.plate.wells import row_major

ROLES = ("sample", "negative_control", "positive_control")
SHOWN_WELLS = 3  # wells named per treatment spelling in a warning, then '+N more'


def read_layout(path: Path, plate_id: str, fmt: int | None, problems: list[Problem]) -> pd.DataFrame | None:
    """layout.csv by well: treatment, concentration, role (+ extras); None when absent or unusable."""
    file = path / "layout.csv"
    if not present(file):
        return None
    table = read_table(file, plate_id, fmt, problems)
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
                record[key] = parse_number(text)
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
    return frame.loc[row_major(frame.index)]


def spelling(name: str) -> str:
    """A treatment name without case, spaces or punctuation: 'CPD-007' and 'cpd 007' -> 'cpd007'."""
    return "".join(char for char in name.casefold() if char.isalnum())


def _wells(wells: list[str]) -> str:
    shown = ", ".join(wells[:SHOWN_WELLS])
    more = f" +{len(wells) - SHOWN_WELLS} more" if len(wells) > SHOWN_WELLS else ""
    return f"{'well' if len(wells) == 1 else 'wells'} {shown}{more}"


def spelling_problems(layouts: list[tuple[str, Path, pd.DataFrame]], data_dir: Path) -> list[Problem]:
    """A warning for each group of treatment names that differ only in case, spaces or punctuation
    ('CPD-007', 'CPD 007'), across the plates' (plate id, layout.csv, layout) as read: folds would keep such
    names apart as different compounds. Each name is given with its first wells."""
    names: dict[str, dict[str, list[tuple[str, str]]]] = {}  # spelling -> name -> [(plate, well)]
    for plate_id, _, layout in layouts:
        for well, treatment in layout["treatment"].items():
            names.setdefault(spelling(treatment), {}).setdefault(treatment, []).append((plate_id, well))
    files = {plate_id: file for plate_id, file, _ in layouts}
    problems = []
    for spelled in names.values():
        if len(spelled) < 2:
            continue
        plates = sorted({plate for wells in spelled.values() for plate, _ in wells})
        name = str(files[plates[0]]) if len(plates) == 1 else str(data_dir)
        parts = [
            f"{treatment!r} ({_wells([w if len(plates) == 1 else f'{p}/{w}' for p, w in wells])})"
            for treatment, wells in spelled.items()
        ]
        listed = ", ".join(parts[:-1]) + " and " + parts[-1]
        what = f"treatments {listed} differ only in case, spaces or punctuation: folds keep them apart"
        fix = "spell each compound one way in every well (or rename one, if they are different compounds)"
        problems.append(Problem(name, "column 'treatment'", what, fix, level="warning"))
    return problems
