"""dataset: what the models read, per plate: the wrangled wells and labels, the view bank, the ViT features
and the morphological profile (`Inputs`), and the arrays each kind of model takes from them.

Built in memory by `make_inputs` (`cytoops run`) or from the earlier stages' files by `load_inputs` (the DVC
stages: train, and register, which refits champions on the same inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cytoops import augment, features, wrangle
from cytoops.params import Params, architecture_kind


@dataclass(frozen=True)
class Inputs:
    """Everything the trainer reads: the wrangled wells and labels, the view bank, the ViT features."""

    wells: pd.DataFrame
    labels: pd.DataFrame  # long, as written by wrangle
    kept: tuple[str, ...]  # cytokines kept by wrangle
    bank: augment.ViewBank
    channels: tuple[str, ...]
    vit: features.Features | None
    strategies: tuple[str, ...]  # augmentation strategies to train under
    profile: pd.DataFrame | None = None  # per-well morphological profile (`profile` stage), row i = well i


def model_input(inputs: Inputs, architecture: str) -> np.ndarray:
    """The (n_views, n_wells, ...) array an architecture reads: channels-last images or ViT features."""
    from cytoops import models

    if models.get(architecture).kind == "vit":
        if inputs.vit is None:
            raise ValueError(f"{architecture} needs ViT features: run the features stage first")
        if inputs.vit.views != inputs.bank.views:
            raise ValueError(
                "the ViT features were computed on other views than the view bank: rerun features"
            )
        return inputs.vit.values
    return inputs.bank.images


def cnn_view_bank(inputs: Inputs, channels: tuple[str, ...]) -> np.ndarray:
    missing = [c for c in channels if c not in inputs.channels]
    if missing:
        raise ValueError(
            f"train.cnn_channels names {missing}, not among the plate's channels {list(inputs.channels)}"
        )
    picks = [inputs.channels.index(c) for c in channels]
    # (V, N, C, S, S) -> (V, N, S, S, C), float32 for Keras
    return np.moveaxis(inputs.bank.images[:, :, picks], 2, -1).astype(np.float32)


def wide_labels(inputs: Inputs, values: str = "label") -> pd.DataFrame:
    """(n_wells, kept cytokines) of a labels column (label or balanced); NaN where a well has no label."""
    lab = inputs.labels[inputs.labels.cytokine.isin(inputs.kept)]
    return lab.pivot(index="well_index", columns="cytokine", values=values).reindex(
        index=range(len(inputs.wells)), columns=list(inputs.kept)
    )


def load_inputs(
    wrangled: Path,
    views: Path,
    vit_features: Path | None,
    params: Params,
    profile_table: Path | None = None,
) -> Inputs:
    """make_inputs on the files the earlier stages wrote (the DVC stage; `cytoops run` passes the values)."""
    from cytoops import profile

    kinds = {architecture_kind(a) for a in params.train.architectures}
    vit = features.load(vit_features) if "vit" in kinds and vit_features is not None else None
    table = profile.load(profile_table) if "profile" in kinds and profile_table is not None else None
    return make_inputs(wrangle.load(wrangled), augment.load(views), vit, table, params)


def make_inputs(
    w: wrangle.Wrangled,
    bank: augment.ViewBank,
    vit: features.Features | None,
    profile_table: pd.DataFrame | None,
    params: Params,
) -> Inputs:
    """What cross-validation reads, from the wrangled plate, its views, ViT features and profile (the last
    two only where train.architectures has a model that reads them)."""
    kinds = {architecture_kind(a) for a in params.train.architectures}
    if "vit" in kinds and vit is None:
        raise ValueError("ViT architectures are in train.architectures but no --features file was given")
    if "profile" in kinds and profile_table is None:
        raise ValueError("profile is in train.architectures but no --profile file was given")
    return Inputs(
        wells=w.wells,
        labels=w.labels,
        kept=wrangle.kept_cytokines(w.cytokines),
        bank=bank,
        channels=w.channels,
        vit=vit if "vit" in kinds else None,
        strategies=params.augment.strategies,
        profile=profile_table if "profile" in kinds else None,
    )
