"""layout.csv: each well's treatment, concentration and role."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytoops.plate.problems import Problem
from cytoops.plate.table import parse_number, read_table
from cytoops.plate.wells import row_major

ROLES = ("sample", "negative_control", "positive_control")


def read_layout(path: Path, plate_id: str, fmt: int | None, problems: list[Problem]) -> pd.DataFrame | None:
    """layout.csv by well: treatment, concentration, role (+ extras); None when absent or unusable."""
    file = path / "layout.csv"
    if not file.exists():
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
