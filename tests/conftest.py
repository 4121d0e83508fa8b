"""Shared fixtures. Tests build their data in code: `tiny_plate` writes small valid plates on disk."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any test imports TensorFlow: quiet its C++ logs

TINY_WELLS = ("A01", "A02", "A03", "A04", "B01", "B02", "B03", "B04")
TINY_CYTOKINES = ("IL-6", "TNF-α", "IL-12p40/p70")
TINY_CHANNELS = ("actin", "mito", "nucleus")
# 4 treatments x 2 replicates: (treatment, concentration, role) for the wells in TINY_WELLS order
TINY_LAYOUT = (
    ("DMSO", "", "negative_control"),
    ("DMSO", "", "negative_control"),
    ("LPS", "100", "positive_control"),
    ("LPS", "100", "positive_control"),
    ("drug-a", "1.5", "sample"),
    ("drug-a", "1.5", "sample"),
    ("drug-b", "10", "sample"),
    ("drug-b", "10", "sample"),
)


def spell_well(well: str, style: str) -> str:
    """Write a canonical well ("A01") in another spelling: "A01", "A1", "a01" or "A001"."""
    row, column = well.rstrip("0123456789"), int(well.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    spellings = {"A01": f"{row}{column:02d}", "A1": f"{row}{column}", "a01": f"{row.lower()}{column:02d}"}
    return spellings.get(style, f"{row}{column:03d}")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    lines = [",".join(header)] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def tiny_plate(tmp_path):
    """Factory: `tiny_plate(**options) -> data_dir` writes one valid plate folder into
    `tmp_path / "data" / plate_id` and returns the data dir (call it again with another plate_id for
    a multi-plate data dir). By default: 8 wells A01-A04, B01-B04; 3 channels (actin, mito, nucleus);
    16x16 uint16 images `{well}.tif` shaped (3, 16, 16); cytokines.csv with IL-6, TNF-α, IL-12p40/p70
    (numbers with 4 decimals); layout.csv with 4 treatments x 2 replicates (DMSO negative_control,
    LPS positive_control, drug-a and drug-b samples); embeddings.csv with 4 columns emb_0..emb_3;
    no plate.yaml. Options (keyword only):

    - plate_id="plate-1": the folder name.
    - seed=0: pixel values and readouts.
    - image_pattern="{well}.tif": or "{well}_{channel}.tif" (one 2-D file per channel); a
      non-default pattern is written to plate.yaml.
    - channels=TINY_CHANNELS, size=16, dtype="uint16": the images.
    - well_style="A01": how wells are spelled in file names and CSVs: "A01", "A1", "a01" or "A001".
    - cytokines=TINY_CYTOKINES: the readout columns.
    - cells={}: {(well, cytokine): text} overriding readout cells, e.g. {("A01", "IL-6"): "OOR <"}.
    - no_image=(): wells whose image files are not written (their readouts stay).
    - no_readouts=(): wells left out of cytokines.csv (their images stay).
    - extra_readouts=(): extra wells given a readouts row (and no image), e.g. ("C01",).
    - plate_column=False: add a `plate` column holding plate_id to cytokines.csv.
    - layout=True, embeddings=True, readouts=True: write layout.csv, embeddings.csv, cytokines.csv.
    - plate_yaml=None: extra plate.yaml keys, merged over the written ones ({"format": 384}).
    """

    def make(
        *,
        plate_id: str = "plate-1",
        seed: int = 0,
        image_pattern: str = "{well}.tif",
        channels: tuple[str, ...] = TINY_CHANNELS,
        size: int = 16,
        dtype: str = "uint16",
        well_style: str = "A01",
        cytokines: tuple[str, ...] = TINY_CYTOKINES,
        cells: dict[tuple[str, str], str] | None = None,
        no_image: tuple[str, ...] = (),
        no_readouts: tuple[str, ...] = (),
        extra_readouts: tuple[str, ...] = (),
        plate_column: bool = False,
        layout: bool = True,
        embeddings: bool = True,
        readouts: bool = True,
        plate_yaml: dict | None = None,
    ) -> Path:
        rng = np.random.default_rng(seed)
        data_dir = tmp_path / "data"
        plate = data_dir / plate_id
        (plate / "images").mkdir(parents=True)
        config = {} if image_pattern == "{well}.tif" else {"image_pattern": image_pattern}
        if tuple(channels) != TINY_CHANNELS:
            config["channels"] = list(channels)
        config.update(plate_yaml or {})
        if config:
            (plate / "plate.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")

        high = 1.0 if dtype.startswith("float") else min(np.iinfo(dtype).max, 4000)
        for well in TINY_WELLS:
            if well in no_image:
                continue
            image = (rng.random((len(channels), size, size)) * high).astype(dtype)
            name = spell_well(well, well_style)
            if "{channel}" in image_pattern:
                for channel, plane in zip(channels, image, strict=True):
                    file = plate / "images" / image_pattern.format(well=name, channel=channel)
                    tifffile.imwrite(file, plane, photometric="minisblack")
            else:
                tifffile.imwrite(
                    plate / "images" / image_pattern.format(well=name), image, photometric="minisblack"
                )

        cells = cells or {}
        readout_wells = [w for w in TINY_WELLS if w not in no_readouts] + list(extra_readouts)
        if readouts:
            header = ["well", *(["plate"] if plate_column else []), *cytokines]
            rows = []
            for well in readout_wells:
                values = [cells.get((well, name), f"{rng.normal():.4f}") for name in cytokines]
                rows.append([spell_well(well, well_style), *([plate_id] if plate_column else []), *values])
            _write_csv(plate / "cytokines.csv", header, rows)
        if layout:
            rows = [
                [spell_well(w, well_style), *spec] for w, spec in zip(TINY_WELLS, TINY_LAYOUT, strict=True)
            ]
            _write_csv(plate / "layout.csv", ["well", "treatment", "concentration", "role"], rows)
        if embeddings:
            rows = [
                [spell_well(w, well_style), *(f"{v:.5f}" for v in rng.normal(size=4))] for w in TINY_WELLS
            ]
            _write_csv(plate / "embeddings.csv", ["well", "emb_0", "emb_1", "emb_2", "emb_3"], rows)
        return data_dir

    return make


# ---- helpers for the plate reader's tests (tests/test_plate*.py) -----------------------------------------


def plate_of(data_dir: Path, plate_id: str = "plate-1") -> Path:
    return data_dir / plate_id


def read(data_dir: Path, **options):
    """The plate `plate-1` of a data dir, read with cytoops.plate.read_plate(**options)."""
    from cytoops.plate import read_plate

    return read_plate(plate_of(data_dir), **options)


def write_image(plate: Path, name: str, array: np.ndarray) -> None:
    tifffile.imwrite(plate / "images" / name, array, photometric="minisblack")


def replace_in(file: Path, old: str, new: str) -> None:
    text = file.read_text(encoding="utf-8")
    assert old in text
    file.write_text(text.replace(old, new, 1), encoding="utf-8")


def append_line(file: Path, line: str) -> None:
    with file.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def invoke_validate(*args):
    """`cytoops validate ARGS` through typer's test runner (the command alone, not the whole CLI)."""
    import typer
    from typer.testing import CliRunner

    from cytoops.plate import validate_command

    app = typer.Typer()
    app.command()(validate_command)
    return CliRunner().invoke(app, [str(arg) for arg in args])


# ---- a larger plate, for the end-to-end pipeline test -----------------------------------------------------

WIDE_CYTOKINES = ("IL-6", "TNF-α", "IL-10")


@pytest.fixture
def wide_plate(tmp_path):
    """Factory: `wide_plate(**options) -> data_dir` writes one valid plate big enough for grouped two-fold
    cross-validation with balancing: `treatments` x `replicates` wells (default 16 x 2 = 32 wells, filled
    row-major on a 96-well plate: A01-A12, B01-B12, C01-C08), replicates of a treatment side by side.
    Images are (3, size, size) uint16 (default 32x32). Cytokines (WIDE_CYTOKINES):

    - IL-6: responders (value 1 +- noise) are the wells of the first half of the treatments, the others
      read -1 +- noise; responders have a brighter actin channel (the planted, learnable signal);
    - TNF-α: noise around 0 (about half responders with the default threshold 0);
    - IL-10: only the first well responds (1 balanced pair: dropped by any min_wells above 2).

    layout.csv names the treatments t00, t01, ...; t00 is the negative control ("DMSO" role
    negative_control), the rest are samples. embeddings.csv (emb_0..emb_3) unless `embeddings=False`.
    No plate.yaml.
    """

    def make(
        *,
        treatments: int = 16,
        replicates: int = 2,
        size: int = 32,
        seed: int = 0,
        plate_id: str = "plate-1",
        embeddings: bool = True,
    ) -> Path:
        rng = np.random.default_rng(seed)
        data_dir = tmp_path / "data"
        plate = data_dir / plate_id
        (plate / "images").mkdir(parents=True)
        n = treatments * replicates
        if n > 96:
            raise ValueError("wide_plate fills one 96-well plate: at most 96 wells")
        wells = [f"{'ABCDEFGH'[i // 12]}{i % 12 + 1:02d}" for i in range(n)]
        treatment = [i // replicates for i in range(n)]
        responder = [t < treatments // 2 for t in treatment]
        for well, hot in zip(wells, responder, strict=True):
            image = rng.integers(0, 1000, size=(3, size, size))
            if hot:
                image[0] += 2000
            file = plate / "images" / f"{well}.tif"
            tifffile.imwrite(file, image.astype("uint16"), photometric="minisblack")
        rows = []
        for i, (well, hot) in enumerate(zip(wells, responder, strict=True)):
            il6 = (1.0 if hot else -1.0) + 0.1 * rng.normal()
            tnf = rng.normal()
            il10 = 1.0 if i == 0 else -1.0 - rng.random()
            rows.append([well, f"{il6:.4f}", f"{tnf:.4f}", f"{il10:.4f}"])
        _write_csv(plate / "cytokines.csv", ["well", *WIDE_CYTOKINES], rows)
        layout = [
            [w, f"t{t:02d}", "", "negative_control" if t == 0 else "sample"]
            for w, t in zip(wells, treatment, strict=True)
        ]
        _write_csv(plate / "layout.csv", ["well", "treatment", "concentration", "role"], layout)
        if embeddings:
            rows = [[w, *(f"{v:.5f}" for v in rng.normal(size=4))] for w in wells]
            _write_csv(plate / "embeddings.csv", ["well", "emb_0", "emb_1", "emb_2", "emb_3"], rows)
        return data_dir

    return make


# ---- MLflow stores for the tracking, register and predict tests -------------------------------------


@pytest.fixture(scope="session")
def template_db(tmp_path_factory) -> Path:
    """An empty store with MLflow's tables: making them takes seconds, copying the file does not."""
    import contextlib
    import sqlite3

    from cytoops import store as mlstore

    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    before = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{db}"
    try:
        mlstore.connect()
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI")
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


@pytest.fixture
def store(tmp_path, monkeypatch, template_db):
    """A fresh MLflow SQLite store in tmp_path, set as MLFLOW_TRACKING_URI; returns its URI."""
    import shutil

    (tmp_path / "store").mkdir()
    shutil.copy(template_db, tmp_path / "store" / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for name in ("MLFLOW_RUN_ID", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    return uri


# ---- a real `mlflow models serve` for the serving tests ---------------------------------------------------


@contextlib.contextmanager
def mlflow_served(model: str, env: dict | None = None, timeout: float = 180.0):
    """`mlflow models serve --env-manager local -m MODEL` on a free loopback port, waited for until /ping
    answers; yields post(inputs) -> (HTTP status as text, the JSON answer); the server is stopped after."""
    import json
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bin_dir = os.path.dirname(sys.executable)  # mlflow starts uvicorn from PATH: the venv's
    env = {**os.environ, **(env or {}), "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model,
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    def post(inputs) -> tuple[str, dict]:
        done = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", f"http://127.0.0.1:{port}/invocations",
             "-H", "Content-Type: application/json", "-d", json.dumps({"inputs": inputs})],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        body, status = done.stdout.rsplit("\n", 1)
        return status, json.loads(body)

    try:
        deadline = time.monotonic() + timeout
        while True:
            ping = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/ping"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if ping.stdout == "200":
                break
            assert server.poll() is None, server.stdout.read()
            assert time.monotonic() < deadline, f"mlflow models serve answered no /ping within {timeout} s"
            time.sleep(0.5)
        yield post
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
