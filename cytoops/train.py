"""train: two-fold (or k-fold) cross-validation of every (architecture, augmentation, cytokine).

Science rules, each enforced here and tested:
- one fold assignment per plate and repeat (`plate_folds`), grouped by treatment (replicates of a treatment
  share a fold) and spreading every cytokine's responders; the same folds serve every cytokine, model and
  baseline, and every model predicts every labelled test-fold well, so comparisons are paired;
- augmentation touches only the training part of the training fold (`augment.training_views`);
- early stopping watches a validation split carved from the training fold (grouped too), never the test
  fold, and restores the best weights;
- each unit of work (architecture, augmentation, cytokine, fold) is seeded from its own name, so given the
  plate's folds it gives the same result whatever other architecture runs and in whatever order (a
  distributed engine could run units apart).

Speed: a CNN is compiled once per architecture and input shape and reset to fresh seeded weights for each
unit (no rebuilding or retracing); ViT heads train on the cached backbone features (`features` stage).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
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

from cytoops import augment, backends, features, tables, wrangle
from cytoops.fitter import Fitter
from cytoops.params import Params, TrainParams, architecture_kind
from cytoops.params import load as load_params

log = logging.getLogger(__name__)


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
    profile: pd.DataFrame | None = None  # per-well morphological profile (`profile` stage), row i = well i


@dataclass(frozen=True)
class Result:
    predictions: (
        pd.DataFrame
    )  # out-of-fold: one row per (architecture, augmentation, cytokine, fold, test well)
    curves: pd.DataFrame  # one row per epoch of every fit
    fits: pd.DataFrame  # one row per fit: sizes, best epoch, seconds
    failures: pd.DataFrame  # one row per failed unit, with the error
    folds: pd.DataFrame  # cytokine, repeat, well_index, fold, balanced: what every model and baseline shares


def plate_folds(responders: np.ndarray, groups: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """One fold per well, shared by every cytokine, model and baseline: a group (treatment) never split.

    `responders` is (n_wells, n_cytokines): 1, 0, or NaN (not measured). Groups are dealt to folds one at a
    time, the most responsive first (ties and near-ties in a seeded random order), each to the fold where it
    best evens out every cytokine's responders and non-responders and the wells per fold (multi-label
    stratification, as far as whole groups allow: a cytokine driven by two compounds gets one per fold).
    """
    groups = np.asarray(groups).astype(str)
    names, group_of = np.unique(groups, return_inverse=True)
    if len(names) < n_folds:
        raise ValueError(f"only {len(names)} treatment groups: cannot make {n_folds} grouped folds")
    y = np.asarray(responders, dtype=float).reshape(len(groups), -1)
    counts = np.concatenate([np.ones((len(groups), 1)), np.nan_to_num(y), np.nan_to_num(1 - y)], axis=1)
    per_group = np.zeros((len(names), counts.shape[1]))
    np.add.at(per_group, group_of, counts)
    share = per_group / np.maximum(per_group.sum(axis=0), 1)  # each column sums to 1 over groups
    rng = np.random.default_rng(seed)
    weight = share[:, 1 : 1 + y.shape[1]].sum(axis=1) + share[:, 0]
    order = np.argsort(-weight * rng.uniform(0.8, 1.2, len(names)), kind="stable")
    load = np.zeros((n_folds, share.shape[1]))
    fold_of_group = np.empty(len(names), dtype=int)
    for g in order:
        cost = ((load + share[g] - 1 / n_folds) ** 2).sum(axis=1) - ((load - 1 / n_folds) ** 2).sum(axis=1)
        best = np.flatnonzero(np.isclose(cost, cost.min()))
        k = int(rng.choice(best)) if len(best) > 1 else int(best[0])
        fold_of_group[g] = k
        load[k] += share[g]
    return fold_of_group[group_of]


def split_validation(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the validation wells carved from a training fold (grouped, stratified)."""
    n_splits = max(2, min(round(1 / fraction), len(np.unique(groups))))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[val] = True
    return mask


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


@dataclass(frozen=True)
class Task:
    """One architecture on one cytokine's folds of one repeat (for multitask_cnn: on every cytokine at once).

    The unit of parallel work: it reads only `Inputs` and `TrainParams` and returns its rows.
    """

    architecture: str
    cytokine: str  # MULTITASK for the multitask model
    repeat: int
    wells: np.ndarray  # the cytokine's labelled wells (indices into Inputs.wells)
    labels: np.ndarray
    balanced: np.ndarray  # the study's class-balanced subset (what its architectures train on)
    groups: np.ndarray
    folds: np.ndarray  # fold of each well: the plate's folds of this repeat


MULTITASK = "*"  # the cytokine of a multitask task: all kept cytokines without a fold problem


def fold_problem(labels: np.ndarray, balanced: np.ndarray, folds: np.ndarray, n_folds: int) -> str | None:
    """Why a cytokine cannot be cross-validated on these folds, or None: every test fold needs both classes,
    and every training fold's class-balanced wells too (the study's architectures learn from those)."""
    for fold in range(n_folds):
        test, train_bal = folds == fold, (folds != fold) & balanced
        for part, name in ((test, "test"), (train_bal, "training (balanced)")):
            n_pos = int(labels[part].sum())
            if n_pos == 0 or n_pos == int(part.sum()):
                return (
                    f"fold {fold}'s {name} wells hold {'no' if n_pos == 0 else 'only'} responders: "
                    "its responders fall in too few treatment groups to spread over the folds"
                )
    return None


def wide_labels(inputs: Inputs, values: str = "label") -> pd.DataFrame:
    """(n_wells, kept cytokines) of a labels column (label or balanced); NaN where a well has no label."""
    lab = inputs.labels[inputs.labels.cytokine.isin(inputs.kept)]
    return lab.pivot(index="well_index", columns="cytokine", values=values).reindex(
        index=range(len(inputs.wells)), columns=list(inputs.kept)
    )


def plan(inputs: Inputs, params: TrainParams) -> tuple[list[Task], pd.DataFrame, list[dict]]:
    """The grid's tasks, the plate's folds (one assignment per repeat, every cytokine and model), and the
    cytokines that cannot be cross-validated on them (recorded as failures, never dropped silently)."""
    tasks, fold_rows, failures = [], [], []
    kept = list(inputs.kept)
    n = len(inputs.wells)
    lab = inputs.labels[inputs.labels.cytokine.isin(kept)]
    table = wide_labels(inputs)
    groups = inputs.wells.group.to_numpy()
    per_cytokine = [a for a in params.architectures if architecture_kind(a) != "multitask"]
    for repeat in range(params.repeats):
        plate = plate_folds(table.to_numpy(float), groups, params.folds, params.seed + repeat)
        usable = []
        for cytokine in kept:
            rows = lab[lab.cytokine == cytokine]
            wells = rows.well_index.to_numpy()
            y = rows.label.to_numpy().astype(int)
            balanced = rows.balanced.astype(bool).to_numpy()
            folds = plate[wells]
            fold_rows.append(
                pd.DataFrame(
                    {
                        "cytokine": cytokine,
                        "repeat": repeat,
                        "well_index": wells,
                        "fold": folds,
                        "balanced": balanced,
                    }
                )  # fmt: skip
            )
            problem = fold_problem(y, balanced, folds, params.folds)
            if problem:
                failures.append(
                    {"architecture": "*", "augmentation": "*", "cytokine": cytokine, "repeat": repeat,
                     "fold": -1, "error": problem}
                )  # fmt: skip
                continue
            usable.append(cytokine)
            tasks += [
                Task(a, cytokine, repeat, wells, y, balanced, groups[wells], folds) for a in per_cytokine
            ]
        if usable and len(per_cytokine) < len(params.architectures):
            wells = np.arange(n)
            tasks.append(
                Task(
                    "multitask_cnn",
                    MULTITASK,
                    repeat,
                    wells,
                    np.zeros(n, int),
                    np.zeros(n, bool),
                    groups,
                    plate,
                )
            )
    return (
        tasks,
        (pd.concat(fold_rows, ignore_index=True) if fold_rows else pd.DataFrame(columns=tables.FOLDS)),
        failures,
    )


def _prediction_rows(unit: Unit, inputs: Inputs, wells, labels, balanced, prob) -> pd.DataFrame:
    return pd.DataFrame(
        {
            **unit.__dict__,
            "well_index": wells,
            "plate": inputs.wells.plate.to_numpy()[wells],
            "well": inputs.wells.well.to_numpy()[wells],
            "label": labels,
            "balanced": balanced,
            "prob": np.asarray(prob, dtype=np.float64),  # one dtype whatever the model
        }
    )


def _fit_row(unit: Unit, n_train: int, n_images: int, n_val: int, n_test: int, best, n_epochs, t0) -> dict:
    return {
        **unit.__dict__,
        "n_train": n_train,
        "n_train_images": n_images,
        "n_val": n_val,
        "n_test": n_test,
        "best_epoch": best,
        "epochs_run": n_epochs,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def run_task(
    task: Task, inputs: Inputs, params: TrainParams, fitter: Fitter, sources: dict
) -> dict[str, list]:
    """Fit and score every fold x augmentation of a task; a failing unit is recorded and the rest go on.

    The study's architectures train on the training fold's class-balanced wells (its protocol) and the
    profile model on all the training fold's labelled wells (class-weighted); every model predicts every
    labelled well of the test fold, so all are scored on the same wells (`balanced` marks the study's test
    set). `sources` caches, per process, the (views, wells, ...) arrays models read (made once, not per task).
    """
    kind = architecture_kind(task.architecture)
    if kind == "multitask":
        return run_multitask(task, inputs, params, sources)
    if kind == "profile":
        return run_profile(task, inputs, params)
    out: dict[str, list] = {"predictions": [], "curves": [], "fits": [], "failures": []}
    if kind not in sources:
        sources[kind] = (
            cnn_view_bank(inputs, params.cnn_channels)
            if kind == "cnn"
            else model_input(inputs, task.architecture)
        )
    source = sources[kind]
    wells = task.wells
    for fold in range(params.folds):
        try:
            split = fold_split(task, fold, params)
        except ValueError as err:  # e.g. a training fold of one treatment: no grouped validation split
            for strategy in inputs.strategies:
                unit = Unit(task.architecture, strategy, task.cytokine, task.repeat, fold)
                out["failures"].append({**unit.__dict__, "error": f"validation split: {err}"})
            continue
        fit, val, test = split
        for strategy in inputs.strategies:
            unit = Unit(task.architecture, strategy, task.cytokine, task.repeat, fold)
            t0 = time.perf_counter()
            try:
                a = unit_arrays(task, split, source, inputs.bank.views, strategy)
                model, history, best_epoch = fitter.fit(
                    task.architecture, a.x_fit, a.y_fit, a.x_val, a.y_val, unit.seed(params.seed)
                )
                prob = fitter.probability(model, a.x_test)
            except Exception as err:  # noqa: BLE001 - recorded per unit, the grid goes on
                out["failures"].append({**unit.__dict__, "error": f"{type(err).__name__}: {err}"})
                continue
            out["predictions"].append(
                _prediction_rows(unit, inputs, wells[test], a.y_test, task.balanced[test], prob)
            )
            n_epochs = len(history["loss"])
            out["curves"].append(
                pd.DataFrame({**unit.__dict__, "epoch": np.arange(1, n_epochs + 1), **history})
            )
            out["fits"].append(
                _fit_row(unit, len(fit), len(a.x_fit), len(val), len(test), best_epoch, n_epochs, t0)
            )
    return out


def fold_split(task: Task, fold: int, params: TrainParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fold's (fit, validation, test) wells, as positions in the task's wells: the study's architectures fit
    on the training fold's class-balanced wells less a grouped validation split carved from them, and are
    tested on every labelled well of the test fold. ValueError when no validation split can be made."""
    test = np.flatnonzero(task.folds == fold)
    train = np.flatnonzero((task.folds != fold) & task.balanced)
    seed = params.seed + 1000 * task.repeat + fold
    val = split_validation(task.labels[train], task.groups[train], params.val_fraction, seed)
    return train[~val], train[val], test


@dataclass(frozen=True)
class UnitArrays:
    """What one unit trains, validates and is tested on: (views x wells, ...) rows and their labels."""

    x_fit: np.ndarray  # every training view of the fit wells (augment.training_views)
    y_fit: np.ndarray  # each copy keeps its well's label
    x_val: np.ndarray  # validation and test wells: the identity view only
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def unit_arrays(task: Task, split: tuple, source: np.ndarray, views, strategy: str) -> UnitArrays:
    """One unit's arrays (a task's fold, `fold_split`, under an augmentation strategy) from `source`, the
    (views, wells, ...) array its model reads: what `run_task` fits, and what the benchmark's study loop
    fits, so the two train on the same wells."""
    fit, val, test = split
    fit_wells = task.wells[fit]
    x_fit, src = augment.training_views(source, views, strategy, fit_wells)
    label_of = dict(zip(fit_wells, task.labels[fit], strict=True))
    return UnitArrays(
        x_fit=x_fit,
        y_fit=np.array([label_of[s] for s in src]),
        x_val=augment.identity_view(source, views, task.wells[val]),
        y_val=task.labels[val],
        x_test=augment.identity_view(source, views, task.wells[test]),
        y_test=task.labels[test],
    )


def run_profile(task: Task, inputs: Inputs, params: TrainParams) -> dict[str, list]:
    """The morphological-profile model (`profile.fit_predict`) on every labelled training-fold well."""
    from cytoops import profile

    out: dict[str, list] = {"predictions": [], "curves": [], "fits": [], "failures": []}
    if inputs.profile is None:
        raise ValueError("the profile architecture needs the profile stage's table: pass --profile")
    x = inputs.profile[profile.feature_columns(inputs.profile)]
    for fold in range(params.folds):
        unit = Unit(task.architecture, "none", task.cytokine, task.repeat, fold)
        test, train = task.folds == fold, task.folds != fold
        t0 = time.perf_counter()
        try:
            prob = profile.fit_predict(
                x.iloc[task.wells[train]],
                task.labels[train],
                x.iloc[task.wells[test]],
                unit.seed(params.seed),
            )
        except ValueError as err:
            out["failures"].append({**unit.__dict__, "error": str(err)})
            continue
        out["predictions"].append(
            _prediction_rows(unit, inputs, task.wells[test], task.labels[test], task.balanced[test], prob)
        )
        out["fits"].append(
            _fit_row(unit, int(train.sum()), int(train.sum()), 0, int(test.sum()), np.nan, 0, t0)
        )
    return out


def richest(strategies: tuple[str, ...]) -> str:
    """The strategy with the most training views (the multitask model trains under one)."""
    return max(strategies, key=lambda s: len(augment.STRATEGY_VIEWS[s]))


def run_multitask(task: Task, inputs: Inputs, params: TrainParams, sources: dict) -> dict[str, list]:
    """`multitask.fit_predict` per fold: every kept cytokine without a fold problem, all labelled wells."""
    from cytoops import multitask

    out: dict[str, list] = {"predictions": [], "curves": [], "fits": [], "failures": []}
    if "cnn" not in sources:
        sources["cnn"] = cnn_view_bank(inputs, params.cnn_channels)
    source = sources["cnn"]
    balanced = wide_labels(inputs, "balanced")
    y_all = wide_labels(inputs).to_numpy(float)
    labelled = ~np.isnan(y_all).all(axis=1)
    strategy = richest(inputs.strategies)
    for fold in range(params.folds):
        unit = Unit(task.architecture, strategy, task.cytokine, task.repeat, fold)
        t0 = time.perf_counter()
        test = np.flatnonzero((task.folds == fold) & labelled)
        train = np.flatnonzero((task.folds != fold) & labelled)
        try:
            load = np.minimum(np.nan_to_num(y_all[train]).sum(axis=1), 3).astype(int)
            val = split_validation(
                load, task.groups[train], params.val_fraction, params.seed + 1000 * task.repeat + fold
            )
            fit_wells, val_wells = train[~val], train[val]
            x_fit, src = augment.training_views(source, inputs.bank.views, strategy, fit_wells)
            prob, history, best_epoch = multitask.fit_predict(
                x_fit,
                y_all[src],
                augment.identity_view(source, inputs.bank.views, val_wells),
                y_all[val_wells],
                augment.identity_view(source, inputs.bank.views, test),
                seed=unit.seed(params.seed),
                epochs=params.epochs,
                batch_size=params.batch_size,
                learning_rate=params.learning_rate,
                patience=params.patience,
            )
        except Exception as err:  # noqa: BLE001 - recorded, the grid goes on
            out["failures"].append({**unit.__dict__, "error": f"{type(err).__name__}: {err}"})
            continue
        for k, cytokine in enumerate(inputs.kept):
            has = ~np.isnan(y_all[test, k])
            rows = test[has]
            each = Unit(task.architecture, strategy, cytokine, task.repeat, fold)
            out["predictions"].append(
                _prediction_rows(
                    each,
                    inputs,
                    rows,
                    y_all[rows, k].astype(int),
                    balanced.to_numpy()[rows, k].astype(bool),
                    prob[has, k],
                )  # fmt: skip
            )
        n_epochs = len(history["loss"])
        for cytokine in inputs.kept:  # one fit serves every cytokine: its rows are each cytokine's
            each = Unit(task.architecture, strategy, cytokine, task.repeat, fold)
            out["curves"].append(
                pd.DataFrame({**each.__dict__, "epoch": np.arange(1, n_epochs + 1), **history})
            )
            k = list(inputs.kept).index(cytokine)
            n_test = int((~np.isnan(y_all[test, k])).sum())
            row = _fit_row(each, len(fit_wells), len(x_fit), len(val_wells), n_test, best_epoch, n_epochs, t0)
            out["fits"].append(row | {"seconds": round(row["seconds"] / len(inputs.kept), 3)})
    return out


def n_workers(params: TrainParams) -> int:
    """train.workers, where 0 means one per CPU core, or 1 on a machine with an NVIDIA GPU.

    Decided without importing TensorFlow here: the parent process only coordinates, and TensorFlow alone
    would cost it about 750 MB.
    """
    if params.workers > 0:
        return params.workers
    has_gpu = any(Path("/dev").glob("nvidia[0-9]*")) and os.environ.get("CUDA_VISIBLE_DEVICES", "0") not in (
        "",
        "-1",
    )
    return (
        1
        if has_gpu
        else max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


class TaskCache:
    """Finished tasks on disk, so an interrupted train stage resumes where it stopped.

    A task's key hashes everything its result depends on: the inputs' content, the task, and the train and
    augmentation params. A changed plate or param is a new key, never a stale hit.

    Each task is one JSON file (frames as columns with their dtypes): a cache folder copied from someone
    else is data, never code (no pickle). A file that does not parse as a task's result is a miss: the task
    trains again and the file is replaced.
    """

    def __init__(self, folder: Path | None, inputs: Inputs, params: TrainParams):
        self.folder = folder
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        for array in (inputs.bank.images, None if inputs.vit is None else inputs.vit.values):
            digest.update(b"none" if array is None else np.ascontiguousarray(array).tobytes())
        digest.update(inputs.labels.to_csv(index=False).encode())
        digest.update(inputs.wells.group.to_csv(index=False).encode())
        if inputs.profile is not None:
            digest.update(inputs.profile.to_csv(index=False).encode())
        digest.update(repr((inputs.channels, inputs.strategies, inputs.bank.views, params)).encode())
        self._base = digest.hexdigest()

    def _path(self, task: Task) -> Path:
        key = hashlib.sha256(
            f"{self._base}/{task.architecture}/{task.cytokine}/{task.repeat}".encode()
        ).hexdigest()
        return self.folder / f"{key[:32]}.json"

    @staticmethod
    def _encode(part: dict[str, list]) -> str:
        def frame(df: pd.DataFrame) -> dict:
            columns = [str(c) for c in df.columns]
            return {
                "columns": columns,
                "dtypes": [str(t) for t in df.dtypes],
                "values": [df[c].tolist() for c in df.columns],
            }

        encoded = {key: [frame(df) for df in part[key]] for key in ("predictions", "curves")}
        encoded.update({key: list(part[key]) for key in ("fits", "failures")})
        return json.dumps(encoded, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))

    @staticmethod
    def _decode(text: str) -> dict[str, list]:
        raw = json.loads(text)

        def frame(item: dict) -> pd.DataFrame:
            columns, dtypes, values = item["columns"], item["dtypes"], item["values"]
            if not (len(columns) == len(dtypes) == len(values)):
                raise ValueError("columns, dtypes and values differ in length")
            df = pd.DataFrame(dict(zip(columns, values, strict=True)), columns=columns)
            return df.astype(dict(zip(columns, dtypes, strict=True)))

        part = {key: [frame(item) for item in raw[key]] for key in ("predictions", "curves")}
        for key in ("fits", "failures"):
            if not all(isinstance(row, dict) for row in raw[key]):
                raise ValueError(f"{key} rows are not mappings")
            part[key] = list(raw[key])
        return part

    def get(self, task: Task) -> dict[str, list] | None:
        if self.folder is None or not self._path(task).is_file():
            return None
        try:
            return self._decode(self._path(task).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
            log.warning(
                f"train: cache file {self._path(task)} is not a task result ({err}): training it again",
            )
            return None

    def put(self, task: Task, part: dict[str, list]) -> None:
        if self.folder is None:
            return
        tmp = self._path(task).with_suffix(".tmp")
        tmp.write_text(self._encode(part), encoding="utf-8")
        tmp.replace(self._path(task))  # atomic: a killed run never leaves half a file under the real name


# relative time of one fit per well, by architecture (benchmarks/results.json: ~0.9 s wide, ~2 s deep, ~0.1 s
# a ViT head per fit on the demo plate); a task's cost also grows with its wells
FIT_COST = {"deep_cnn": 2.0, "wide_cnn": 1.0}
HEAD_COST = 0.1


def task_cost(task: Task) -> int:
    """A task's expected time, in arbitrary units: its architecture's cost per fit times its wells (an int, so
    that the bar's total is exactly the sum of its steps)."""
    return round(10 * FIT_COST.get(task.architecture, HEAD_COST) * len(task.wells))


def interleave(tasks: list[Task]) -> list[Task]:
    """Round-robin over architectures, each one's costliest task first: every stretch of the run has the same
    mix, so the bar's rate (and the time left) holds even where FIT_COST is off (it varies with epochs and
    machine), and the last round is the smallest cytokines, a short tail."""
    by_arch: dict[str, list[Task]] = {}
    for task in sorted(tasks, key=task_cost, reverse=True):
        by_arch.setdefault(task.architecture, []).append(task)
    return [t for rnd in itertools.zip_longest(*by_arch.values()) for t in rnd if t is not None]


def cross_validate(
    inputs: Inputs, params: TrainParams, progress: bool = True, cache: Path | None = None
) -> Result:
    """Every (architecture, augmentation, cytokine, repeat, fold); a failing unit is recorded, never fatal.

    Tasks are independent (no shared mutable state): with `train.workers` > 1 they run in that many processes,
    and every unit gives the same numbers wherever it runs with the same thread count. With `cache`, finished
    tasks are kept on disk and a rerun after an interruption only trains what is missing.
    """
    tasks, folds, failures = plan(inputs, params)
    store = TaskCache(cache, inputs, params)
    parts: list[dict[str, list]] = []

    def units(task: Task) -> int:  # fits a task makes: one per fold, times the strategies for the study's
        per_fold = len(inputs.strategies) if architecture_kind(task.architecture) in ("cnn", "vit") else 1
        return params.folds * per_fold

    n_fits = sum(units(t) for t in tasks)
    # the bar advances by each task's expected cost, not by its count of fits (the CNN tasks used to run
    # first, so counting fits made the first estimate of the time left many times too long)
    bar = tqdm(
        total=sum(task_cost(t) for t in tasks),
        desc="train",
        disable=not progress,
        file=sys.stderr,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
    )
    done = 0

    def advance(task: Task) -> None:
        nonlocal done
        done += units(task)
        bar.set_postfix_str(f"{done}/{n_fits} fits, {task.architecture} {task.cytokine}", refresh=False)
        bar.update(task_cost(task))

    todo = []
    for task in tasks:
        part = store.get(task)
        if part is None:
            todo.append(task)
        else:
            parts.append(part)
            advance(task)
    todo = interleave(todo)
    workers = min(n_workers(params), max(1, len(todo)))
    bar.unpause()
    for task, part in backends.run(todo, inputs, params, run_task, workers):
        parts.append(part)
        store.put(task, part)
        advance(task)
    bar.close()
    gathered = {
        key: [row for part in parts for row in part[key]]
        for key in ("predictions", "curves", "fits", "failures")
    }
    failures += gathered["failures"]
    frame = lambda rows, columns: (  # noqa: E731
        pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    ).sort_values(tables.UNIT, kind="stable", ignore_index=True)
    return Result(
        predictions=frame(gathered["predictions"], tables.PREDICTIONS),
        curves=frame(gathered["curves"], tables.CURVES),
        fits=pd.DataFrame(
            gathered["fits"],
            columns=[
                *tables.UNIT,
                "n_train",
                "n_train_images",
                "n_val",
                "n_test",
                "best_epoch",
                "epochs_run",
                "seconds",
            ],
        ).sort_values(tables.UNIT, kind="stable", ignore_index=True),
        failures=pd.DataFrame(failures, columns=[*tables.UNIT, "error"]),
        folds=folds,
    )


# ---- early checks: one line, before any fit (or before the verdict), when nothing can be trained ---------


def check_trainable(
    kept: tuple[str, ...],
    labels: pd.DataFrame,
    wells: pd.DataFrame,
    params: TrainParams,
    cytokines_file: Path,
) -> None:
    """ValueError when no cytokine was kept, or when the plate's labelled wells hold fewer treatment groups
    than `train.folds` (the plate's grouped folds, `plate_folds`, cannot be made)."""
    if not kept:
        raise ValueError(
            f"no cytokine passed wrangle's cut-off, so nothing can be trained (reasons: {cytokines_file}, "
            f"column reason); fix: lower wrangle.min_wells, or change wrangle.method / wrangle.threshold"
        )
    labelled = labels.well_index[labels.cytokine.isin(kept)].to_numpy().astype(int)
    most = len(set(wells.group.to_numpy()[labelled]))
    if most < params.folds:
        raise ValueError(
            f"train.folds is {params.folds} but the plate's labelled wells hold {most} treatment groups: "
            f"grouped folds cannot be made; fix: set train.folds to {most} or fewer (at least 2), or add "
            f"treatments"
        )


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


# ---- stage I/O -------------------------------------------------------------------------------------------


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


def command(
    wrangled: Path = typer.Option(..., "--wrangled", help="Folder written by `cytoops wrangle`."),
    views: Path = typer.Option(..., "--views", help="View bank written by `cytoops augment`."),
    vit_features: Path | None = typer.Option(
        None, "--features", help="ViT features written by `cytoops features`."
    ),
    profile_table: Path | None = typer.Option(
        None, "--profile", help="Per-well profile written by `cytoops profile` (for the profile model)."
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for predictions.csv, curves.csv, fits.csv, failures.csv."
    ),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Keep finished tasks here: a rerun after an interruption trains only what is missing.",
    ),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set train.epochs=5"),
) -> None:
    """Cross-validate every architecture x augmentation x kept cytokine: out-of-fold probabilities, curves."""
    p = load_params(params_file, overrides)
    inputs = load_inputs(wrangled, views, vit_features, p, profile_table)
    check_trainable(inputs.kept, inputs.labels, inputs.wells, p.train, Path(wrangled) / "cytokines.csv")
    result = cross_validate(inputs, p.train, cache=cache)
    save(result, out)
    check_trained(result.fits, result.failures, out / "failures.csv")
    log.info(
        f"train: {len(result.fits)} fits, {len(result.failures)} failed, "
        f"{result.fits.seconds.sum():.0f} s of fitting -> {out}"
    )
    for row in result.failures.itertuples():
        log.warning(
            f"  failed: {row.architecture} {row.augmentation} {row.cytokine} "
            f"repeat {row.repeat} fold {row.fold}: {row.error}",
            fg="red",
        )
