"""Speed benchmark: cytoops' trainer against the study's training loop, same plate, grid, folds and seeds.

    python benchmarks/bench.py [--data data] [--out benchmarks/results.json] [--params params.yaml]
                               [--study-units-per-arch 2] [--quick]

Two sides, each in its own Python process (so each one's peak memory is its own):

- cytoops: the `features` stage (`cytoops.features.compute`, the frozen ViT-B/32 run once per well and view),
  then `cytoops.train.cross_validate` on the whole grid (architectures x augmentations x kept cytokines x
  repeats x folds), measured in full.
- study: the loop as the study wrote it. Per unit a fresh Keras model is built (`models.REGISTRY[name].build`
  for the CNNs; for the ViTs the whole model, the 87M-parameter ViT-B/32 backbone + head, so the backbone runs
  on every image at every epoch) and fitted with `model.fit(..., validation_data=...,
  callbacks=[EarlyStopping(monitor="val_loss", restore_best_weights=True)])`.
  It runs on a seeded random subset of the grid's units, `--study-units-per-arch` per architecture, and
  its mean time per fit is extrapolated to the full grid.

Both sides use the same folds (`train.plan`), validation splits (`train.split_validation`), training views
(`augment.training_views`) and per-unit seeds (`cvresult.Unit.seed`), so each subset unit's test-fold F1 is
paired between them. The yardstick of seed noise: the same subset units refitted by cytoops' Fitter with
another base seed (same folds and validation splits, other weights and shuffling).

Writes one JSON (see benchmarks/README.md for every field). Wrangle and augment, shared by both sides, are
timed apart and counted on neither side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QUICK_OVERRIDES = [  # a tiny run (the test): every code path, no meaningful numbers
    "wrangle.min_wells=2",
    "augment.strategies=[hflip]",
    "train.architectures=[wide_cnn,vit_linear]",  # one CNN, one ViT: both code paths
    "train.epochs=2",
    "train.patience=1",
    "train.workers=1",
]
QUICK_VIT_LAYERS = 1  # transformer blocks of the backbone in --quick (both sides); 12 (ViT-B/32) otherwise
YARDSTICK_SEED_OFFSET = 1  # seed-noise run: unit seeds from base train.seed + 1 (folds, splits unchanged)
TARGETS = {"grid_seconds": 600.0, "speedup": 50.0, "peak_memory_mb": 4096.0}
AGREEMENT_RULE = (
    "agree when the study-vs-cytoops F1 differences show no systematic shift "
    "(Wilcoxon signed-rank p >= 0.05) "
    "and their mean absolute value is at most twice the seed-noise yardstick's"
)


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
        kept=tuple(w.cytokines.cytokine[w.cytokines.kept.astype(bool)]),
        bank=augment.load(workdir / "augment" / "views.npz"),
        channels=w.channels,
        vit=None,
        strategies=p.augment.strategies,
    )


def unit_key(u: dict) -> tuple:
    return (u["architecture"], u["augmentation"], u["cytokine"], int(u["repeat"]), int(u["fold"]))


def unit_data(task, fold: int, strategy: str, source: np.ndarray, views: tuple[str, ...], tp):
    """One unit's arrays exactly as `cytoops.train.run_task` makes them: fit (augmented), validation, test."""
    from cytoops import augment, train

    y, wells, groups = task.labels, task.wells, task.groups
    test = task.folds == fold
    trn = ~test
    val = train.split_validation(y[trn], groups[trn], tp.val_fraction, tp.seed + 1000 * task.repeat + fold)
    fit_wells, val_wells = wells[trn][~val], wells[trn][val]
    label_of = dict(zip(fit_wells, y[trn][~val], strict=True))
    x_fit, src = augment.training_views(source, views, strategy, fit_wells)
    y_fit = np.array([label_of[s] for s in src])
    x_val = augment.identity_view(source, views, val_wells)
    x_test = augment.identity_view(source, views, wells[test])
    return x_fit, y_fit, x_val, y[trn][val], x_test, y[test]


def f1_of(label: np.ndarray, prob: np.ndarray) -> float:
    from cytoops.evaluate import fold_scores

    return float(fold_scores(np.asarray(label), np.asarray(prob))["f1"])


def rusage_mb() -> dict[str, float]:
    """Peak resident memory (ru_maxrss, KiB on Linux) of this process and of its largest finished child."""
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"self": round(self_kb / 1024, 1), "children": round(child_kb / 1024, 1)}


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
    out = {"features_seconds": seconds, "peak_rss_mb": rusage_mb()}
    (workdir / "features.json").write_text(json.dumps(out))


def phase_cytoops(workdir: Path) -> None:
    """cytoops' `train` stage (`cross_validate` on the whole grid), then the seed-noise yardstick."""
    from cytoops import cvresult, dataset, schedule, tables, train
    from cytoops.fitter import Fitter

    config, p = load_config(workdir)
    views_path = workdir / "augment" / "views.npz"
    vit_path = workdir / "features" / "vit.npz"
    vit_path = vit_path if vit_path.is_file() else None
    t0 = time.perf_counter()
    inputs = dataset.load_inputs(workdir / "wrangle", views_path, vit_path, p)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = train.cross_validate(inputs, p.train, progress=False)
    train_s = time.perf_counter() - t0
    workers = min(schedule.n_workers(p.train), max(1, len(train.plan(inputs, p.train)[0])))
    log(
        f"cytoops: {len(result.fits)} fits ({len(result.failures)} failed) in {train_s:.1f} s, "
        f"{workers} workers"
    )
    memory = rusage_mb()  # before the yardstick below, which is not part of cytoops' run

    # F1 of the study subset's units in this run, and in a run with other unit seeds (seed-noise yardstick)
    pred = result.predictions
    f1_main = {}
    for key, g in pred.groupby(tables.UNIT, sort=False):
        f1_main[tuple(key)] = f1_of(g.label.to_numpy(), g.prob.to_numpy())
    tasks = {(t.architecture, t.cytokine, t.repeat): t for t in train.plan(inputs, p.train)[0]}
    fitter, sources = Fitter(p.train), {}
    other_base = p.train.seed + YARDSTICK_SEED_OFFSET
    subset = []
    for u in config["subset"]:
        key = unit_key(u)
        arch, aug, cytokine, repeat, fold = key
        row = {**u, "f1": f1_main.get(key), "f1_other_seed": None}
        kind = models_kind(arch)
        if kind not in sources:
            sources[kind] = (
                dataset.cnn_view_bank(inputs, p.train.cnn_channels)
                if kind == "cnn"
                else dataset.model_input(inputs, arch)
            )
        try:
            x, y, x_val, y_val, x_test, y_test = unit_data(
                tasks[(arch, cytokine, repeat)], fold, aug, sources[kind], inputs.bank.views, p.train
            )
            seed = cvresult.Unit(*key).seed(other_base)
            model, _, _ = fitter.fit(arch, x, y, x_val, y_val, seed)
            row["f1_other_seed"] = f1_of(y_test, fitter.probability(model, x_test))
        except Exception as err:  # noqa: BLE001 - a unit the trainer cannot fit either (e.g. tiny folds)
            row["error_other_seed"] = f"{type(err).__name__}: {err}"
        subset.append(row)

    fits = result.fits
    out = {
        "load_seconds": load_s,
        "train_seconds": train_s,
        "workers": workers,
        "fits": fits[
            ["architecture", "augmentation", "n_train_images", "n_val", "epochs_run", "seconds"]
        ].to_dict("list"),
        "n_failed": int((result.failures.architecture != "*").sum()),  # units; fold problems apart
        "cytokines_not_cross_validated": sorted(
            result.failures.cytokine[result.failures.architecture == "*"]
        ),
        "failures": result.failures.astype(str).to_dict("records")[:20],
        "peak_rss_mb": memory,
        "subset": subset,
        "other_seed_base": other_base,
        **versions(),
    }
    (workdir / "cytoops.json").write_text(json.dumps(out, default=float))


def models_kind(architecture: str) -> str:
    from cytoops import models

    return models.get(architecture).kind


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
        arch, aug, cytokine, repeat, fold = unit_key(u)
        kind = models_kind(arch)
        if kind not in sources:
            if kind == "cnn":
                sources[kind] = dataset.cnn_view_bank(inputs, p.train.cnn_channels)
            else:  # the images as the ViT reads them (channels last, [-1, 1]), as the features stage does
                bank = inputs.bank.images
                sources[kind] = np.stack([features.to_vit_input(bank[v]) for v in range(bank.shape[0])])
        row = dict(u)
        try:
            x, y, x_val, y_val, x_test, y_test = unit_data(
                tasks[(arch, cytokine, repeat)], fold, aug, sources[kind], inputs.bank.views, p.train
            )
            seed = cvresult.Unit(arch, aug, cytokine, repeat, fold).seed(p.train.seed)
            t0 = time.perf_counter()
            prob, epochs = study_fit(arch, seed, x, y, x_val, y_val, x_test, p, config["vit_layers"])
            seconds = time.perf_counter() - t0
            row.update(
                seconds=seconds,
                epochs_run=epochs,
                n_train_images=len(x),
                n_val=len(x_val),
                f1=f1_of(y_test, prob),
            )
            log(
                f"study {i}/{len(config['subset'])}: {arch} {aug} {cytokine} fold {fold}: {seconds:.1f} s, "
                f"{len(x)} images x {epochs} epochs"
            )
        except Exception as err:  # noqa: BLE001 - recorded, as cytoops records a failing unit
            row["error"] = f"{type(err).__name__}: {err}"
            log(f"study {i}: {arch} {aug} {cytokine} fold {fold} failed: {row['error']}")
        rows.append(row)
        gc.collect()
    out = {"units": rows, "peak_rss_mb": rusage_mb(), **versions()}
    (workdir / "study.json").write_text(json.dumps(out, default=float))


# ---- how close the CNN trainer gets to the machine's fp32 limit -------------------------------------------

TRAINER_GOAL = 0.6  # issue 21: the CNN trainer at 60% or more of the same thread's fp32 matmul rate


def forward_flops(model) -> int:
    """Multiply-adds x 2 of one sample's forward pass (Conv2D and Dense layers; the rest is negligible)."""
    flops = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            kh, kw, c_in, c_out = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            flops += 2 * kh * kw * c_in * c_out * h * w
        elif kind == "Dense":
            flops += 2 * int(np.prod(layer.kernel.shape))
    return int(flops)


def unit_flops(forward: int, n_fit: int, n_val: int, n_test: int, epochs: int) -> float:
    """Useful FLOPs of one fit: 3x forward per training image-epoch (forward, input and weight gradients),
    1x per validation image-epoch and per test image. The padding of a partial batch is not counted."""
    return float(forward) * (3 * n_fit * epochs + n_val * epochs + n_test)


def matmul_gflops(n: int = 1024, seconds: float = 2.0) -> float:
    """The machine's fp32 matrix-multiply throughput in this process (TensorFlow, its thread setting)."""
    import tensorflow as tf

    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    b = tf.random.stateless_normal([n, n], seed=[3, 4])
    mm = tf.function(lambda a, b: tf.matmul(a, b))
    mm(a, b).numpy()  # trace, warm up
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        mm(a, b).numpy()
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


class _Recorder:
    """Stands in for fitter.Fitter in run_task: keeps each unit's arrays, trains nothing."""

    def __init__(self):
        self.units: list[dict] = []

    def fit(self, architecture, x, y, x_val, y_val, seed):
        self.units.append(dict(x=x, y=y, x_val=x_val, y_val=y_val, seed=seed))
        return len(self.units) - 1, {"loss": []}, 0

    def probability(self, model, x):
        self.units[model]["x_test"] = x
        return np.zeros(len(x))


def phase_trainers(workdir: Path) -> None:
    """One task per architecture (its folds x augmentations) trained by fitter.Fitter one unit after another,
    after a 1-epoch warm-up (tracing), on one TensorFlow thread as a grid worker has; the fp32 matmul limit
    is measured the same way."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from cytoops import dataset, train
    from cytoops.fitter import Fitter

    config, p = load_config(workdir)
    vit_path = workdir / "features" / "vit.npz"
    inputs = dataset.load_inputs(
        workdir / "wrangle", workdir / "augment" / "views.npz", vit_path if vit_path.is_file() else None, p
    )
    tasks = train.plan(inputs, p.train)[0]
    peak = matmul_gflops()
    log(f"trainers: fp32 matmul {peak:.1f} GFLOP/s on one thread")
    rows, sources = {}, {}
    for arch in p.train.architectures:
        picked = [t for t in tasks if t.architecture == arch][: config["trainer_tasks"]]
        seconds = flops = 0.0
        n_units = 0
        for task in picked:
            recorder = _Recorder()
            train.run_task(task, inputs, p.train, recorder, sources)
            units = recorder.units
            if not units:
                continue
            fitter = Fitter(p.train)
            u = units[0]
            model, _, _ = fitter.fit(arch, u["x"], u["y"], u["x_val"], u["y_val"], u["seed"], epochs=1)
            forward = forward_flops(model)
            t0 = time.perf_counter()
            for u in units:
                model, history, _ = fitter.fit(arch, u["x"], u["y"], u["x_val"], u["y_val"], u["seed"])
                fitter.probability(model, u["x_test"])
                epochs = len(history["loss"])
                flops += unit_flops(forward, len(u["x"]), len(u["x_val"]), len(u["x_test"]), epochs)
            seconds += time.perf_counter() - t0
            n_units += len(units)
        rows[arch] = {
            "tasks": len(picked),
            "units": n_units,
            "seconds": seconds,
            "gflops": flops / seconds / 1e9 if seconds else None,
            "fraction_of_matmul": flops / seconds / 1e9 / peak if seconds else None,
        }
        log(f"trainers: {arch}, {n_units} units in {seconds:.1f} s")
    out = {"matmul_gflops_fp32": peak, "threads": 1, "by_architecture": rows}
    (workdir / "trainers.json").write_text(json.dumps(out, default=float))


def summarize_trainers(tr: dict) -> dict:
    """The trainer's achieved FLOP/s per architecture and, for the CNNs, as a share of the matmul limit."""
    rows = tr["by_architecture"]
    fraction = {a: rows[a]["fraction_of_matmul"] for a in rows if models_kind(a) == "cnn"}
    return {
        "what": "one task per architecture (its folds x augmentations), fitter.Fitter one unit after another "
        "on one TensorFlow thread; useful FLOPs (3x forward per training image-epoch, 1x per validation "
        "image-epoch and test image) per second, against tf.matmul fp32 (1024^2) on the same thread in the "
        "same process",
        "matmul_gflops_fp32_one_thread": tr["matmul_gflops_fp32"],
        "by_architecture": rows,
        "cnn_fraction_of_matmul_peak": fraction,
        "goal_cnn_fraction": TRAINER_GOAL,
        "cnn_goal_met": all(v is not None and v >= TRAINER_GOAL for v in fraction.values())
        if fraction
        else None,
    }


# ---- the orchestrator --------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "processor\t: ")) and ":" in line:
                value = line.split(":", 1)[1].strip()
                if value and not value.isdigit():
                    return value
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


class LoadSampler:
    """The 1-minute load average every few seconds while the benchmark runs (the machine may be shared)."""

    def __init__(self, every: float = 5.0):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = self.samples or [os.getloadavg()[0]]
        return {
            "mean_1min": round(float(np.mean(s)), 2),
            "max_1min": round(float(np.max(s)), 2),
            "samples": len(s),
        }


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants now (MiB), from /proc."""
    parent, rss = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parent[int(entry.name)] = int(fields.get("PPid", "0").strip() or 0)
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0])
    tree, frontier = {root}, [root]
    while frontier:
        frontier = [pid for pid, pp in parent.items() if pp in frontier and pid not in tree]
        tree.update(frontier)
    return sum(rss.get(pid, 0) for pid in tree) / 1024


def run_phase(name: str, workdir: Path) -> tuple[float, float | None]:
    """Run one side in its own process: (wall seconds, peak summed RSS of its process tree, sampled)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--workdir", str(workdir)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = None
    while proc.poll() is None:
        if Path("/proc").is_dir():
            try:
                peak = max(peak or 0.0, tree_rss_mb(proc.pid))
            except (OSError, ValueError):
                pass
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return time.perf_counter() - t0, peak


def pick_subset(tasks, folds: int, strategies, per_arch: int, seed: int) -> list[dict]:
    """A seeded random subset of the grid's units, `per_arch` of each architecture.

    Spread over the augmentations (they set how many images a fit trains on): each architecture takes its
    units from the strategies in a seeded random order, cycling, each time a random cytokine, repeat and fold.
    """
    rng = np.random.default_rng(seed)
    subset = []
    for arch in dict.fromkeys(t.architecture for t in tasks):
        pools = {
            s: [
                {
                    "architecture": arch,
                    "augmentation": s,
                    "cytokine": t.cytokine,
                    "repeat": t.repeat,
                    "fold": f,
                }
                for t in tasks
                if t.architecture == arch
                for f in range(folds)
            ]
            for s in strategies
        }
        for pool in pools.values():
            rng.shuffle(pool)
        order = [strategies[i] for i in rng.permutation(len(strategies))]
        picks, i = [], 0
        while len(picks) < per_arch and any(pools.values()):
            pool = pools[order[i % len(order)]]
            if pool:
                picks.append(pool.pop())
            i += 1
        subset += picks
    return subset


def paired(a: list, b: list) -> dict:
    """Mean (absolute) difference of paired F1s and the Wilcoxon signed-rank p (None when no pairs)."""
    from scipy import stats

    x = np.array([np.nan if v is None else v for v in a], dtype=float)
    y = np.array([np.nan if v is None else v for v in b], dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    out = {"pairs": int(len(x)), "mean_abs_diff": None, "mean_diff": None, "wilcoxon_p": None}
    if not len(x):
        return out
    d = x - y
    out["mean_abs_diff"] = float(np.mean(np.abs(d)))
    out["mean_diff"] = float(np.mean(d))
    if np.all(d == 0):
        out["wilcoxon_p"] = 1.0
    else:
        try:
            out["wilcoxon_p"] = float(stats.wilcoxon(x, y).pvalue)
        except ValueError:
            pass
    return out


def mean_of(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def clean(value):
    """JSON-safe: NaN and inf -> null, numpy scalars -> Python, floats rounded to 4 places."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if not math.isfinite(v) else round(v, 4)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def peak_memory(cy: dict) -> dict:
    """cytoops' peak memory: the features stage and the train stage run one after the other (as dvc does)."""
    tr = cy["peak_rss_mb"]
    train_stage = {
        **tr,
        # every worker at the largest one's peak, at the same time as the main process at its own
        "total_upper_bound": tr["self"] + (cy["workers"] if cy["workers"] > 1 else 0) * tr["children"],
        "process_tree_sampled": cy["train_tree_mb"],
    }
    features_stage = (
        {**cy["features_peak_rss_mb"], "process_tree_sampled": cy["features_tree_mb"]}
        if cy["features_peak_rss_mb"]
        else None
    )
    peak = max(train_stage["total_upper_bound"], features_stage["self"] if features_stage else 0.0)
    sampled = [v for v in (cy["train_tree_mb"], cy["features_tree_mb"]) if v is not None]
    return {
        "peak": peak,
        "peak_sampled": max(sampled) if sampled else None,
        "features_stage": features_stage,
        "train_stage": train_stage,
    }


def summarize(config: dict, p, prep: dict, cy: dict, st: dict | None, machine: dict, plate: dict, grid: dict):
    import pandas as pd

    fits = pd.DataFrame(cy["fits"])
    units_per_arch = grid["units_per_architecture"]
    n_fits = len(fits)
    cy_grid_s = cy["features_seconds"] + cy["load_seconds"] + cy["train_seconds"]
    image_epochs = float((fits.n_train_images * fits.epochs_run).sum()) if n_fits else 0.0
    cy_by_arch = fits.groupby("architecture").seconds.mean().to_dict() if n_fits else {}
    n_vit_fits = sum(n for a, n in units_per_arch.items() if models_kind(a) == "vit")
    cytoops = {
        "grid_seconds": cy_grid_s,
        "features_seconds": cy["features_seconds"],
        "load_seconds": cy["load_seconds"],
        "train_seconds": cy["train_seconds"],
        "workers": cy["workers"],
        "fits": n_fits,
        "failed_fits": cy["n_failed"],
        "wall_seconds_per_fit": cy_grid_s / n_fits if n_fits else None,
        "seconds_per_fit_by_architecture": {
            a: {
                "mean": cy_by_arch.get(a),
                # ViT heads: plus their share of the features stage (the backbone pass they no longer make)
                "mean_with_features_share": (cy_by_arch.get(a) or 0.0)
                + (cy["features_seconds"] / n_vit_fits if models_kind(a) == "vit" and n_vit_fits else 0.0),
            }
            for a in grid["architectures"]
        },
        "image_epochs": image_epochs,
        "images_per_second": image_epochs / cy_grid_s if cy_grid_s else None,
        "peak_rss_mb": peak_memory(cy),
        "failures": cy["failures"],
    }
    out = {"cytoops": cytoops, "study": None, "speedup": None, "f1_agreement": None}
    if st is None:
        return out

    units = st["units"]
    done = [u for u in units if "seconds" in u]
    study_by_arch: dict[str, dict] = {}
    grid_est, grid_est_ie = 0.0, 0.0
    for a in grid["architectures"]:
        mine = [u for u in done if u["architecture"] == a]
        if not mine:
            study_by_arch[a] = {"units": 0, "mean": None}
            continue
        secs = float(np.mean([u["seconds"] for u in mine]))
        per_ie = sum(u["seconds"] for u in mine) / max(
            1, sum(u["n_train_images"] * u["epochs_run"] for u in mine)
        )
        study_by_arch[a] = {"units": len(mine), "mean": secs, "seconds_per_image_epoch": per_ie}
        grid_est += secs * units_per_arch[a]
        arch_fits = fits[fits.architecture == a]
        grid_est_ie += per_ie * float((arch_fits.n_train_images * arch_fits.epochs_run).sum())
    complete = all(v["units"] for v in study_by_arch.values())
    study_secs = sum(u["seconds"] for u in done)
    study_ie = sum(u["n_train_images"] * u["epochs_run"] for u in done)
    study = {
        "extrapolated": True,
        "subset_units_per_architecture": config["study_units_per_arch"],
        "subset_seed": config["subset_seed"],
        "units_run": len(done),
        "units_failed": len(units) - len(done),
        "seconds_per_fit_by_architecture": study_by_arch,
        "grid_seconds_extrapolated": grid_est if complete else None,
        "grid_seconds_extrapolated_by_image_epochs": grid_est_ie if complete else None,
        "subset_seconds": study_secs,
        "images_per_second": study_ie / study_secs if study_secs else None,
        "peak_rss_mb": st["peak_rss_mb"],
    }
    cy_subset = {unit_key(u): u for u in cy["subset"]}
    pairs = []
    for u in units:
        c = cy_subset.get(unit_key(u), {})
        pairs.append(
            {
                **{k: u[k] for k in ("architecture", "augmentation", "cytokine", "repeat", "fold")},
                "study_seconds": u.get("seconds"),
                "study_epochs_run": u.get("epochs_run"),
                "n_train_images": u.get("n_train_images"),
                "f1_study": u.get("f1"),
                "f1_cytoops": c.get("f1"),
                "f1_cytoops_other_seed": c.get("f1_other_seed"),
                **({"error": u["error"]} if "error" in u else {}),
            }
        )
    study["units"] = pairs
    vs = paired([q["f1_study"] for q in pairs], [q["f1_cytoops"] for q in pairs])
    noise = paired([q["f1_cytoops_other_seed"] for q in pairs], [q["f1_cytoops"] for q in pairs])
    agree = None
    if vs["pairs"] and noise["mean_abs_diff"] is not None and vs["wilcoxon_p"] is not None:
        agree = bool(vs["wilcoxon_p"] >= 0.05 and vs["mean_abs_diff"] <= 2 * noise["mean_abs_diff"] + 1e-9)
    by_arch = {
        a: paired(
            [q["f1_study"] for q in pairs if q["architecture"] == a],
            [q["f1_cytoops"] for q in pairs if q["architecture"] == a],
        )["mean_abs_diff"]
        for a in grid["architectures"]
    }
    f1 = {
        "unit": "test-fold F1 of each subset unit (architecture, augmentation, cytokine, repeat, fold)",
        "study_vs_cytoops": vs,
        "study_vs_cytoops_mean_abs_diff_by_architecture": by_arch,
        "seed_noise": {
            **noise,
            "what": f"cytoops vs cytoops with unit seeds from base {cy['other_seed_base']}",
        },
        "mean_f1": {side: mean_of([q[f"f1_{side}"] for q in pairs]) for side in ("study", "cytoops")},
        "agree": agree,
        "rule": AGREEMENT_RULE,
    }
    per_fit = {
        a: (
            study_by_arch[a]["mean"]
            / cytoops["seconds_per_fit_by_architecture"][a]["mean_with_features_share"]
        )
        if study_by_arch[a]["mean"]
        and cytoops["seconds_per_fit_by_architecture"][a]["mean_with_features_share"]
        else None
        for a in grid["architectures"]
    }
    speedup = {
        "grid": grid_est / cy_grid_s if complete and cy_grid_s else None,
        "grid_by_image_epochs": grid_est_ie / cy_grid_s if complete and cy_grid_s else None,
        "per_fit_by_architecture": per_fit,
        "what": "study-loop grid seconds (extrapolated) / cytoops grid seconds "
        "(features + load + train, measured); "
        "per fit: study mean seconds / cytoops mean worker seconds (ViT: + features share)",
    }
    out.update(study=study, speedup=speedup, f1_agreement=f1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "data", help="folder of plates (default: data)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="params.yaml to read")
    parser.add_argument(
        "--study-units-per-arch", type=int, default=2, help="study-loop units per architecture"
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
        "--trainer-tasks",
        type=int,
        default=1,
        help="tasks per architecture whose fits the trainers phase times",
    )
    parser.add_argument(
        "--phase", choices=["features", "cytoops", "study", "trainers"], help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.phase:
        phases = {
            "features": phase_features,
            "cytoops": phase_cytoops,
            "study": phase_study,
            "trainers": phase_trainers,
        }
        phases[args.phase](args.workdir)
        return 0

    from cytoops import augment, train, wrangle
    from cytoops import params as params_mod

    started = dt.datetime.now(dt.timezone.utc)
    load_start = os.getloadavg()
    overrides = (QUICK_OVERRIDES if args.quick else []) + list(args.overrides)
    per_arch = 1 if args.quick and args.study_units_per_arch == 2 else args.study_units_per_arch
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
        with LoadSampler() as load:
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
            ft_wall, ft_tree = run_phase("features", workdir) if needs_vit else (0.0, None)
            cy_wall, cy_tree = run_phase("cytoops", workdir)
            tr_wall, _ = run_phase("trainers", workdir)
            st_wall, st_tree = run_phase("study", workdir) if subset else (0.0, None)
        cy = json.loads((workdir / "cytoops.json").read_text())
        ft = json.loads((workdir / "features.json").read_text()) if needs_vit else None
        cy["features_seconds"] = ft["features_seconds"] if ft else 0.0
        cy["features_peak_rss_mb"] = ft["peak_rss_mb"] if ft else None
        cy["features_tree_mb"], cy["train_tree_mb"] = ft_tree, cy_tree
        st = json.loads((workdir / "study.json").read_text()) if subset else None
        tr = json.loads((workdir / "trainers.json").read_text())
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    machine = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gb": memory_gb(),
        "tensorflow": cy["tensorflow"],
        "keras": cy["keras"],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in load_start],
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "load_during_run": load.summary(),
    }
    plate = {
        "data": str(args.data),
        "wells": len(w.wells),
        "cytokines": len(w.cytokines),
        "cytokines_kept": len(inputs.kept),
        "image_size": p.wrangle.image_size,
        "channels": list(w.channels),
        "views": list(inputs.bank.views),
    }
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
    prep = {"wrangle_seconds": wrangle_s, "augment_seconds": augment_s}
    body = summarize(config, p, prep, cy, st, machine, plate, grid)
    cytoops, study = body["cytoops"], body["study"]
    if study is not None:
        study["peak_rss_mb"]["process_tree_sampled"] = st_tree
    peak = cytoops["peak_rss_mb"]["peak"]
    speeds = [v for v in ((body["speedup"] or {}).get(k) for k in ("grid", "grid_by_image_epochs")) if v]
    speed = min(speeds) if speeds else None  # the more conservative of the two extrapolations
    targets = {
        "grid_under_10_minutes": cytoops["grid_seconds"] < TARGETS["grid_seconds"],
        "speedup_at_least_50x": None if speed is None else speed >= TARGETS["speedup"],
        "cytoops_peak_memory_under_4_gb": peak < TARGETS["peak_memory_mb"],
        "f1_agree": (body["f1_agreement"] or {}).get("agree"),
        "bench_wall_seconds": None,  # filled below
    }
    result = {
        "benchmark": "cytoops trainer (features once + cross_validate) "
        "vs the study's per-unit build-and-fit loop",
        "created": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "overrides": overrides,
        "machine": machine,
        "plate": plate,
        "grid": grid,
        "prep_seconds": prep,
        "phase_wall_seconds": {
            "features": ft_wall,
            "cytoops_train": cy_wall,
            "trainers": tr_wall,
            "study": st_wall,
        },
        **body,
        "trainers": summarize_trainers(tr),
        "targets": targets,
    }
    total = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    result["bench_wall_seconds"] = total
    targets["bench_wall_seconds"] = total
    targets["bench_under_15_minutes"] = total < 900
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
