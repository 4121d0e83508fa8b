"""embeddings.csv: one numeric vector per well from an earlier pipeline (the embedding baseline's input)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytoops.plate.problems import Problem, present
from cytoops.plate.table import NUMBER, read_values
from cytoops.plate.wells import row_major


def read_embeddings(path: Path, plate_id: str, fmt: int | None, problems: list) -> pd.DataFrame | None:
    """embeddings.csv as a frame (index well, float columns); None when absent or unusable."""
    file = path / "embeddings.csv"
    if not present(file):
        return None
    table = read_values(file, plate_id, fmt, problems, "embedding", "add the vector's columns next to 'well'")
    if table is None:
        return None
    columns, rows = table
    name = str(file)
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
    return frame.loc[row_major(frame.index)]
