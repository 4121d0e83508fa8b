"""verdict.truth: on a simulated plate (truth.json beside the plate), score the calls against the truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

TRUTH_FOUND, TRUTH_MISSED = "found", "missed"
TRUTH_WRONG, TRUTH_RIGHT = "wrongly called", "correctly not called"


def find_truth(data: Path | None, plate_ids: list[str]) -> dict[str, dict]:
    """cytokine -> its truth.json entry (plus `plates`), from data/<plate>/truth.json where present."""
    if data is None:
        return {}
    truth: dict[str, dict] = {}
    for plate in sorted(set(plate_ids)):
        path = Path(data) / plate / "truth.json"
        if not path.is_file():
            continue
        for name, entry in json.loads(path.read_text(encoding="utf-8")).get("cytokines", {}).items():
            if name in truth and truth[name].get("cause") != entry.get("cause"):
                truth[name] = {**truth[name], "cause": "mixed"}
            truth.setdefault(name, {**entry, "plates": []})["plates"].append(plate)
    return truth


def score_truth(verdict: pd.DataFrame, truth: dict[str, dict]) -> pd.DataFrame:
    """Each kept cytokine's cause and what the call made of it: found, missed, wrongly called or not."""
    columns = ["cytokine", "cause", "driver", "predictable", "outcome", "roc_auc", "best_family", "q"]
    if not truth:
        return pd.DataFrame(columns=columns)
    rows = []
    for r in verdict.itertuples():
        t = truth.get(r.cytokine, {})
        cause = t.get("cause", "unknown")
        called = bool(r.predictable)
        if cause == "morphology":
            outcome = TRUTH_FOUND if called else TRUTH_MISSED
        else:
            outcome = TRUTH_WRONG if called else TRUTH_RIGHT
        rows.append(
            {
                "cytokine": r.cytokine,
                "cause": cause,
                "driver": t.get("driver"),
                "predictable": called,
                "outcome": outcome,
                "roc_auc": getattr(r, "roc_auc", np.nan),
                "best_family": getattr(r, "best_family", None),
                "q": r.q,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def truth_summary(truth_table: pd.DataFrame) -> dict:
    if truth_table.empty:
        return {}
    morph = truth_table[truth_table.cause == "morphology"]
    wrong = truth_table[truth_table.outcome == TRUTH_WRONG]
    return {
        "morphology_kept": int(len(morph)),
        "morphology_found": int((morph.outcome == TRUTH_FOUND).sum()),
        "morphology_missed": sorted(morph.cytokine[morph.outcome == TRUTH_MISSED]),
        "wrongly_called": {c: cause for c, cause in zip(wrong.cytokine, wrong.cause, strict=True)},
        "wrongly_called_by_cause": {k: int(v) for k, v in wrong.cause.value_counts().items()},
    }
