"""tables: the tables stages hand each other, their key columns and their types, said once.

Stages write CSV (a user can open it, `dvc diff` and `dvc plots` read it) and read it back with `read`, which
returns what was written: an identifier stays a string (plate '001' stays '001', a cytokine called 'NA' stays
'NA'), a flag comes back a bool. Every module names these columns through this one, never by hand.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

MODEL = ["architecture", "augmentation"]  # one trained model: an architecture under an augmentation
FOLD = ["cytokine", "repeat", "fold"]  # one held-out fold of one cytokine
UNIT = [*MODEL, "cytokine", "repeat", "fold"]  # one fit: a model on one fold of one cytokine
CURVES = [*UNIT, "epoch", "loss", "val_loss", "accuracy", "val_accuracy"]
# one fit: its training wells and images, validation and test wells, best and last epoch, time
FITS = [*UNIT, "n_train", "n_train_images", "n_val", "n_test", "best_epoch", "epochs_run", "seconds"]
PREDICTIONS = [*UNIT, "well_index", "plate", "well", "label", "balanced", "prob"]
LABELS = ["cytokine", "slug", "well_index", "value", "label", "balanced"]  # each measured well, binarized
FOLDS = ["cytokine", "repeat", "well_index", "fold", "balanced"]  # the fold of every labelled well
SCALING = ["plate", "channel", "lo", "hi"]  # raw intensities mapped to 0 and 1, per plate and channel

IDENTIFIERS = (
    *("plate", "well", "cytokine", "slug", "treatment", "role", "group"),
    *MODEL,
)
FLAGS = ("kept", "balanced", "edge", "predictable")
_FLAG_VALUES = {"true": True, "false": False}


def read(file: Path, empty_is_missing: bool = True) -> pd.DataFrame:
    """A stage's CSV with its types as written: identifiers as strings, flags as bools. Only an empty cell
    is missing, and only if `empty_is_missing`. ValueError (file, column, row) on a flag not True or False."""
    file = Path(file)
    present = pd.read_csv(file, nrows=0).columns
    dtypes = {column: str for column in (*IDENTIFIERS, *FLAGS) if column in present}
    na = {"na_values": [""]} if empty_is_missing else {}
    table = pd.read_csv(file, dtype=dtypes, keep_default_na=False, **na)
    for column in FLAGS:
        if column in table.columns:
            table[column] = _flags(table[column], file, column)
    return table


def _flags(values: pd.Series, file: Path, column: str) -> pd.Series:
    parsed = values.astype(str).str.strip().str.lower().map(_FLAG_VALUES)
    bad = parsed.isna()
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ValueError(
            f"{file}: column {column} must be True or False; row {row + 2} has {values.iloc[row]!r}; "
            f"fix: rerun the stage that wrote it"
        )
    return parsed.astype(bool)
