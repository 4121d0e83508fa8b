"""taskcache: finished training tasks kept on disk, so an interrupted train stage resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cytoops.params import TrainParams

if TYPE_CHECKING:
    from cytoops.dataset import Inputs
    from cytoops.train import Task

log = logging.getLogger(__name__)


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
