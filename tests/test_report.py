"""The HTML report: one self-contained page, every figure inlined, the simulated-plate warning."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pandas as pd
import pytest

from cytoops import cvresult, report, train, wrangle
from cytoops import params as params_mod
from cytoops.verdict import stage

CYTOKINES = ("seen", "edge", "noise")


def _world(
    tmp_path, with_truth: bool, archs=("wide_cnn", "deep_cnn"), augs=("none", "flips"), embeddings=True
):
    """A 384-well plate with made-up out-of-fold predictions (no training): `seen` is predicted by the models,
    `edge` follows the plate edge (the models see it a little), `noise` is a coin."""
    rng = np.random.default_rng(0)
    n = 384
    rows, cols = np.arange(n) // 24, np.arange(n) % 24
    edge = (rows == 0) | (rows == 15) | (cols == 0) | (cols == 23)
    treatment = rng.integers(0, 64, n)
    wells = pd.DataFrame(
        {
            "plate": "plate-1",
            "well": [f"{chr(65 + r)}{c + 1:02d}" for r, c in zip(rows, cols, strict=True)],
            "row": rows,
            "col": cols,
            "edge": edge,
            "treatment": treatment.astype(str),
            "role": "sample",
            "concentration": 1.0,
            "group": [f"treatment:{t}" for t in treatment],
        }
    )
    images = rng.random((n, 3, 16, 16)).astype(np.float32)
    truth_labels = {
        "seen": (treatment % 2 == 0).astype(int),
        "edge": edge.astype(int),
        "noise": rng.integers(0, 2, n),
    }
    label_rows, fold_rows, preds, curves, fits = [], [], [], [], []
    plate_folds = train.plate_folds(
        np.stack([truth_labels[c] for c in CYTOKINES], axis=1), wells.group.to_numpy(), 2, 42
    )
    for c in CYTOKINES:
        y = truth_labels[c]
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        k = min(len(pos), len(neg), 60)
        bal = np.sort(np.concatenate([rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)]))
        idx = np.arange(n)  # every model predicts every labelled well of its test fold
        balanced = np.isin(idx, bal)
        label_rows.append(
            pd.DataFrame(
                {
                    "cytokine": c,
                    "slug": c,
                    "well_index": np.arange(n),
                    "value": y,
                    "label": y,
                    "balanced": balanced,
                }
            )
        )
        folds = plate_folds[idx]
        fold_rows.append(
            pd.DataFrame({"cytokine": c, "repeat": 0, "well_index": idx, "fold": folds, "balanced": balanced})
        )
        for a in archs:
            for g in augs:
                skill = {"seen": 2.5, "edge": 0.8, "noise": 0.0}[c] * (1.2 if a == "wide_cnn" else 1.0)
                logit = skill * (2 * y[idx] - 1) + rng.normal(0, 1, len(idx))
                prob = 1 / (1 + np.exp(-logit))
                for f in (0, 1):
                    m = folds == f
                    preds.append(
                        pd.DataFrame(
                            {
                                "architecture": a,
                                "augmentation": g,
                                "cytokine": c,
                                "repeat": 0,
                                "fold": f,
                                "well_index": idx[m],
                                "plate": "plate-1",
                                "well": wells.well.to_numpy()[idx[m]],
                                "label": y[idx][m],
                                "balanced": balanced[m],
                                "prob": prob[m],
                            }
                        )
                    )
                    curves.append(
                        pd.DataFrame(
                            {
                                "architecture": a,
                                "augmentation": g,
                                "cytokine": c,
                                "repeat": 0,
                                "fold": f,
                                "epoch": np.arange(1, 6),
                                "loss": np.linspace(0.7, 0.3, 5),
                                "val_loss": np.linspace(0.7, 0.5, 5),
                                "accuracy": 0.5,
                                "val_accuracy": 0.5,
                            }
                        )
                    )
                    fits.append(
                        {
                            "architecture": a,
                            "augmentation": g,
                            "cytokine": c,
                            "repeat": 0,
                            "fold": f,
                            "n_train": 50,
                            "n_test": int(m.sum()),
                        }
                    )
    emb = (
        pd.DataFrame(rng.normal(size=(n, 4)), columns=[f"emb_{i}" for i in range(4)])
        if embeddings
        else pd.DataFrame(index=range(n))
    )
    w = wrangle.Wrangled(
        wells=wells,
        images=images,
        channels=("actin", "mito", "nucleus"),
        labels=pd.concat(label_rows, ignore_index=True),
        cytokines=pd.DataFrame({"cytokine": CYTOKINES, "slug": CYTOKINES, "kept": True}),
        embeddings=emb,
    )
    result = cvresult.Result(
        pd.concat(preds, ignore_index=True),
        pd.concat(curves, ignore_index=True),
        pd.DataFrame(fits),
        pd.DataFrame(columns=["architecture", "augmentation", "cytokine", "repeat", "fold", "error"]),
        pd.concat(fold_rows, ignore_index=True),
    )
    data = tmp_path / "data"
    (data / "plate-1").mkdir(parents=True)
    if with_truth:
        truth = {
            "cytokines": {
                "seen": {"cause": "morphology", "driver": "nuclear_size"},
                "edge": {"cause": "position", "driver": "edge"},
                "noise": {"cause": "noise"},
            }
        }
        (data / "plate-1" / "truth.json").write_text(json.dumps(truth), encoding="utf-8")
    p = params_mod.from_dict({"verdict": {"n_perm": 499, "n_boot": 100}})
    return stage.compute(w, result, p, data=data)


@pytest.mark.parametrize("with_truth", [True, False])
def test_report_is_one_self_contained_page(tmp_path, with_truth):
    v = _world(tmp_path, with_truth)
    reports = tmp_path / "reports"
    stage.save(v, reports, tmp_path / "metrics" / "verdict.json")
    page = report.write(v, reports)
    text = page.read_text(encoding="utf-8")
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)">', text)
    assert len(images) == 4  # the answer, AUC by family, nulls, plate maps
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    assert not re.search(r'(src|href)="(http|file|/)', text)  # nothing outside the page
    for name in ("answer", "auc_by_family", "null_distributions", "plate_maps"):
        assert (reports / "verdict" / f"{name}.png").is_file()
    assert text.index("answer") < text.index("Per cytokine")  # the answer leads
    for c in CYTOKINES:
        assert f"<td>{c}</td>" in text
    assert ("<b>simulated</b>" in text) == with_truth
    table = pd.read_csv(reports / "predictable.csv").set_index("cytokine")
    assert table.loc["seen", "predictable"]
    assert not table.loc["edge", "predictable"]  # the models see the edge, but nothing within a ring
    assert not table.loc["noise", "predictable"] and table.loc["noise", "roc_auc"] < 0.65
    wanted = {"roc_auc_lo", "roc_auc_hi", "best_family", "best_blind", "p", "q", "study_vs_profile_auc_diff"}
    assert wanted - {"study_vs_profile_auc_diff"} <= set(table.columns)
    # one plate: no leave-one-plate-out estimate; its columns are there, empty, and the page has no column
    assert table[["lopo_roc_auc", "lopo_lo", "lopo_hi"]].isna().all().all()
    lopo = pd.read_csv(reports / "verdict" / "leave_one_plate_out.csv")
    assert lopo.empty and "held_out_plate" in lopo.columns
    assert "another plate" not in text
    if with_truth:
        truth = pd.read_csv(reports / "truth.csv").set_index("cytokine")
        assert truth.loc["seen", "outcome"] == "found"
        assert truth.loc["edge", "outcome"] == "correctly not called"
        assert "Morphology-driven cytokines found" in text
    summary = json.loads((tmp_path / "metrics" / "verdict.json").read_text())
    assert summary["n_predictable"] == int(table.predictable.sum()) and summary["n_kept"] == 3
    assert f"{summary['n_predictable']} of 3 cytokines predictable from images" in text


def test_report_copes_with_one_architecture_and_no_embeddings(tmp_path):
    v = _world(tmp_path, False, archs=("wide_cnn",), augs=("none",), embeddings=False)
    page = report.write(v, tmp_path / "reports")
    text = page.read_text(encoding="utf-8")
    h = v.hypotheses.set_index("hypothesis")
    assert h.loc["wide_cnn > deep_cnn", "skipped"] == "not run: deep_cnn"
    assert "no embeddings.csv" in h.loc["CNN better than embeddings", "skipped"]
    assert "not run: deep_cnn" in text
