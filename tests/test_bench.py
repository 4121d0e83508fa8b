"""The speed benchmark (benchmarks/bench.py) in --quick mode on the tiny plate: the JSON it writes.

No timing is asserted (the machine may be shared); only that every field is there and sane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
UNIT_KEYS = {"architecture", "augmentation", "cytokine", "repeat", "fold"}


def test_quick_benchmark_writes_every_field(tiny_plate, tmp_path):
    data = tiny_plate()
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--data", str(data), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())  # strict JSON: no NaN

    assert r["quick"] is True
    m = r["machine"]
    assert m["cpu_model"] and m["cores"] >= 1 and m["tensorflow"] and len(m["load_average_at_start"]) == 3

    grid = r["grid"]
    assert grid["cytokines"] >= 1 and grid["vit_layers"] == 1
    archs = set(grid["architectures"])
    assert archs == {"wide_cnn", "vit_linear"}  # --quick: one CNN, one ViT
    assert grid["units"] == sum(grid["units_per_architecture"].values()) > 0

    cy = r["cytoops"]
    assert cy["fits"] + cy["failed_fits"] == grid["units"] and cy["fits"] > 0
    assert cy["grid_seconds"] >= cy["train_seconds"] > 0 and cy["features_seconds"] > 0
    assert cy["images_per_second"] > 0
    assert set(cy["seconds_per_fit_by_architecture"]) == archs
    mem = cy["peak_rss_mb"]
    assert mem["peak"] >= mem["train_stage"]["self"] > 100  # TensorFlow alone is more than that
    assert mem["peak"] >= mem["features_stage"]["self"] > 100

    tr = r["trainers"]
    assert tr["matmul_gflops_fp32_one_thread"] > 0
    assert set(tr["by_architecture"]) == archs
    for row in tr["by_architecture"].values():
        assert row["units"] > 0 and row["seconds"] > 0 and row["gflops"] > 0
    assert set(tr["cnn_fraction_of_matmul_peak"]) == {"wide_cnn"}
    assert (
        0
        < tr["cnn_fraction_of_matmul_peak"]["wide_cnn"]
        == tr["by_architecture"]["wide_cnn"]["fraction_of_matmul"]
    )
    assert tr["goal_cnn_fraction"] == 0.6 and tr["cnn_goal_met"] in (True, False)

    st = r["study"]
    assert st["extrapolated"] is True and st["subset_units_per_architecture"] == 1
    assert len(st["units"]) == len(archs)  # one unit per architecture
    assert {u["architecture"] for u in st["units"]} == archs
    assert all(UNIT_KEYS <= set(u) for u in st["units"])
    assert st["peak_rss_mb"]["self"] > 100
    ran = [u for u in st["units"] if "error" not in u]
    assert ran, st["units"]
    for u in ran:
        assert u["study_seconds"] > 0 and u["study_epochs_run"] >= 1 and u["n_train_images"] > 0
        assert 0.0 <= u["f1_study"] <= 1.0
    if st["units_failed"] == 0:
        assert st["grid_seconds_extrapolated"] > 0
        assert r["speedup"]["grid"] > 0

    f1 = r["f1_agreement"]
    for side in ("study_vs_cytoops", "seed_noise"):
        stats = f1[side]
        assert {"pairs", "mean_abs_diff", "mean_diff", "wilcoxon_p"} <= set(stats)
        if stats["pairs"]:
            assert 0.0 <= stats["mean_abs_diff"] <= 1.0
            assert stats["wilcoxon_p"] is None or 0.0 <= stats["wilcoxon_p"] <= 1.0
    assert f1["agree"] in (True, False, None)

    t = r["targets"]
    assert {
        "grid_under_10_minutes",
        "speedup_at_least_50x",
        "cytoops_peak_memory_under_4_gb",
        "f1_agree",
    } <= set(t)
    assert r["bench_wall_seconds"] > 0


def test_large_image_benchmark_writes_its_fields(tmp_path):
    """Plumbing only (a 4-well plate of 256 px images): every run exits 0 and reports a peak memory."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "large_images.py"
    out = tmp_path / "large.json"
    args = ["--wells", "4", "--size", "256", "--distinct", "2", "--out", str(out), "--workdir", str(tmp_path)]
    run = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["plate"]["wells"] == 4 and r["plate"]["distinct_files"] == 2 and r["plate"]["hard_links"] == 2
    assert set(r["runs"]) == {"startup", "validate", "wrangle"}
    for name, result in r["runs"].items():
        assert result["exit_code"] == 0, (name, result)
        assert result["peak_rss_mb"] > 0
    assert "usable: 1 plate(s)" in r["runs"]["validate"]["output_tail"][-1]
    assert "note: images are 256x256" in " ".join(r["runs"]["wrangle"]["output_head"])
    assert [p for p in tmp_path.iterdir() if p.name.startswith("cytoops-large-")] == []  # cleaned up
