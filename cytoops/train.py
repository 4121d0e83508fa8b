"""train: two-fold (or k-fold) cross-validation of every (architecture, augmentation, cytokine).

Science rules, each enforced here and tested:
- folds are stratified by label and grouped by treatment (replicates of a treatment share a fold);
  the same folds serve every architecture and augmentation of a cytokine, so comparisons are paired;
- augmentation touches only the training part of the training fold (`augment.training_views`);
- early stopping watches a validation split carved from the training fold (grouped too), never the test
  fold, and restores the best weights;
- each unit of work (architecture, augmentation, cytokine, fold) is seeded from its own name, so it gives
  the same result whatever else runs and in whatever order (a distributed engine could run units apart).

Speed: a CNN is compiled once per architecture and input shape and reset to fresh seeded weights for each
unit (no rebuilding or retracing); ViT heads train on the cached backbone features (`features` stage).
"""

from __future__ import annotations

import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from cytoops import augment, features
from cytoops import params as params_mod
from cytoops import wrangle as wrangle_mod
from cytoops.params import TrainParams

UNIT_COLUMNS = ["architecture", "augmentation", "cytokine", "repeat", "fold"]
CURVE_COLUMNS = [*UNIT_COLUMNS, "epoch", "loss", "val_loss", "accuracy", "val_accuracy"]


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
class Inputs:
    """Everything the trainer reads: the wrangled wells and labels, the view bank, the ViT features."""

    wells: pd.DataFrame
    labels: pd.DataFrame  # long, as written by wrangle
    kept: tuple[str, ...]  # cytokines kept by wrangle
    bank: augment.ViewBank
    channels: tuple[str, ...]
    vit: features.Features | None
    strategies: tuple[str, ...]  # augmentation strategies to train under


@dataclass(frozen=True)
class Result:
    predictions: pd.DataFrame  # out-of-fold: one row per (architecture, augmentation, cytokine, fold, test well)
    curves: pd.DataFrame  # one row per epoch of every fit
    fits: pd.DataFrame  # one row per fit: sizes, best epoch, seconds
    failures: pd.DataFrame  # one row per failed unit, with the error
    folds: pd.DataFrame  # cytokine, repeat, well_index, fold: the folds every model and baseline shares


def assign_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each well: stratified by label, a group (treatment) never split across folds."""
    if len(np.unique(groups)) < n_folds:
        raise ValueError(f"only {len(np.unique(groups))} treatment groups: cannot make {n_folds} grouped folds")
    folds = np.full(len(labels), -1)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[test] = k
    return folds


def split_validation(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the validation wells carved from a training fold (grouped, stratified)."""
    n_splits = max(2, min(round(1 / fraction), len(np.unique(groups))))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[val] = True
    return mask


class Fitter:
    """Keeps one compiled Keras model per (architecture, input shape) and resets it for every unit."""

    def __init__(self, params: TrainParams):
        self.params = params
        self._compiled: dict[tuple, tuple] = {}

    def _model(self, architecture: str, input_shape: tuple[int, ...]):
        import keras

        from cytoops import models

        key = (architecture, input_shape)
        if key not in self._compiled:
            spec = models.get(architecture)
            mp = models.ModelParams(learning_rate=self.params.learning_rate, dtype_policy=self.params.precision)
            model = spec.build(input_shape, mp) if spec.kind == "cnn" else models.build_head(architecture, input_shape[0], mp)
            model.optimizer.build(model.trainable_variables)
            self._compiled[key] = (model, [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables])
        model, optimizer_state = self._compiled[key]
        return model, optimizer_state

    def fit(self, architecture: str, x, y, x_val, y_val, seed: int):
        """Train from fresh seeded weights with early stopping on (x_val, y_val); returns (model, history)."""
        import keras

        from cytoops import models

        model, optimizer_state = self._model(architecture, tuple(x.shape[1:]))
        keras.utils.set_random_seed(seed)
        spec = models.get(architecture)
        mp = models.ModelParams(learning_rate=self.params.learning_rate, dtype_policy=self.params.precision)
        fresh = spec.build(tuple(x.shape[1:]), mp) if spec.kind == "cnn" else models.build_head(architecture, x.shape[1], mp)
        model.set_weights(fresh.get_weights())
        for variable, value in zip(model.optimizer.variables, optimizer_state, strict=True):
            variable.assign(value)
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.params.patience, restore_best_weights=True)
        history = model.fit(
            x, y, validation_data=(x_val, y_val), epochs=self.params.epochs, batch_size=self.params.batch_size,
            shuffle=True, verbose=0, callbacks=[stop],
        )
        return model, history.history, int(stop.best_epoch) + 1

    @staticmethod
    def probability(model, x) -> np.ndarray:
        """P(responder): softmax class 1 for the CNNs (two logits, as the study), sigmoid output for ViT heads."""
        out = np.asarray(model.predict(x, verbose=0, batch_size=256))
        if out.shape[-1] == 2:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            return e[:, 1] / e.sum(axis=1)
        return out[:, 0]


def model_input(inputs: Inputs, architecture: str, bank_images: np.ndarray | None = None) -> np.ndarray:
    """(n_views, n_wells, ...) array a model of this architecture reads: channels-last images or ViT features."""
    from cytoops import models

    if models.get(architecture).kind == "vit":
        if inputs.vit is None:
            raise ValueError(f"{architecture} needs ViT features: run the features stage first")
        if inputs.vit.views != inputs.bank.views:
            raise ValueError("the ViT features were computed on other views than the view bank: rerun features")
        return inputs.vit.values
    images = inputs.bank.images if bank_images is None else bank_images
    return images


def cnn_view_bank(inputs: Inputs, channels: tuple[str, ...]) -> np.ndarray:
    missing = [c for c in channels if c not in inputs.channels]
    if missing:
        raise ValueError(f"train.cnn_channels names {missing}, not among the plate's channels {list(inputs.channels)}")
    picks = [inputs.channels.index(c) for c in channels]
    # (V, N, C, S, S) -> (V, N, S, S, C), float32 for Keras
    return np.moveaxis(inputs.bank.images[:, :, picks], 2, -1).astype(np.float32)


def cross_validate(inputs: Inputs, params: TrainParams, progress: bool = True) -> Result:
    """Every (architecture, augmentation, cytokine, fold) of the grid; a failing unit is recorded, never fatal."""
    from cytoops import models

    fitter = Fitter(params)
    cnn_bank = None
    preds, curves, fits, failures = [], [], [], []
    plan, fold_rows = [], []
    for cytokine in inputs.kept:
        rows = inputs.labels[(inputs.labels.cytokine == cytokine) & inputs.labels.balanced]
        wells = rows.well_index.to_numpy()
        y = rows.label.to_numpy().astype(int)
        groups = inputs.wells.group.to_numpy()[wells]
        for repeat in range(params.repeats):
            try:
                folds = assign_folds(y, groups, params.folds, params.seed + repeat)
            except ValueError as err:
                failures.append(
                    {"architecture": "*", "augmentation": "*", "cytokine": cytokine, "repeat": repeat, "fold": -1, "error": str(err)}
                )
                continue
            plan.append((cytokine, repeat, wells, y, groups, folds))
            fold_rows.append(pd.DataFrame({"cytokine": cytokine, "repeat": repeat, "well_index": wells, "fold": folds}))
    total = len(plan) * params.folds * len(params.architectures) * len(inputs.strategies)
    bar = tqdm(total=total, desc="train", unit="fit", disable=not progress, file=sys.stderr)
    for architecture in params.architectures:
        kind = models.get(architecture).kind
        if kind == "cnn":
            cnn_bank = cnn_bank if cnn_bank is not None else cnn_view_bank(inputs, params.cnn_channels)
            bank = cnn_bank
        else:
            bank = None
        for cytokine, repeat, wells, y, groups, folds in plan:
            for fold in range(params.folds):
                test = folds == fold
                train = ~test
                val = split_validation(y[train], groups[train], params.val_fraction, params.seed + 1000 * repeat + fold)
                fit_wells, val_wells = wells[train][~val], wells[train][val]
                y_fit, y_val = y[train][~val], y[train][val]
                for strategy in inputs.strategies:
                    unit = Unit(architecture, strategy, cytokine, repeat, fold)
                    bar.set_postfix_str(f"{architecture} {strategy} {cytokine}", refresh=False)
                    t0 = time.perf_counter()
                    try:
                        source = model_input(inputs, architecture, bank)
                        x_fit, src = augment.training_views(source, inputs.bank.views, strategy, fit_wells)
                        label_of = dict(zip(fit_wells, y_fit, strict=True))
                        y_fit_views = np.array([label_of[s] for s in src])  # each copy keeps its well's label
                        x_val = augment.identity_view(source, inputs.bank.views, val_wells)
                        x_test = augment.identity_view(source, inputs.bank.views, wells[test])
                        model, history, best_epoch = fitter.fit(
                            architecture, x_fit, y_fit_views, x_val, y_val, unit.seed(params.seed)
                        )
                        prob = fitter.probability(model, x_test)
                    except Exception as err:  # noqa: BLE001 - recorded per unit, the grid goes on
                        failures.append({**unit.__dict__, "error": f"{type(err).__name__}: {err}"})
                        bar.update()
                        continue
                    seconds = time.perf_counter() - t0
                    test_wells = wells[test]
                    preds.append(
                        pd.DataFrame(
                            {
                                **unit.__dict__,
                                "well_index": test_wells,
                                "plate": inputs.wells.plate.to_numpy()[test_wells],
                                "well": inputs.wells.well.to_numpy()[test_wells],
                                "label": y[test],
                                "prob": prob,
                            }
                        )
                    )
                    n_epochs = len(history["loss"])
                    curves.append(
                        pd.DataFrame(
                            {
                                **unit.__dict__,
                                "epoch": np.arange(1, n_epochs + 1),
                                "loss": history["loss"],
                                "val_loss": history["val_loss"],
                                "accuracy": history.get("accuracy", [np.nan] * n_epochs),
                                "val_accuracy": history.get("val_accuracy", [np.nan] * n_epochs),
                            }
                        )
                    )
                    fits.append(
                        {
                            **unit.__dict__,
                            "n_train": len(fit_wells),
                            "n_train_images": len(x_fit),
                            "n_val": len(val_wells),
                            "n_test": int(test.sum()),
                            "best_epoch": best_epoch,
                            "epochs_run": n_epochs,
                            "seconds": round(seconds, 3),
                        }
                    )
                    bar.update()
    bar.close()
    unit_cols = UNIT_COLUMNS
    return Result(
        predictions=pd.concat(preds, ignore_index=True) if preds else pd.DataFrame(columns=[*unit_cols, "well_index", "plate", "well", "label", "prob"]),
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=CURVE_COLUMNS),
        fits=pd.DataFrame(fits, columns=[*unit_cols, "n_train", "n_train_images", "n_val", "n_test", "best_epoch", "epochs_run", "seconds"]),
        failures=pd.DataFrame(failures, columns=[*unit_cols, "error"]),
        folds=pd.concat(fold_rows, ignore_index=True) if fold_rows else pd.DataFrame(columns=["cytokine", "repeat", "well_index", "fold"]),
    )


# ---- stage I/O -------------------------------------------------------------------------------------------

def load_inputs(wrangled: Path, views: Path, vit_features: Path | None, params: params_mod.Params) -> Inputs:
    w = wrangle_mod.load(wrangled)
    needs_vit = any(a.startswith("vit_") for a in params.train.architectures)
    vit = features.load(vit_features) if needs_vit and vit_features is not None else None
    if needs_vit and vit is None:
        raise ValueError("ViT architectures are in train.architectures but no --features file was given")
    return Inputs(
        wells=w.wells,
        labels=w.labels,
        kept=tuple(w.cytokines.cytokine[w.cytokines.kept.astype(bool)]),
        bank=augment.load(views),
        channels=w.channels,
        vit=vit,
        strategies=params.augment.strategies,
    )


def save(result: Result, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.predictions.to_csv(out / "predictions.csv", index=False)
    result.curves.to_csv(out / "curves.csv", index=False)
    result.fits.to_csv(out / "fits.csv", index=False)
    result.failures.to_csv(out / "failures.csv", index=False)
    result.folds.to_csv(out / "folds.csv", index=False)


def load(out: Path) -> Result:
    read = lambda name: pd.read_csv(out / name, keep_default_na=False, na_values=[""])  # noqa: E731
    return Result(*(read(f"{name}.csv") for name in ("predictions", "curves", "fits", "failures", "folds")))


def command(
    wrangled: Path = typer.Option(..., "--wrangled", help="Folder written by `cytoops wrangle`."),
    views: Path = typer.Option(..., "--views", help="View bank written by `cytoops augment`."),
    vit_features: Path | None = typer.Option(None, "--features", help="ViT features written by `cytoops features`."),
    out: Path = typer.Option(..., "--out", help="Folder for predictions.csv, curves.csv, fits.csv, failures.csv."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set train.epochs=5"),
) -> None:
    """Cross-validate every architecture x augmentation x kept cytokine; out-of-fold probabilities and curves."""
    p = params_mod.load(params_file, overrides)
    inputs = load_inputs(wrangled, views, vit_features, p)
    result = cross_validate(inputs, p.train)
    save(result, out)
    typer.echo(
        f"train: {len(result.fits)} fits, {len(result.failures)} failed, "
        f"{result.fits.seconds.sum():.0f} s of fitting -> {out}"
    )
    for row in result.failures.itertuples():
        typer.secho(
            f"  failed: {row.architecture} {row.augmentation} {row.cytokine} repeat {row.repeat} fold {row.fold}: {row.error}",
            fg="red",
            err=True,
        )
