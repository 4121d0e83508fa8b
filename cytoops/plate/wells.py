"""Well names: 'a1', 'A01', 'A001' are one well, `A01`; rows and columns; plate formats."""

from __future__ import annotations

import re

FORMATS = {96: (8, 12), 384: (16, 24), 1536: (32, 48)}  # plate format -> (rows, columns)
WELL = re.compile(r"([A-Za-z]{1,2})(\d{1,3})")


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


def row_major(wells) -> list[str]:
    """Canonical wells sorted A01, A02, ..., B01, ..."""
    return sorted(wells, key=well_row_col)


def smallest_format(wells) -> int:
    """The smallest plate format that holds every one of the canonical wells."""
    for fmt, (rows, columns) in FORMATS.items():
        if all(row < rows and column < columns for row, column in map(well_row_col, wells)):
            return fmt
    return 1536  # unreachable: canonical wells always fit 1536


def well_fix(fmt: int | None) -> str:
    """The fix for a bad well name, given the plate format of plate.yaml (None when it names none)."""
    if fmt is None:
        return "write the well as a row letter and a column number, like A01"
    return f"correct the well, or the format in plate.yaml (now {fmt})"


def wells_phrase(wells: list[str]) -> str:
    """'well A01' or 'wells A01, B02': the `where` of a problem concerning these wells."""
    return f"well {wells[0]}" if len(wells) == 1 else f"wells {', '.join(wells)}"
