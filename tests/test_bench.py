"""The speed benchmark (benchmarks/bench.py) in --quick mode on the tiny plate: the JSON it writes.

No timing is asserted (the machine may be shared); only that every field is there and sane.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_train import Recorder, fast_params, index_of, synthetic_inputs, trace

from cytoops import dataset, train

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
UNIT_KEYS = {"architecture", "augmentation", "cytokine", "repeat", "fold"}
sys.path.insert(0, str(BENCH.parent))
import bench  # noqa: E402 - benchmarks/ is not a package: on the path above
import probe  # noqa: E402


def test_the_study_side_fits_the_wells_cytoops_fits(monkeypatch):
    """bench's study loop takes each unit's arrays from train.fold_split / train.unit_arrays: the wells
    run_task fits (the training fold's class-balanced wells), not every well outside the test fold."""
    inputs = synthetic_inputs()
    labels = inputs.labels.copy()
    rng = np.random.default_rng(0)
    labels.loc[(labels.label == 0) & (rng.random(len(labels)) < 0.4), "balanced"] = False
    inputs = dataclasses.replace(inputs, labels=labels)
    params = fast_params(epochs=1)
    recorder = Recorder(monkeypatch)
    tasks = train.plan(inputs, params)[0]
    source = dataset.cnn_view_bank(inputs, params.cnn_channels)
    index = index_of(source, inputs.bank.views)
    by_key = {(t.architecture, t.cytokine, t.repeat): t for t in tasks}
    for task in tasks:
        recorder.calls.clear()
        train.run_task(task, inputs, params, train.Fitter(params), {})
        units = [(f, s) for f in range(params.folds) for s in inputs.strategies]
        assert len(recorder.calls) == len(units)
        balanced = set(task.wells[task.balanced])
        for (fold, strategy), call in zip(units, recorder.calls, strict=True):
            u = dict(
                architecture=task.architecture,
                augmentation=strategy,
                cytokine=task.cytokine,
                repeat=task.repeat,
                fold=fold,
            )
            n_fit, a = bench.unit_arrays(by_key, u, source, inputs.bank.views, params)
            for mine, theirs in ((a.x_fit, "x"), (a.y_fit, "y"), (a.x_val, "x_val"), (a.y_val, "y_val")):
                np.testing.assert_array_equal(mine, call[theirs])
            np.testing.assert_array_equal(a.x_test, call["x_test"])
            fit_wells = {w for _, w in trace(a.x_fit, index)}
            assert len(fit_wells) == n_fit
            assert fit_wells <= balanced and len(balanced) < len(task.wells)  # some wells are not balanced


@pytest.mark.parametrize("per_arch", [5, 10])
def test_the_study_subset_spreads_over_augmentations_and_cytokines(per_arch):
    strategies = ("none", "hflip", "vflip", "hvflip", "flips")
    tasks = [
        SimpleNamespace(architecture=a, cytokine=f"c{c}", repeat=0)
        for a in ("wide_cnn", "deep_cnn")
        for c in range(6)
    ]
    subset = bench.pick_subset(tasks, 2, strategies, per_arch, seed=0)
    assert subset == bench.pick_subset(tasks, 2, strategies, per_arch, seed=0)  # seeded
    assert subset != bench.pick_subset(tasks, 2, strategies, per_arch, seed=1)
    assert len({bench.unit_key(u) for u in subset}) == len(subset) == 2 * per_arch
    for arch in ("wide_cnn", "deep_cnn"):
        mine = [u for u in subset if u["architecture"] == arch]
        assert Counter(u["augmentation"] for u in mine) == {s: per_arch // 5 for s in strategies}
        counts = Counter(u["cytokine"] for u in mine)
        assert len(counts) == min(per_arch, 6) and max(counts.values()) - min(counts.values()) <= 1


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
    assert isinstance(m["cpu_isa"], list) and set(m["cpu_isa"]) <= set(probe.ISA)

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
    assert st["units_per_architecture"] == {a: sum(u["architecture"] == a for u in ran) for a in archs}
    # like for like: the study loop fitted each unit on the wells cytoops fitted it on
    assert st["fit_wells_mean"] == cy["fit_wells_mean"] > 0
    assert all(u["fit_wells_study"] == u["fit_wells_cytoops"] for u in ran)

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
        "cnn_trainers_at_60_percent_of_matmul",
    } <= set(t)
    assert r["bench_wall_seconds"] > 0
    assert t["bench_under_30_minutes"] is (r["bench_wall_seconds"] < 1800)


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
