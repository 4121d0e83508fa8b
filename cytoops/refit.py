"""refit: a cross-validated predictor of any image family fitted again, on every well its recipe trains on.

Cross-validation keeps no model (each fold's saw part of the wells), so the registry's models are refit with
the recipe that cross-validated them: the study's CNNs and ViT heads on the cytokine's class-balanced wells
under their augmentation's views, for the epoch count their folds chose (the median best epoch, rounded up),
by the same loop (`fitter.Fitter`, no held-out data); cnn_all the same way on every labelled well,
class-weighted; the profile model and cell count on every labelled well (class-weighted, as in
cross-validation); the multitask CNN on every labelled well of every kept cytokine.

Pure core: values in (`dataset.Inputs`, wrangle's scaling, the profile's normalization), a `Refit` out,
holding the fitted state `servable.build` serves. No MLflow here (`register` logs and registers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cytoops import augment, cvresult, dataset, serving
from cytoops.fitter import Fitter
from cytoops.params import CNN_KINDS, Params, architecture_kind

CELL_COUNT = "cell_count"  # the one image read-out among the verdict's baselines (verdict.baselines)
NO_AUGMENTATION = "none"


@dataclass(frozen=True)
class Refit:
    family: str  # the architecture, or cell_count
    augmentation: str
    cytokine: str
    fitted: object  # what `servable.build` takes for the family
    recipe: serving.Recipe  # how raw thumbnails become the model's input
    n_wells: int
    n_images: int
    epochs: int | None  # None: not trained by epochs (profile, cell count)


def epochs_for(fits: pd.DataFrame, architecture: str, augmentation: str, cytokine: str, default: int) -> int:
    """The median best epoch of a model's folds, rounded up (the refit sees more wells than a fold did)."""
    pick = fits.architecture == architecture
    pick &= (fits.augmentation == augmentation) & (fits.cytokine == cytokine)
    best = pd.to_numeric(fits.loc[pick, "best_epoch"], errors="coerce").dropna()
    return max(1, math.ceil(float(best.median()))) if len(best) else default


def refit_seed(architecture: str, augmentation: str, cytokine: str, base: int) -> int:
    """The refit's own seed, from its name (repeat -1 and fold -1: never a cross-validation unit's)."""
    return cvresult.Unit(architecture, augmentation, cytokine, -1, -1).seed(base)


def training_set(
    inputs: dataset.Inputs, source: np.ndarray, cytokine: str, augmentation: str, balanced: bool = True
):
    """All balanced wells of a cytokine (every labelled one if not `balanced`) under its augmentation's
    views: (x, y, n_wells)."""
    rows = inputs.labels[inputs.labels.cytokine == cytokine]
    rows = rows[rows.balanced] if balanced else rows
    wells = rows.well_index.to_numpy().astype(int)
    x, y = augment.labelled_views(
        source, inputs.bank.views, augmentation, wells, rows.label.to_numpy().astype(int)
    )
    return np.asarray(x, dtype=np.float32), y, len(wells)


def labelled(inputs: dataset.Inputs, cytokine: str) -> tuple[np.ndarray, np.ndarray]:
    """Every labelled well of a cytokine and its label (what the profile model and cell count train on)."""
    rows = inputs.labels[inputs.labels.cytokine == cytokine]
    return rows.well_index.to_numpy().astype(int), rows.label.to_numpy().astype(int)


class Refitter:
    """Refits predictors of one plate; arrays shared between refits (the CNN view bank) are made once.

    A CNN or ViT head is the fitter's model, reused by its next fit: serve or log a Refit before the next.
    """

    def __init__(
        self, inputs: dataset.Inputs, scaling: pd.DataFrame, normalization, fits: pd.DataFrame, p: Params
    ):
        self.inputs, self.scaling, self.normalization = inputs, scaling, normalization
        self.fits, self.p = fits, p
        self.fitter = Fitter(p.train)
        self._cnn_bank: np.ndarray | None = None
        self.size = int(inputs.bank.images.shape[-1])

    def recipe(self, channels) -> serving.Recipe:
        return serving.recipe(self.scaling, self.inputs.channels, tuple(channels), self.size)

    def cnn_bank(self) -> np.ndarray:
        if self._cnn_bank is None:
            self._cnn_bank = dataset.cnn_view_bank(self.inputs, tuple(self.p.train.cnn_channels))
        return self._cnn_bank

    def epochs(self, architecture: str, augmentation: str, cytokine: str) -> int:
        return epochs_for(self.fits, architecture, augmentation, cytokine, self.p.train.epochs)

    def refit(self, family: str, augmentation: str, cytokine: str) -> Refit:
        """The family's predictor of `cytoops` refit on the wells its recipe trains on. ValueError (one line)
        when the family cannot be served (`servable.kind_of` says why) or the plate lacks what it reads."""
        from cytoops import servable

        servable.kind_of(family)
        if family == CELL_COUNT:
            return self._cell_count(cytokine)
        kind = architecture_kind(family)
        if kind in (*CNN_KINDS, "vit"):
            return self._study(family, kind, augmentation, cytokine)
        if kind == "profile":
            return self._profile(cytokine)
        if kind == "multitask":
            return self._multitask(family, augmentation, cytokine)
        raise ValueError(f"no refit recipe for {family!r}")

    def _study(self, family: str, kind: str, augmentation: str, cytokine: str) -> Refit:
        from cytoops import servable

        if kind in CNN_KINDS:
            source, channels = self.cnn_bank(), self.p.train.cnn_channels
        else:
            vit = self.inputs.vit
            if vit is None or vit.views != self.inputs.bank.views:
                raise ValueError(f"{family} needs the ViT features of these views: pass --features")
            source, channels = vit.values, self.inputs.channels
        every = kind == "cnn_all"  # every labelled well, class-weighted, as cross-validation fitted it
        x, y, n_wells = training_set(self.inputs, source, cytokine, augmentation, balanced=not every)
        epochs = self.epochs(family, augmentation, cytokine)
        seed = refit_seed(family, augmentation, cytokine, self.p.train.seed)
        weighting = {"class_weight": True} if every else {}
        model, _, _ = self.fitter.fit(family, x, y, None, None, seed, epochs=epochs, **weighting)
        fitted = model if kind in CNN_KINDS else servable.Vit(model, self.vit_backbone())
        return Refit(family, augmentation, cytokine, fitted, self.recipe(channels), n_wells, len(x), epochs)

    def vit_backbone(self) -> dict:
        """The ViT backbone a head was trained on: its weights file (or random, with its seed) and shape."""
        from pathlib import Path

        from cytoops import models

        vit = self.inputs.vit
        weights = vit.weights if vit is not None else "random"
        if weights != "random" and Path(weights).exists():
            weights = str(Path(weights).resolve())
        return {
            "weights": weights,
            "seed": self.p.features.seed,
            "layers": models.ModelParams().vit_layers,
            "image_size": self.size,
            "input": "features.to_vit_input(images): channels-last actin, mito, nucleus as RGB in [-1, 1]",
        }

    def _profile(self, cytokine: str) -> Refit:
        from cytoops import profile, servable

        table = self.inputs.profile
        if table is None or not self.normalization:
            raise ValueError("the profile model needs the profile stage's table and normalization statistics")
        wells, y = labelled(self.inputs, cytokine)
        x = table[profile.feature_columns(table)].iloc[wells]
        model = profile.fit(x, y, refit_seed("profile", NO_AUGMENTATION, cytokine, self.p.train.seed))
        fitted = servable.Profile(model, profile.training_normalization(self.normalization))
        recipe = self.recipe(self.inputs.channels)
        return Refit("profile", NO_AUGMENTATION, cytokine, fitted, recipe, len(wells), len(wells), None)

    def _cell_count(self, cytokine: str) -> Refit:
        """Counted as the verdict's baseline counts: the profile's nuclei (else nuclear peaks)."""
        from cytoops import profile, servable
        from cytoops.verdict import baselines

        wells, y = labelled(self.inputs, cytokine)
        if self.inputs.profile is not None:
            counts, counter = self.inputs.profile[profile.COUNT].to_numpy(float), "segmentation"
        else:
            identity = self.inputs.bank.images[self.inputs.bank.views.index("identity")].astype(np.float32)
            counts, counter = baselines.count_cells(identity, self.inputs.channels, "peaks"), "peaks"
        fitted = servable.CellCount(baselines.fit_linear(counts[wells, None], y), counter)
        recipe = self.recipe(self.inputs.channels)
        return Refit(CELL_COUNT, NO_AUGMENTATION, cytokine, fitted, recipe, len(wells), len(wells), None)

    def _multitask(self, family: str, augmentation: str, cytokine: str) -> Refit:
        from cytoops import multitask, servable

        y_all = dataset.wide_labels(self.inputs).to_numpy(float)
        wells = np.flatnonzero(~np.isnan(y_all).all(axis=1))
        x, src = augment.training_views(self.cnn_bank(), self.inputs.bank.views, augmentation, wells)
        epochs = self.epochs(family, augmentation, cytokine)
        t = self.p.train
        model, _, _ = multitask.fit(
            np.asarray(x, dtype=np.float32),
            y_all[src],
            None,
            None,
            seed=refit_seed(family, augmentation, "*", t.seed),
            epochs=epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            patience=t.patience,
        )
        fitted = servable.Multitask(model, tuple(self.inputs.kept))
        recipe = self.recipe(self.p.train.cnn_channels)
        return Refit(family, augmentation, cytokine, fitted, recipe, len(wells), len(x), epochs)
