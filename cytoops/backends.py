"""Where the train stage's tasks run: `local` (this machine: in-process or a process pool) or `ray`.

`run` hands the tasks still to do to `train.backend` and yields `(task, part)` as each task finishes, in
completion order; a task's part is what `train.run_task` returns.
A backend (`run_local`, `run_ray`) runs any list of items with a function `run(item, inputs, params, fitter,
sources)` and yields `(item, result)`. The caller (`train.cross_validate`) alone writes the task cache, the
files and MLflow: workers only compute and send their rows back, so there is one writer whatever the backend.

Every unit is seeded from its own name and every worker runs TensorFlow on one thread, so the same params
give the same numbers under either backend.

Ray: `train.ray_address` (or the RAY_ADDRESS environment variable) joins a running cluster; without
either a local Ray runtime starts with the stage (one CPU per worker) and stops after it. A Ray runtime
already started in this process (`ray.init` by the caller, e.g. a test cluster) is used as it is and left
running. The inputs go into the object store once; each task asks for one CPU and, where the cluster has
GPUs, `train.ray_gpus_per_task` of one. A worker that dies mid-task (killed, out of memory, a lost node) is
retried up to `train.ray_retries` times; a task that raises is not retried (`run_task` already records a
failing unit as a failure row).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed

from cytoops import machine

Part = dict[str, list]
RunTask = Callable  # (task, inputs, params, fitter, sources) -> Part


def one_thread() -> None:
    """TensorFlow (`machine.import_tensorflow`) on one intra-op and one inter-op thread: a grid worker's, as
    the cores are shared between workers."""
    machine.import_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


# ---- local ------------------------------------------------------------------------------------------------

_WORKER: dict = {}  # per worker process (pool or Ray): params, Fitter, sources, set once


def make_fitter(params):
    """The worker's fitter.Fitter (one per process: it keeps the compiled models across tasks)."""
    from cytoops.fitter import Fitter

    return Fitter(params)


def _pool_init(inputs, params, run: RunTask) -> None:
    one_thread()
    _WORKER.update(inputs=inputs, params=params, run=run, fitter=make_fitter(params), sources={})


def _pool_run(task) -> Part:
    w = _WORKER
    return w["run"](task, w["inputs"], w["params"], w["fitter"], w["sources"])


def run_local(tasks: list, inputs, params, run: RunTask, workers: int) -> Iterator[tuple[object, object]]:
    """One process (workers == 1, TensorFlow's default threads) or a pool of `workers` spawned processes."""
    if workers == 1:
        machine.import_tensorflow()  # the CLI leaves it to the process that fits (a pool's workers import it)
        fitter, sources = make_fitter(params), {}
        for task in tasks:
            yield task, run(task, inputs, params, fitter, sources)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_pool_init, initargs=(inputs, params, run)
    ) as pool:
        futures = {pool.submit(_pool_run, task): task for task in tasks}
        for future in as_completed(futures):
            yield futures[future], future.result()


# ---- ray --------------------------------------------------------------------------------------------------


def ray_address(params) -> str | None:
    """The cluster to join: train.ray_address, else $RAY_ADDRESS, else None (start a local runtime)."""
    return params.ray_address or os.environ.get("RAY_ADDRESS") or None


def _ray_task(task, inputs_box: list, params, run: RunTask) -> Part:
    """Runs in a Ray worker process. Ray reuses the process, so what it builds is kept across tasks: the
    Fitter (compiled models), the inputs (fetched from the object store once per stage, by reference: they
    come in a list so that Ray does not fetch them for every task) and the arrays models read."""
    import ray

    if not _WORKER:
        one_thread()
    if _WORKER.get("params") != params:
        _WORKER.update(params=params, fitter=make_fitter(params))
    ref = inputs_box[0]
    if _WORKER.get("inputs_ref") != ref.hex():
        _WORKER.update(inputs_ref=ref.hex(), inputs=ray.get(ref), sources={})
    return run(task, _WORKER["inputs"], params, _WORKER["fitter"], _WORKER["sources"])


def run_ray(tasks: list, inputs, params, run: RunTask, workers: int) -> Iterator[tuple[object, object]]:
    """Each task a Ray task; the inputs put in the object store once; results yielded as they finish."""
    try:
        import ray
    except ImportError as err:
        raise ValueError(
            "train.backend is ray but Ray is not installed: pip install 'cytoops[ray]' (or set "
            "train.backend=local)"
        ) from err

    started = False
    if not ray.is_initialized():
        address = ray_address(params)
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        gpus = params.ray_gpus_per_task if ray.cluster_resources().get("GPU", 0) > 0 else 0
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=params.ray_retries)(_ray_task)
        inputs_ref = ray.put(inputs)
        pending = {remote.remote(task, [inputs_ref], params, run): task for task in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        if started:
            ray.shutdown()


BACKENDS = {"local": run_local, "ray": run_ray}


def run(tasks: list, inputs, params, run_task: RunTask, workers: int) -> Iterator[tuple[object, Part]]:
    """The tasks under `params.backend`, yielding (task, part) as each task finishes."""
    yield from BACKENDS[params.backend](tasks, inputs, params, run_task, workers)
