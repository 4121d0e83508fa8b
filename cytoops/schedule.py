"""schedule: how the train stage spreads its tasks: how many workers, in what order, and what each costs.

The bar of `cytoops train` advances by each task's expected cost (`task_cost`), not by its count of fits, and
the tasks run interleaved across architectures (`interleave`), so that its estimate of the time left holds.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from cytoops import machine
from cytoops.params import TrainParams

if TYPE_CHECKING:
    from cytoops.train import Task


def n_workers(params: TrainParams) -> int:
    """train.workers, where 0 means one per CPU core, or 1 on a machine with an NVIDIA GPU (`machine`)."""
    if params.workers > 0:
        return params.workers
    return 1 if machine.has_nvidia_gpu() else machine.cores()


# relative time of one fit per well, by architecture (benchmarks/results.json: ~0.9 s wide, ~2 s deep, ~0.1 s
# a ViT head per fit on the demo plate); a task's cost also grows with its wells. cnn_all: one fit per fold,
# but on ~6x the wells under the richest augmentation: a task 2-4x a wide_cnn one (benchmarks/cnn_all.json)
FIT_COST = {"deep_cnn": 2.0, "wide_cnn": 1.0, "cnn_all": 3.0}
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
