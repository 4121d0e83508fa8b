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

import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from cytoops import augment, backends, tables
from cytoops.cvresult import Result, Unit, check_trained, save
from cytoops.dataset import Inputs, cnn_view_bank, load_inputs, model_input, wide_labels
from cytoops.fitter import Fitter
from cytoops.params import CNN_KINDS, TrainParams, architecture_kind
from cytoops.params import load as load_params
from cytoops.schedule import interleave, n_workers, task_cost
from cytoops.taskcache import TaskCache

log = logging.getLogger(__name__)


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


def _n_val_splits(groups: np.ndarray, fraction: float) -> int:
    return max(2, min(round(1 / fraction), len(np.unique(groups))))


def too_rare_to_stratify(labels: np.ndarray, groups: np.ndarray, fraction: float) -> bool:
    """Whether a class has fewer wells than the validation split has parts, so that no split can hold it in
    every part (e.g. a training fold with a single responder well): stratified as far as it goes."""
    counts = np.unique(labels, return_counts=True)[1]
    return bool(counts.min() < _n_val_splits(groups, fraction))


def split_validation(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the validation wells carved from a training fold (grouped, stratified).

    A class too rare to stratify (`too_rare_to_stratify`) is expected on small plates: scikit-learn's warning
    about it is not shown; `cross_validate` says once in the log how many training folds it concerns.
    """
    splitter = StratifiedGroupKFold(n_splits=_n_val_splits(groups, fraction), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        if too_rare_to_stratify(labels, groups, fraction):
            warnings.filterwarnings("ignore", message="The least populated class in y", category=UserWarning)
        _, val = next(splitter.split(np.zeros(len(labels)), labels, groups))
    mask = np.zeros(len(labels), dtype=bool)
    mask[val] = True
    return mask


def _say_rare_classes(tasks: list, params: TrainParams) -> None:
    """One log line: how many of the study architectures' training folds hold a class too rare to stratify."""
    study = [t for t in tasks if architecture_kind(t.architecture) in ("cnn", "vit")]
    studied = {(t.cytokine, t.repeat): t for t in study}  # one per cytokine: the architectures share folds
    rare = total = 0
    for task in studied.values():
        for fold in range(params.folds):
            train = (task.folds != fold) & task.balanced
            if train.any() and len(np.unique(task.labels[train])) == 2:
                total += 1
                rare += too_rare_to_stratify(task.labels[train], task.groups[train], params.val_fraction)
    if rare:
        log.info(
            f"train: {rare} of {total} training folds hold a class with fewer wells than their validation "
            "split has parts: their early-stopping split is stratified as far as it goes"
        )


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

    The study's architectures train on the training fold's class-balanced wells (its protocol) under each
    augmentation; the profile model and cnn_all on all the training fold's labelled wells (class-weighted),
    cnn_all under the richest augmentation (`fold_split`); every model predicts every labelled well of the
    test fold, so all are scored on the same wells (`balanced` marks the study's test set). `sources` caches,
    per process, the (views, wells, ...) arrays models read (made once, not per task).
    """
    kind = architecture_kind(task.architecture)
    if kind == "multitask":
        return run_multitask(task, inputs, params, sources)
    if kind == "profile":
        return run_profile(task, inputs, params)
    out: dict[str, list] = {"predictions": [], "curves": [], "fits": [], "failures": []}
    read = "cnn" if kind in CNN_KINDS else kind  # every CNN reads the same view bank
    if read not in sources:
        sources[read] = (
            cnn_view_bank(inputs, params.cnn_channels)
            if read == "cnn"
            else model_input(inputs, task.architecture)
        )
    source = sources[read]
    wells = task.wells
    all_wells = kind == "cnn_all"  # class-weighted, one augmentation (its wells: fold_split)
    strategies, weighting = (
        ((richest(inputs.strategies),), {"class_weight": True}) if all_wells else (inputs.strategies, {})
    )
    for fold in range(params.folds):
        try:
            split = fold_split(task, fold, params)
        except ValueError as err:  # e.g. a training fold of one treatment: no grouped validation split
            for strategy in strategies:
                unit = Unit(task.architecture, strategy, task.cytokine, task.repeat, fold)
                out["failures"].append({**unit.__dict__, "error": f"validation split: {err}"})
            continue
        fit, val, test = split
        for strategy in strategies:
            unit = Unit(task.architecture, strategy, task.cytokine, task.repeat, fold)
            t0 = time.perf_counter()
            try:
                a = unit_arrays(task, split, source, inputs.bank.views, strategy)
                model, history, best_epoch = fitter.fit(
                    task.architecture, a.x_fit, a.y_fit, a.x_val, a.y_val, unit.seed(params.seed), **weighting
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
    on the training fold's class-balanced wells (cnn_all on all its labelled wells) less a grouped validation
    split carved from them, and are tested on every labelled well of the test fold. ValueError when no
    validation split can be made."""
    test = np.flatnonzero(task.folds == fold)
    pool = task.folds != fold
    train = np.flatnonzero(
        pool if architecture_kind(task.architecture) == "cnn_all" else pool & task.balanced
    )
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
    x_fit, y_fit = augment.labelled_views(source, views, strategy, fit_wells, task.labels[fit])
    return UnitArrays(
        x_fit=x_fit,
        y_fit=y_fit,
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


def model_fits(fits: pd.DataFrame) -> int:
    """Models fitted, as the progress bar counts them: a fold unit each, except the multitask model's, one fit
    for all the cytokines of its fold (its rows in `fits` are per cytokine)."""
    multitask = fits.architecture.map(architecture_kind) == "multitask"
    shared = fits[multitask].drop_duplicates(["architecture", "augmentation", "repeat", "fold"])
    return int((~multitask).sum()) + len(shared)


def cross_validate(
    inputs: Inputs, params: TrainParams, progress: bool = True, cache: Path | None = None
) -> Result:
    """Every (architecture, augmentation, cytokine, repeat, fold); a failing unit is recorded, never fatal.

    Tasks are independent (no shared mutable state): with `train.workers` > 1 they run in that many processes,
    and every unit gives the same numbers wherever it runs with the same thread count. With `cache`, finished
    tasks are kept on disk and a rerun after an interruption only trains what is missing.
    """
    tasks, folds, failures = plan(inputs, params)
    _say_rare_classes(tasks, params)
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
        fits=pd.DataFrame(gathered["fits"], columns=tables.FITS).sort_values(
            tables.UNIT, kind="stable", ignore_index=True
        ),
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


# ---- stage I/O -------------------------------------------------------------------------------------------


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
        f"train: {model_fits(result.fits)} fits ({len(result.fits)} fold units), {len(result.failures)} "
        f"failed, {result.fits.seconds.sum():.0f} s of fitting -> {out}"
    )
    for row in result.failures.itertuples():
        log.warning(
            f"  failed: {row.architecture} {row.augmentation} {row.cytokine} "
            f"repeat {row.repeat} fold {row.fold}: {row.error}"
        )
