"""cvresult: the train stage's hand-off, read by every later stage (evaluate, verdict, tracking, register).

What cross-validation produced (`Result`), where it lies on disk (`save`, `load`: five CSVs in the train
folder), the unit of work every row is keyed by (`Unit`, with a seed of its own that makes it reproducible
wherever it runs), and the one-line check that something was trained. Reading these needs neither the trainer
nor TensorFlow: editing the trainer does not make the later stages' code stale.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cytoops import tables


@dataclass(frozen=True)
class Unit:
    architecture: str
    augmentation: str
    cytokine: str
    repeat: int  # repeated cross-validation: repeat r uses fold seed `train.seed + r`
    fold: int

    def seed(self, base: int) -> int:
        """A seed of its own, from the base seed and the unit's name only."""
        key = f"{self.architecture}/{self.augmentation}/{self.cytokine}/{self.repeat}/{self.fold}".encode()
        return int(np.random.SeedSequence([base, zlib.crc32(key)]).generate_state(1)[0] % (2**31 - 1))


@dataclass(frozen=True)
class Result:
    predictions: (
        pd.DataFrame
    )  # out-of-fold: one row per (architecture, augmentation, cytokine, fold, test well)
    curves: pd.DataFrame  # one row per epoch of every fit
    fits: pd.DataFrame  # one row per fit: sizes, best epoch, seconds
    failures: pd.DataFrame  # one row per failed unit, with the error
    folds: pd.DataFrame  # cytokine, repeat, well_index, fold, balanced: what every model and baseline shares


def save(result: Result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.predictions.to_csv(out / "predictions.csv", index=False)
    result.curves.to_csv(out / "curves.csv", index=False)
    result.fits.to_csv(out / "fits.csv", index=False)
    result.failures.to_csv(out / "failures.csv", index=False)
    result.folds.to_csv(out / "folds.csv", index=False)


def load(out: Path) -> Result:
    names = ("predictions", "curves", "fits", "failures", "folds")
    return Result(*(tables.read(out / f"{name}.csv") for name in names))


def check_trained(fits: pd.DataFrame, failures: pd.DataFrame, failures_file: Path) -> None:
    """ValueError quoting the failures file when not one unit was fitted."""
    if len(fits):
        return
    first = f"; the first: {' '.join(str(failures.error.iloc[0]).split())[:200]}" if len(failures) else ""
    raise ValueError(
        f"no unit was trained: all {len(failures)} failed (see {failures_file}{first}); fix: the cause "
        f"given there (a param such as train.batch_size or train.learning_rate, or too few wells)"
    )


def check_trained_folder(trained: Path) -> None:
    """check_trained on a folder written by `cytoops train` (fits.csv, failures.csv)."""
    trained = Path(trained)
    missing = [name for name in ("fits.csv", "failures.csv") if not (trained / name).is_file()]
    if missing:
        raise ValueError(f"{trained}: no {', '.join(missing)}; fix: run `cytoops train` (or dvc repro) first")
    failures = trained / "failures.csv"
    check_trained(tables.read(trained / "fits.csv"), tables.read(failures), failures)
