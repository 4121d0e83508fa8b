"""verdict.result: what the verdict hands the report (no computation here, so the report imports no stage)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Verdict:
    """Everything the report shows."""

    table: pd.DataFrame  # predictable.csv: one row per kept cytokine
    summary: pd.DataFrame  # every predictor per cytokine: means and intervals (all labelled test wells)
    fold_scores: pd.DataFrame  # every predictor per fold
    hypotheses: pd.DataFrame  # the study's claims
    truth: pd.DataFrame  # empty without truth.json
    nulls: dict  # cytokine -> {"null": max-T null AUCs, "observed": AUC}
    predictions: pd.DataFrame  # model and baseline out-of-fold predictions
    curves: pd.DataFrame
    wells: pd.DataFrame
    params: dict
    notes: list
    timing: dict
    # leave-one-plate-out estimates (transfer.COLUMNS); empty on one plate
    lopo: pd.DataFrame = field(default_factory=pd.DataFrame)
