"""How close cytoops' trainer gets to the machine's fp32 limit: useful FLOP/s of `fitter.Fitter` fits against
`tf.matmul` on the same thread, per architecture.

`bench.py` runs `measure` in a process of its own (its `trainers` phase); `fitter_speed.py` uses the same
FLOP accounting. Useful FLOPs of a fit: 2 x multiply-adds of one image's forward pass (Conv2D and Dense
layers) x (3 per training image-epoch: forward, input and weight gradients; 1 per validation image-epoch;
1 per test image); the padding of a partial batch is not counted.
"""

from __future__ import annotations

import time

import numpy as np

GOAL = 0.6  # issue 21: each CNN trainer at 60% or more of the same thread's fp32 matmul rate


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


def unit_flops(forward: int, arrays, epochs: int) -> float:
    """Useful FLOPs of one fit of `arrays` (train.UnitArrays) that ran `epochs` epochs."""
    return float(forward) * ((3 * len(arrays.x_fit) + len(arrays.x_val)) * epochs + len(arrays.x_test))


def task_units(task, source: np.ndarray, views, strategies, params) -> list[tuple]:
    """(unit, train.UnitArrays) of every fold x strategy of a task, as run_task makes them; a fold without a
    validation split is left out (run_task records it as a failure)."""
    from cytoops import cvresult, train

    out = []
    for fold in range(params.folds):
        try:
            split = train.fold_split(task, fold, params)
        except ValueError:
            continue
        for strategy in strategies:
            unit = cvresult.Unit(task.architecture, strategy, task.cytokine, task.repeat, fold)
            out.append((unit, train.unit_arrays(task, split, source, views, strategy)))
    return out


def measure(
    inputs, params, tasks_per_architecture: int, matmul: float, log=print, outputs: dict | None = None
) -> dict:
    """One TensorFlow thread (call `backends.one_thread` first, as a grid worker does): the first
    `tasks_per_architecture` tasks of each architecture, their units fitted one after another by one Fitter
    after a 1-epoch warm-up fit (tracing is not timed); seconds, useful GFLOP/s and its share of `matmul`.
    `outputs`, when given, gets each unit's epochs run and test probabilities, by the unit's name."""
    from cytoops import dataset, train
    from cytoops.fitter import Fitter
    from cytoops.params import architecture_kind

    tasks = train.plan(inputs, params)[0]
    rows, sources = {}, {}
    for arch in params.architectures:
        kind = architecture_kind(arch)
        if kind not in sources:
            sources[kind] = (
                dataset.cnn_view_bank(inputs, params.cnn_channels)
                if kind == "cnn"
                else dataset.model_input(inputs, arch)
            )
        picked = [t for t in tasks if t.architecture == arch][:tasks_per_architecture]
        seconds = flops = 0.0
        n_units = 0
        fitter = Fitter(params)
        for task in picked:
            units = task_units(task, sources[kind], inputs.bank.views, inputs.strategies, params)
            if not units:
                continue
            first = units[0][1]
            model, _, _ = fitter.fit(arch, first.x_fit, first.y_fit, first.x_val, first.y_val, 0, epochs=1)
            forward = forward_flops(model)
            t0 = time.perf_counter()
            for unit, a in units:
                model, history, _ = fitter.fit(
                    arch, a.x_fit, a.y_fit, a.x_val, a.y_val, unit.seed(params.seed)
                )
                prob = fitter.probability(model, a.x_test)
                if outputs is not None:
                    outputs[str(unit)] = {"epochs": len(history["loss"]), "prob": prob.tolist()}
                flops += unit_flops(forward, a, len(history["loss"]))
            seconds += time.perf_counter() - t0
            n_units += len(units)
        gflops = flops / seconds / 1e9 if seconds else None
        rows[arch] = {
            "tasks": len(picked),
            "units": n_units,
            "seconds": seconds,
            "gflops": gflops,
            "fraction_of_matmul": gflops / matmul if gflops else None,
        }
        log(f"trainers: {arch}, {n_units} units in {seconds:.1f} s, {gflops or 0:.1f} GFLOP/s")
    return {"matmul_gflops_fp32": matmul, "threads": 1, "by_architecture": rows}


def summarize(tr: dict) -> dict:
    """The trainer's useful FLOP/s per architecture; for the CNNs, its share of the matmul rate, the goal."""
    from cytoops.params import architecture_kind

    rows = tr["by_architecture"]
    fraction = {a: rows[a]["fraction_of_matmul"] for a in rows if architecture_kind(a) == "cnn"}
    return {
        "what": "one task per architecture (its folds x augmentations), fitter.Fitter one unit after another "
        "on one TensorFlow thread; useful FLOPs (3x forward per training image-epoch, 1x per validation "
        "image-epoch and test image) per second, against tf.matmul fp32 (1024^2) on the same thread in the "
        "same process",
        "matmul_gflops_fp32_one_thread": tr["matmul_gflops_fp32"],
        "by_architecture": rows,
        "cnn_fraction_of_matmul_peak": fraction,
        "goal_cnn_fraction": GOAL,
        "cnn_goal_met": all(v is not None and v >= GOAL for v in fraction.values()) if fraction else None,
    }
