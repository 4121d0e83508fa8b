"""Peak memory of `cytoops train` with TensorFlow's oneDNN kernels off and on (benchmarks/onednn_memory.json):
the real stage (main process + its workers, summed RSS sampled every 0.5 s) on a reduced demo grid, once with
TF_ENABLE_ONEDNN_OPTS=0 and once with =1.

    PYTHONPATH=. .venv/bin/python benchmarks/onednn_memory.py --work WORK --out benchmarks/onednn_memory.json

WORK: a `make demo` clone's work/ folder (wrangle, augment and features done).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import probe  # noqa: E402 - benchmarks/ itself, put on the path above

GRID = ["train.architectures=[wide_cnn,deep_cnn]", "augment.strategies=[none,flips]"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a make demo clone's work/ folder")
    parser.add_argument("--params", type=Path, default=HERE.parent / "params.yaml")
    parser.add_argument("--out", type=Path, default=HERE / "onednn_memory.json")
    a = parser.parse_args()
    cytoops = Path(sys.executable).with_name("cytoops")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp, probe.LoadSampler() as load:
        for flag in ("0", "1"):
            cmd = [str(cytoops), "train", "--wrangled", str(a.work / "wrangle")]
            cmd += ["--views", str(a.work / "augment/views.npz")]
            cmd += ["--features", str(a.work / "features/vit.npz")]
            cmd += ["--out", f"{tmp}/train_{flag}", "--params", str(a.params)]
            cmd += [arg for s in GRID for arg in ("--set", s)]
            seconds, peak = probe.run_sampled(cmd, {**os.environ, "TF_ENABLE_ONEDNN_OPTS": flag})
            peak_mb = None if peak is None else round(peak, 1)  # None: no /proc to sample
            runs[flag] = {"seconds": round(seconds, 1), "peak_tree_mb": peak_mb}
            print(flag, runs[flag], flush=True)
    out = {
        "what": "cytoops train on the demo plate, grid " + ", ".join(GRID) + " (248 fits, 2 workers): summed "
        "RSS of the stage's process tree, sampled every 0.5 s, with TF_ENABLE_ONEDNN_OPTS=0 (Eigen) and =1",
        "command": "PYTHONPATH=. .venv/bin/python benchmarks/onednn_memory.py " + " ".join(sys.argv[1:]),
        "by_flag": runs,
        "machine": {"cpu_model": probe.cpu_model(), "cpu_isa": probe.cpu_isa(), "load": load.summary()},
    }
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
