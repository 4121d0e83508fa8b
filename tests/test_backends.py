"""train.backend: the grid under Ray gives the local backend's numbers, on a local runtime and on a two-node
cluster (`ray.cluster_utils.Cluster`, both nodes on this machine), and a worker killed mid-task is retried.

Small on purpose: one CPU per node, wide_cnn for one epoch on the synthetic plate of test_train.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray  # the `ray` extra: `make test` installs it
from test_train import fast_params, synthetic_inputs

from cytoops import backends, cvresult, machine, tables, train
from cytoops.params import BACKENDS, TrainParams

RAY_INIT = dict(include_dashboard=False, log_to_driver=False)


def same_numbers(a: cvresult.Result, b: cvresult.Result) -> None:
    assert a.failures.empty and b.failures.empty and len(a.predictions) > 0
    pd.testing.assert_frame_equal(a.predictions, b.predictions)  # exact: one TensorFlow thread per worker
    pd.testing.assert_frame_equal(a.curves, b.curves)
    pd.testing.assert_frame_equal(a.fits.drop(columns="seconds"), b.fits.drop(columns="seconds"))


@pytest.fixture(scope="module")
def grid():
    """A tiny grid (2 cytokines x 2 repeats of wide_cnn, 1 epoch: 4 tasks) and its local-backend result."""
    inputs = synthetic_inputs(strategies=("none",))
    params = fast_params(epochs=1, repeats=2, workers=2)  # a process pool: one TensorFlow thread per worker
    return inputs, params, train.cross_validate(inputs, params, progress=False)


@pytest.fixture
def no_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def two_nodes(no_ray_address):
    """A Ray cluster of two nodes of one CPU each on this machine, joined by this process."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, **RAY_INIT)
        cluster.wait_for_nodes()
        # test-module functions travel by value: Ray's workers do not have tests/ on their path
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield cluster
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()
        cluster.shutdown()


def test_the_backends_are_the_params_backends():
    assert tuple(backends.BACKENDS) == BACKENDS


def test_an_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="train.backend is 'spark': choose one of local, ray"):
        TrainParams(backend="spark")


def test_ray_on_a_local_runtime_gives_the_local_numbers_and_stops_it(grid, no_ray_address):
    inputs, params, local = grid
    on_ray = train.cross_validate(inputs, dataclasses.replace(params, backend="ray"), progress=False)
    same_numbers(local, on_ray)
    assert not ray.is_initialized(), "a runtime the stage started must stop with it"


def run_and_tell_node(task, inputs, params, fitter, sources):
    part = train.run_task(task, inputs, params, fitter, sources)
    return {**part, "node": [ray.get_runtime_context().get_node_id()]}


def test_a_two_node_cluster_runs_the_grid_on_both_nodes_with_the_local_numbers(grid, two_nodes):
    inputs, params, local = grid
    ray_params = dataclasses.replace(params, backend="ray")
    tasks = train.plan(inputs, ray_params)[0]
    nodes = {part["node"][0] for _, part in backends.run_ray(tasks, inputs, ray_params, run_and_tell_node, 2)}
    assert len(nodes) == 2, "both nodes should have trained tasks"
    same_numbers(local, train.cross_validate(inputs, ray_params, progress=False))
    assert ray.is_initialized(), "a runtime the caller started is the caller's to stop"


def die_once_mid_task(task, inputs, params, fitter, sources, *, marker: str, victim: tuple):
    """run_task, except that the worker running `victim` is killed once after training, before it returns."""
    part = train.run_task(task, inputs, params, fitter, sources)
    if (task.cytokine, task.repeat) == victim and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return part


def test_a_worker_killed_mid_task_is_retried_and_the_stage_completes(grid, two_nodes, tmp_path):
    inputs, params, local = grid
    tasks = train.plan(inputs, params)[0]
    victim = (tasks[0].cytokine, tasks[0].repeat)
    marker = tmp_path / "killed"
    run = functools.partial(die_once_mid_task, marker=str(marker), victim=victim)

    retried = dataclasses.replace(params, backend="ray", ray_retries=1)
    parts = {(t.cytokine, t.repeat): part for t, part in backends.run_ray(tasks, inputs, retried, run, 2)}
    assert marker.is_file(), "the victim's worker was not killed: the test tests nothing"
    assert len(parts) == len(tasks)
    p = local.predictions
    expected = p[(p.cytokine == victim[0]) & (p.repeat == victim[1])].reset_index(drop=True)
    got = pd.concat(parts[victim]["predictions"]).sort_values(tables.UNIT, kind="stable")
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)

    marker.unlink()  # without retries the same kill loses the task: the retry above is what saved it
    no_retry = dataclasses.replace(params, backend="ray", ray_retries=0)
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        list(backends.run_ray(tasks, inputs, no_retry, run, 2))
    assert marker.is_file()


def onednn_in_this_worker(task, inputs, params, fitter, sources):
    from tensorflow.python.util import _pywrap_util_port

    return {"on": [_pywrap_util_port.IsMklEnabled()], "pid": [os.getpid()]}


def test_the_grid_workers_run_tensorflow_with_onednn_kernels(monkeypatch):
    monkeypatch.delenv(machine.ONEDNN, raising=False)  # as a shell that never heard of it starts them
    parts = [
        part for _, part in backends.run_local([0, 1, 2, 3], None, fast_params(), onednn_in_this_worker, 2)
    ]
    assert {p["on"][0] for p in parts} == {True}
    assert all(p["pid"][0] != os.getpid() for p in parts), "run in spawned workers, not in this process"
