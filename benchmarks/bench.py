"""Speed benchmark: cytoops' trainer against the study's training loop, same plate, grid, wells and seeds.

    python benchmarks/bench.py [--data data] [--out benchmarks/results.json] [--params params.yaml]
                               [--study-units-per-arch 5] [--trainer-tasks 1] [--quick]

Three processes, each with its own peak memory:

- cytoops: the `features` stage (`cytoops.features.compute`, the frozen ViT-B/32 run once per well and view),
  then `cytoops.train.cross_validate` on the whole grid (architectures x augmentations x kept cytokines x
  repeats x folds), measured in full; then the seed-noise yardstick (below).
- trainers: cytoops' `fitter.Fitter` on one thread against the same thread's fp32 matmul rate (`trainers.py`).
- study: the loop as the study wrote it. Per unit a fresh Keras model is built (`models.REGISTRY[name].build`
  for the CNNs; for the ViTs the whole model, the 87M-parameter ViT-B/32 backbone + head, so the backbone runs
  on every image at every epoch) and fitted with `model.fit(..., validation_data=...,
  callbacks=[EarlyStopping(monitor="val_loss", restore_best_weights=True)])`. It runs on a seeded subset of
  the grid's units, `--study-units-per-arch` per architecture spread over augmentations and cytokines, and
  its mean time per fit is extrapolated to the full grid.

Like for like: both sides take each unit's wells and arrays from the same functions (`train.fold_split`:
folds, class-balanced training wells, validation split; `train.unit_arrays`: training views, labels) and its
seed from `cvresult.Unit.seed`, so each subset unit trains on the same wells and its test-fold F1 is paired
between them. The yardstick of seed noise: the same units refitted by cytoops' Fitter with another base seed.

Writes one JSON (see benchmarks/README.md for every field). Wrangle and augment, shared by both sides, are
timed apart and counted on neither side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import probe  # noqa: E402 - benchmarks/ itself, put on the path above
import trainers  # noqa: E402
from summary import clean, models_kind, summarize, unit_key  # noqa: E402

QUICK_OVERRIDES = [  # a tiny run (the test): every code path, no meaningful numbers
    "wrangle.min_wells=2",
    "augment.strategies=[hflip]",
    "train.architectures=[wide_cnn,vit_linear]",  # one CNN, one ViT: both code paths
    "train.epochs=2",
    "train.patience=1",
    "train.workers=1",
]
QUICK_VIT_LAYERS = 1  # transformer blocks of the backbone in --quick (both sides); 12 (ViT-B/32) otherwise
STUDY_UNITS_PER_ARCH = 5  # the default; --quick: 1
YARDSTICK_SEED_OFFSET = 1  # seed-noise run: unit seeds from base train.seed + 1 (folds, splits unchanged)
TARGETS = {"grid_seconds": 600.0, "speedup": 50.0, "peak_memory_mb": 4096.0}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- what both sides share ---------------------------------------------------------------------------------


def load_config(workdir: Path):
    from cytoops import params as params_mod

    config = json.loads((workdir / "config.json").read_text())
    p = params_mod.load(Path(config["params_file"]), config["overrides"])
    return config, p


def plan_inputs(workdir: Path, p):
    """Inputs without ViT features (enough for `train.plan` and the images), from wrangle/augment outputs."""
    from cytoops import augment, dataset, wrangle

    w = wrangle.load(workdir / "wrangle")
    return dataset.Inputs(
        wells=w.wells,
        labels=w.labels,
        kept=wrangle.kept_cytokines(w.cytokines),
        bank=augment.load(workdir / "augment" / "views.npz"),
        channels=w.channels,
        vit=None,
        strategies=p.augment.strategies,
    )


def unit_arrays(tasks: dict, u: dict, source: np.ndarray, views, tp):
    """A subset unit's (fit wells, train.UnitArrays), from the very functions `train.run_task` uses."""
    from cytoops import train

    arch, strategy, cytokine, repeat, fold = unit_key(u)
    task = tasks[(arch, cytokine, repeat)]
    split = train.fold_split(task, fold, tp)
    return len(split[0]), train.unit_arrays(task, split, source, views, strategy)


def f1_of(label: np.ndarray, prob: np.ndarray) -> float:
    from cytoops.evaluate import fold_scores

    return float(fold_scores(np.asarray(label), np.asarray(prob))["f1"])


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__}


# ---- side 1: cytoops ---------------------------------------------------------------------------------------


def phase_features(workdir: Path) -> None:
    """cytoops' `features` stage, in its own process as `dvc repro` runs it."""
    from cytoops import augment, features

    config, p = load_config(workdir)
    bank = augment.load(workdir / "augment" / "views.npz")
    t0 = time.perf_counter()
    f = features.compute(bank, p.features, vit_layers=config["vit_layers"], progress=False)
    seconds = time.perf_counter() - t0
    features.save(f, workdir / "features" / "vit.npz")
    log(f"cytoops: features of {f.values.shape[0]} views x {f.values.shape[1]} wells in {seconds:.1f} s")
    out = {"features_seconds": seconds, "peak_rss_mb": probe.rusage_mb()}
    (workdir / "features.json").write_text(json.dumps(out))


def phase_cytoops(workdir: Path) -> None:
    """cytoops' `train` stage (`cross_validate` on the whole grid), then the seed-noise yardstick."""
    from cytoops import cvresult, dataset, schedule, tables, train
    from cytoops.fitter import Fitter

    config, p = load_config(workdir)
    vit_path = workdir / "features" / "vit.npz"
    t0 = time.perf_counter()
    inputs = dataset.load_inputs(
        workdir / "wrangle", workdir / "augment" / "views.npz", vit_path if vit_path.is_file() else None, p
    )
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = train.cross_validate(inputs, p.train, progress=False)
    train_s = time.perf_counter() - t0
    tasks = {(t.architecture, t.cytokine, t.repeat): t for t in train.plan(inputs, p.train)[0]}
    workers = min(schedule.n_workers(p.train), max(1, len(tasks)))
    log(f"cytoops: {len(result.fits)} fits ({len(result.failures)} failed) in {train_s:.0f} s")
    memory = probe.rusage_mb()  # before the yardstick below, which is not part of cytoops' run

    # the subset's units in this run (F1, training wells), and their F1 with other unit seeds (seed noise)
    pred, fits = result.predictions.groupby(tables.UNIT), result.fits.set_index(tables.UNIT)
    fitter, sources = Fitter(p.train), {}
    other_base = p.train.seed + YARDSTICK_SEED_OFFSET
    subset = []
    for u in config["subset"]:
        key = unit_key(u)
        row = {**u, "f1": None, "fit_wells": None, "f1_other_seed": None}
        if key in fits.index:
            g = pred.get_group(key)
            row.update(f1=f1_of(g.label.to_numpy(), g.prob.to_numpy()), fit_wells=int(fits.n_train[key]))
        kind = models_kind(key[0])
        if kind not in sources:
            sources[kind] = (
                dataset.cnn_view_bank(inputs, p.train.cnn_channels)
                if kind == "cnn"
                else dataset.model_input(inputs, key[0])
            )
        try:
            _, a = unit_arrays(tasks, u, sources[kind], inputs.bank.views, p.train)
            model, _, _ = fitter.fit(
                key[0], a.x_fit, a.y_fit, a.x_val, a.y_val, cvresult.Unit(*key).seed(other_base)
            )
            row["f1_other_seed"] = f1_of(a.y_test, fitter.probability(model, a.x_test))
        except Exception as err:  # noqa: BLE001 - a unit the trainer cannot fit either (e.g. tiny folds)
            row["error_other_seed"] = f"{type(err).__name__}: {err}"
        subset.append(row)

    failures = result.failures
    out = {
        "load_seconds": load_s,
        "train_seconds": train_s,
        "workers": workers,
        "fits": result.fits[
            ["architecture", "augmentation", "n_train_images", "n_val", "epochs_run", "seconds"]
        ].to_dict("list"),
        "n_failed": int((failures.architecture != "*").sum()),  # units; fold problems apart
        "cytokines_not_cross_validated": sorted(failures.cytokine[failures.architecture == "*"]),
        "failures": failures.astype(str).to_dict("records")[:20],
        "peak_rss_mb": memory,
        "subset": subset,
        "other_seed_base": other_base,
        **versions(),
    }
    (workdir / "cytoops.json").write_text(json.dumps(out, default=float))


def phase_trainers(workdir: Path) -> None:
    """The trainer against the fp32 matmul rate, on one thread as a grid worker (`trainers.py`)."""
    from cytoops import backends, dataset

    backends.one_thread()
    config, p = load_config(workdir)
    vit_path = workdir / "features" / "vit.npz"
    inputs = dataset.load_inputs(
        workdir / "wrangle", workdir / "augment" / "views.npz", vit_path if vit_path.is_file() else None, p
    )
    matmul = probe.matmul_gflops()
    log(f"trainers: fp32 matmul {matmul:.1f} GFLOP/s on one thread")
    out = trainers.measure(inputs, p.train, config["trainer_tasks"], matmul, log)
    (workdir / "trainers.json").write_text(json.dumps(out, default=float))


# ---- side 2: the study's loop ------------------------------------------------------------------------------


def study_fit(arch: str, seed: int, x, y, x_val, y_val, x_test, p, vit_layers: int):
    """A fresh model, `model.fit` as the study did; returns (P(responder) on x_test, epochs run)."""
    import keras

    from cytoops import models

    tp = p.train
    mp = models.ModelParams(
        learning_rate=tp.learning_rate,
        vit_weights=p.features.vit_weights,
        vit_layers=vit_layers,
        dtype_policy=tp.precision,
    )
    from cytoops.fitter import initial_weights

    if models_kind(arch) == "cnn":
        keras.utils.set_random_seed(seed)  # Keras' fit shuffles from it
        model = models.REGISTRY[arch].build(tuple(x.shape[1:]), mp)  # compiled: Adam, 2 logits, sparse CE
        model.set_weights(initial_weights(model, np.random.default_rng(seed)))  # cytoops' weights
        y, y_val = y.astype(np.int32), y_val.astype(np.int32)
    else:
        # The study's Sequential(vit_b32(...), Dense..., Dense(1, sigmoid)), backbone frozen. The backbone is
        # the one the features stage used (same seed or weights file); the head gets the unit's seed.
        keras.utils.set_random_seed(p.features.seed)
        backbone, _ = models.build_backbone(mp, image_size=x.shape[1])
        keras.utils.set_random_seed(seed)
        head = models.build_head(arch, models.VIT_FEATURES, mp)
        head.set_weights(initial_weights(head, np.random.default_rng(seed)))  # cytoops' initial weights
        model = keras.Sequential([keras.Input(shape=tuple(x.shape[1:])), backbone, head], name=arch)
        model.compile(
            optimizer=keras.optimizers.Adam(tp.learning_rate),
            loss="binary_crossentropy",
            metrics=["accuracy"],
        )
        y, y_val = y.astype(np.float32), y_val.astype(np.float32)
    history = model.fit(
        x,
        y,
        validation_data=(x_val, y_val),
        epochs=tp.epochs,
        batch_size=tp.batch_size,
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=tp.patience, restore_best_weights=True)
        ],
        verbose=0,
    )
    out = np.asarray(model.predict(x_test, batch_size=tp.batch_size, verbose=0), dtype=np.float64)
    prob = 1.0 / (1.0 + np.exp(out[:, 0] - out[:, 1])) if out.shape[-1] == 2 else out[:, 0]
    return prob, len(history.history["loss"])


def warm_up() -> None:
    """TensorFlow's one-off start-up (first kernels, thread pools), paid before the clock starts."""
    import keras

    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((8, 4)), np.zeros(8), epochs=1, verbose=0)
    model.predict(np.zeros((2, 4)), verbose=0)


def phase_study(workdir: Path) -> None:
    from cytoops import cvresult, dataset, features, train

    config, p = load_config(workdir)
    inputs = plan_inputs(workdir, p)
    tasks = {(t.architecture, t.cytokine, t.repeat): t for t in train.plan(inputs, p.train)[0]}
    sources: dict[str, np.ndarray] = {}
    warm_up()
    rows = []
    for i, u in enumerate(config["subset"], start=1):
        arch, aug, cytokine, repeat, fold = key = unit_key(u)
        kind = models_kind(arch)
        if kind not in sources:
            if kind == "cnn":
                sources[kind] = dataset.cnn_view_bank(inputs, p.train.cnn_channels)
            else:  # the images as the ViT reads them (channels last, [-1, 1]), as the features stage does
                bank = inputs.bank.images
                sources[kind] = np.stack([features.to_vit_input(bank[v]) for v in range(bank.shape[0])])
        row = dict(u)
        name = f"{arch} {aug} {cytokine} fold {fold}"
        try:
            fit_wells, a = unit_arrays(tasks, u, sources[kind], inputs.bank.views, p.train)
            seed = cvresult.Unit(*key).seed(p.train.seed)
            t0 = time.perf_counter()
            prob, epochs = study_fit(
                arch, seed, a.x_fit, a.y_fit, a.x_val, a.y_val, a.x_test, p, config["vit_layers"]
            )
            seconds = time.perf_counter() - t0
            row.update(
                seconds=seconds,
                epochs_run=epochs,
                fit_wells=fit_wells,
                n_train_images=len(a.x_fit),
                n_val=len(a.x_val),
                f1=f1_of(a.y_test, prob),
            )
            log(f"study {i}/{len(config['subset'])}: {name}: {seconds:.1f} s, {len(a.x_fit)} x {epochs}")
        except Exception as err:  # noqa: BLE001 - recorded, as cytoops records a failing unit
            row["error"] = f"{type(err).__name__}: {err}"
            log(f"study {i}: {name} failed: {row['error']}")
        rows.append(row)
        gc.collect()
    out = {"units": rows, "peak_rss_mb": probe.rusage_mb(), **versions()}
    (workdir / "study.json").write_text(json.dumps(out, default=float))


# ---- the orchestrator --------------------------------------------------------------------------------------


def run_phase(name: str, workdir: Path) -> tuple[float, float | None]:
    """Run one side in its own process: (wall seconds, peak summed RSS of its process tree, sampled)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--workdir", str(workdir)]
    return probe.run_sampled(cmd, env)


def pick_subset(tasks, folds: int, strategies, per_arch: int, seed: int) -> list[dict]:
    """A seeded subset of the grid's units, `per_arch` of each architecture, spread over the augmentations
    (they set how many images a fit trains on) and the cytokines: each pick is, among the units not picked
    yet, one whose augmentation and cytokine have been picked the fewest times (ties: a seeded random order).
    """
    rng = np.random.default_rng(seed)
    subset = []
    for arch in dict.fromkeys(t.architecture for t in tasks):
        pool = [
            {"architecture": arch, "augmentation": s, "cytokine": t.cytokine, "repeat": t.repeat, "fold": f}
            for t in tasks
            if t.architecture == arch
            for f in range(folds)
            for s in strategies
        ]
        pool = [pool[i] for i in rng.permutation(len(pool))]
        picked_aug: dict[str, int] = {}
        picked_cyt: dict[str, int] = {}
        for _ in range(min(per_arch, len(pool))):
            uses = [(picked_aug.get(u["augmentation"], 0), picked_cyt.get(u["cytokine"], 0)) for u in pool]
            u = pool.pop(min(range(len(pool)), key=lambda i: (max(uses[i]), sum(uses[i]))))
            picked_aug[u["augmentation"]] = picked_aug.get(u["augmentation"], 0) + 1
            picked_cyt[u["cytokine"]] = picked_cyt.get(u["cytokine"], 0) + 1
            subset.append(u)
    return subset


def machine_info(load_start, load: probe.LoadSampler, cy: dict) -> dict:
    return {
        "cpu_model": probe.cpu_model(),
        "cpu_isa": probe.cpu_isa(),
        "cores": os.cpu_count(),
        "cores_available": probe.cores_available(),
        "memory_gb": probe.memory_gb(),
        "tensorflow": cy["tensorflow"],
        "keras": cy["keras"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in load_start],
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "load_during_run": load.summary(),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data", help="folder of plates (default: data)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="params.yaml to read")
    parser.add_argument(
        "--study-units-per-arch",
        type=int,
        help=f"study-loop units per architecture (default {STUDY_UNITS_PER_ARCH}; --quick: 1)",
    )
    parser.add_argument("--subset-seed", type=int, default=0, help="seed of the study subset's draw")
    parser.add_argument("--quick", action="store_true", help="a tiny run (tests): few epochs, 1-block ViT")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="params override a.b=value"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep intermediate files here (default: a temporary folder)"
    )
    parser.add_argument(
        "--trainer-tasks", type=int, default=1, help="tasks per architecture the trainers phase times"
    )
    parser.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


PHASES = {
    "features": phase_features,
    "cytoops": phase_cytoops,
    "study": phase_study,
    "trainers": phase_trainers,
}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.phase:
        from cytoops import machine

        machine.import_tensorflow()  # every side on the same kernels as the grid's workers (oneDNN)
        PHASES[args.phase](args.workdir)
        return 0

    from cytoops import augment, train, wrangle
    from cytoops import params as params_mod

    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()
    overrides = (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    per_arch = args.study_units_per_arch or (1 if args.quick else STUDY_UNITS_PER_ARCH)
    vit_layers = QUICK_VIT_LAYERS if args.quick else 12
    params_file = args.params.resolve()
    p = params_mod.load(params_file, overrides)
    study = [a for a in p.train.architectures if a in params_mod.STUDY_ARCHITECTURES]
    if study != list(p.train.architectures):  # profile, multitask_cnn: no counterpart in the study's loop
        overrides.append(f"train.architectures=[{','.join(study)}]")
        p = params_mod.load(params_file, overrides)
        log(f"bench: the study's architectures only ({', '.join(study)}): no study loop races the others")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cytoops-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with probe.LoadSampler() as load:
            t0 = time.perf_counter()
            w = wrangle.run(args.data, workdir / "wrangle", p.wrangle)
            wrangle_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            augment.save(augment.make_bank(w.images, p.augment.strategies), workdir / "augment" / "views.npz")
            augment_s = time.perf_counter() - t0
            inputs = plan_inputs(workdir, p)
            tasks, _, plan_failures = train.plan(inputs, p.train)
            units_per_arch = {
                a: sum(1 for t in tasks if t.architecture == a) * p.train.folds * len(p.augment.strategies)
                for a in p.train.architectures
            }
            subset = pick_subset(tasks, p.train.folds, p.augment.strategies, per_arch, args.subset_seed)
            config = {
                "params_file": str(params_file),
                "overrides": overrides,
                "vit_layers": vit_layers,
                "subset": subset,
                "study_units_per_arch": per_arch,
                "subset_seed": args.subset_seed,
                "trainer_tasks": args.trainer_tasks,
            }
            (workdir / "config.json").write_text(json.dumps(config))
            n_units = sum(units_per_arch.values())
            log(
                f"plate: {len(w.wells)} wells, {len(inputs.kept)} cytokines kept; grid: {n_units} units; "
                f"study subset: {len(subset)} units"
            )
            needs_vit = any(models_kind(a) == "vit" for a in p.train.architectures)
            walls, trees = {}, {}
            for phase in ("features", "cytoops", "trainers", "study"):
                if (phase != "features" or needs_vit) and (phase != "study" or subset):
                    walls[phase], trees[phase] = run_phase(phase, workdir)
        read = lambda name: json.loads((workdir / f"{name}.json").read_text())  # noqa: E731
        cy, tr = read("cytoops"), read("trainers")
        ft = read("features") if needs_vit else None
        st = read("study") if subset else None
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    cy["features_seconds"] = ft["features_seconds"] if ft else 0.0
    cy["features_peak_rss_mb"] = ft["peak_rss_mb"] if ft else None
    cy["features_tree_mb"], cy["train_tree_mb"] = trees.get("features"), trees["cytoops"]

    grid = {
        "architectures": list(p.train.architectures),
        "augmentations": list(p.augment.strategies),
        "cytokines": len(inputs.kept),
        "cytokines_unfoldable": len(plan_failures),
        "folds": p.train.folds,
        "repeats": p.train.repeats,
        "units": n_units,
        "units_per_architecture": units_per_arch,
        "epochs": p.train.epochs,
        "patience": p.train.patience,
        "batch_size": p.train.batch_size,
        "vit_layers": vit_layers,
        "vit_backbone": p.features.vit_weights or "random (seeded with features.seed; no weights file given)",
    }
    body = summarize(config, cy, st, grid)
    cytoops, study = body["cytoops"], body["study"]
    if study is not None:
        study["peak_rss_mb"]["process_tree_sampled"] = trees["study"]
    peak = cytoops["peak_rss_mb"]["peak"]
    speeds = [v for v in ((body["speedup"] or {}).get(k) for k in ("grid", "grid_by_image_epochs")) if v]
    speed = min(speeds) if speeds else None  # the more conservative of the two extrapolations
    trained = trainers.summarize(tr)
    targets = {
        "grid_under_10_minutes": cytoops["grid_seconds"] < TARGETS["grid_seconds"],
        "speedup_at_least_50x": None if speed is None else speed >= TARGETS["speedup"],
        "cytoops_peak_memory_under_4_gb": peak < TARGETS["peak_memory_mb"],
        "f1_agree": (body["f1_agreement"] or {}).get("agree"),
        "cnn_trainers_at_60_percent_of_matmul": trained["cnn_goal_met"],
    }
    result = {
        "benchmark": "cytoops trainer (features once + cross_validate) "
        "vs the study's per-unit build-and-fit loop, on the same wells",
        "created": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "overrides": overrides,
        "machine": machine_info(load_start, load, cy),
        "plate": {
            "data": str(args.data),
            "wells": len(w.wells),
            "cytokines": len(w.cytokines),
            "cytokines_kept": len(inputs.kept),
            "image_size": p.wrangle.image_size,
            "channels": list(w.channels),
            "views": list(inputs.bank.views),
        },
        "grid": grid,
        "prep_seconds": {"wrangle_seconds": wrangle_s, "augment_seconds": augment_s},
        "phase_wall_seconds": walls,
        **body,
        "trainers": trained,
        "targets": targets,
    }
    total = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    result["bench_wall_seconds"] = targets["bench_wall_seconds"] = total
    targets["bench_under_15_minutes"] = total < 900  # an earlier issue's goal
    targets["bench_under_30_minutes"] = total < 1800  # issue 21's limit
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(clean(result), indent=2, ensure_ascii=False) + "\n")
    sp = body["speedup"] or {}
    log(
        f"cytoops grid {cytoops['grid_seconds']:.0f} s; study grid (extrapolated) "
        f"{(study or {}).get('grid_seconds_extrapolated') or float('nan'):.0f} s; speed-up "
        f"{sp.get('grid') or float('nan'):.1f}x; peak {peak:.0f} MB -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
