"""Memory benchmark: `cytoops validate` and `cytoops wrangle` (what `run` reads first) on large images.

    python benchmarks/large_images.py [--wells 384] [--size 2048] [--distinct 16]
                                      [--out benchmarks/large_images.json] [--workdir DIR] [--keep]

Writes one plate of `--wells` wells (384: a full 384-well plate) whose images are (3, size, size) uint16
TIFFs, in a temporary folder, then runs each command in its own process and reads that process's peak
resident memory (`ru_maxrss` from `os.wait4`, the kernel's own count for that one process):

- `cytoops validate DATA`: every file decoded and checked, the plate's sizes and dtypes reported;
- `cytoops wrangle --data DATA --out OUT` with `wrangle.image_size` 64 (the default): the plate read, each
  well shrunk to 64x64 as it is read, normalized, binarized and written;
- `cytoops --help`: the CLI's start-up alone, to tell the plate's share from the imports'.

Disk: a 384-well plate of 2048 px uint16 images is 9.7 GB raw. The images are zlib-compressed (smooth
content with mild noise, as microscopy thumbnails are) and only `--distinct` of them are distinct files; the
other wells are hard links to them. Every well is still a separate file name that is opened and decoded in
full, so memory (which is what is measured) is the same as for 384 distinct files; only the disk and the
page cache are spared. `--distinct 384` writes them all.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROWS, COLUMNS = "ABCDEFGHIJKLMNOP", 24  # a 384-well plate
CYTOKINES = ("IL-6", "TNF", "IL-10")


def make_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """(3, size, size) uint16: smooth blobs on a gradient plus mild noise (compresses, not to nothing)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.empty((3, size, size), np.uint16)
    for c in range(3):
        plane = 800 + 400 * x + 300 * y
        for cy, cx, r in rng.random((12, 3)):
            plane += 3000 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.002 + 0.01 * r))
        plane += rng.integers(0, 16, size=(size, size))
        image[c] = np.clip(plane, 0, 65535).astype(np.uint16)
    return image


def make_plate(data: Path, wells: int, size: int, distinct: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    plate = data / "plate-1"
    (plate / "images").mkdir(parents=True)
    names = [f"{ROWS[i // COLUMNS]}{i % COLUMNS + 1:02d}" for i in range(wells)]
    sources: list[Path] = []
    for i, well in enumerate(names):
        file = plate / "images" / f"{well}.tif"
        if i < distinct:
            tifffile.imwrite(file, make_image(rng, size), photometric="minisblack", compression="zlib")
            sources.append(file)
        else:
            os.link(sources[i % distinct], file)
    rows = ["well," + ",".join(CYTOKINES)]
    rows += [f"{w}," + ",".join(f"{v:.4f}" for v in rng.normal(size=len(CYTOKINES))) for w in names]
    (plate / "cytokines.csv").write_text("\n".join(rows) + "\n")
    layout = ["well,treatment,concentration,role"]
    layout += [f"{w},t{i // 2:03d},,{'negative_control' if i < 2 else 'sample'}" for i, w in enumerate(names)]
    (plate / "layout.csv").write_text("\n".join(layout) + "\n")
    (plate / "plate.yaml").write_text("format: 384\n")
    disk = sum(f.stat().st_size for f in {*sources})
    return {
        "wells": wells,
        "image_shape": [3, size, size],
        "dtype": "uint16",
        "compression": "zlib",
        "distinct_files": len(sources),
        "hard_links": wells - len(sources),
        "disk_mb": round(disk / 2**20, 1),
        "raw_mb_if_uncompressed_and_distinct": round(wells * 3 * size * size * 2 / 2**20, 1),
    }


def measure(args: list[str], env: dict) -> dict:
    """Run `cytoops ARGS` in its own process; its peak RSS (MB), wall seconds, exit code, last output line."""
    command = [sys.executable, "-c", "from cytoops.cli import main; main()", *args]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().strip().splitlines()
    return {
        "command": "cytoops " + " ".join(args),
        "exit_code": process.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: ru_maxrss is in KiB
        "seconds": round(time.perf_counter() - t0, 1),
        "output_head": output[:2],
        "output_tail": output[-2:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--wells", type=int, default=384)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--distinct", type=int, default=16, help="distinct image files (the rest hard links)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/large_images.json"))
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary folder")
    parser.add_argument("--keep", action="store_true", help="keep the generated plate")
    args = parser.parse_args()
    if not 1 <= args.wells <= 384 or not 1 <= args.distinct:
        parser.error("--wells must be 1..384 and --distinct at least 1")

    root = Path(tempfile.mkdtemp(prefix="cytoops-large-", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        plate = make_plate(root / "data", args.wells, args.size, min(args.distinct, args.wells), args.seed)
        plate["seconds_to_write"] = round(time.perf_counter() - t0, 1)
        (root / "params.yaml").write_text("wrangle:\n  image_size: 64\n  min_wells: 15\n")
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        runs = {
            "startup": measure(["--help"], env),
            "validate": measure(["validate", str(root / "data")], env),
            "wrangle": measure(
                [
                    "wrangle",
                    "--data",
                    str(root / "data"),
                    "--out",
                    str(root / "wrangle"),
                    "--params",
                    str(root / "params.yaml"),
                ],
                env,
            ),
        }
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "plate": plate,
        "runs": runs,
        "target_peak_rss_mb": 2048,
        "under_target": all(r["peak_rss_mb"] < 2048 and r["exit_code"] == 0 for r in runs.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in runs.items():
        print(f"{name}: peak {r['peak_rss_mb']} MB, {r['seconds']} s, exit {r['exit_code']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
