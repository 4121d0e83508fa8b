"""The benchmark's summary: cytoops' grid, the study loop's subset and extrapolated grid, the speed-up, the
F1 agreement (paired per unit, against seed noise) and peak memory, from what bench.py's phases wrote."""

from __future__ import annotations

import math

import numpy as np

AGREEMENT_RULE = (
    "agree when the study-vs-cytoops F1 differences show no systematic shift "
    "(Wilcoxon signed-rank p >= 0.05) "
    "and their mean absolute value is at most twice the seed-noise yardstick's"
)


def unit_key(u: dict) -> tuple:
    return (u["architecture"], u["augmentation"], u["cytokine"], int(u["repeat"]), int(u["fold"]))


def models_kind(architecture: str) -> str:
    from cytoops import models

    return models.get(architecture).kind


def paired(a: list, b: list) -> dict:
    """Mean (absolute) difference of paired F1s and the Wilcoxon signed-rank p (None when no pairs)."""
    from scipy import stats

    x = np.array([np.nan if v is None else v for v in a], dtype=float)
    y = np.array([np.nan if v is None else v for v in b], dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    out = {"pairs": int(len(x)), "mean_abs_diff": None, "mean_diff": None, "wilcoxon_p": None}
    if not len(x):
        return out
    d = x - y
    out["mean_abs_diff"] = float(np.mean(np.abs(d)))
    out["mean_diff"] = float(np.mean(d))
    if np.all(d == 0):
        out["wilcoxon_p"] = 1.0
    else:
        try:
            out["wilcoxon_p"] = float(stats.wilcoxon(x, y).pvalue)
        except ValueError:
            pass
    return out


def mean_of(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def clean(value):
    """JSON-safe: NaN and inf -> null, numpy scalars -> Python, floats rounded to 4 places."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if not math.isfinite(v) else round(v, 4)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def peak_memory(cy: dict) -> dict:
    """cytoops' peak memory: the features stage and the train stage run one after the other (as dvc does)."""
    tr = cy["peak_rss_mb"]
    train_stage = {
        **tr,
        # every worker at the largest one's peak, at the same time as the main process at its own
        "total_upper_bound": tr["self"] + (cy["workers"] if cy["workers"] > 1 else 0) * tr["children"],
        "process_tree_sampled": cy["train_tree_mb"],
    }
    features_stage = (
        {**cy["features_peak_rss_mb"], "process_tree_sampled": cy["features_tree_mb"]}
        if cy["features_peak_rss_mb"]
        else None
    )
    peak = max(train_stage["total_upper_bound"], features_stage["self"] if features_stage else 0.0)
    sampled = [v for v in (cy["train_tree_mb"], cy["features_tree_mb"]) if v is not None]
    return {
        "peak": peak,
        "peak_sampled": max(sampled) if sampled else None,
        "features_stage": features_stage,
        "train_stage": train_stage,
    }


def summarize_cytoops(cy: dict, grid: dict) -> dict:
    import pandas as pd

    fits = pd.DataFrame(cy["fits"])
    n_fits = len(fits)
    grid_s = cy["features_seconds"] + cy["load_seconds"] + cy["train_seconds"]
    image_epochs = float((fits.n_train_images * fits.epochs_run).sum()) if n_fits else 0.0
    by_arch = fits.groupby("architecture").seconds.mean().to_dict() if n_fits else {}
    n_vit_fits = sum(n for a, n in grid["units_per_architecture"].items() if models_kind(a) == "vit")
    return {
        "grid_seconds": grid_s,
        "features_seconds": cy["features_seconds"],
        "load_seconds": cy["load_seconds"],
        "train_seconds": cy["train_seconds"],
        "workers": cy["workers"],
        "fits": n_fits,
        "failed_fits": cy["n_failed"],
        "wall_seconds_per_fit": grid_s / n_fits if n_fits else None,
        "seconds_per_fit_by_architecture": {
            a: {
                "mean": by_arch.get(a),
                # ViT heads: plus their share of the features stage (the backbone pass they no longer make)
                "mean_with_features_share": (by_arch.get(a) or 0.0)
                + (cy["features_seconds"] / n_vit_fits if models_kind(a) == "vit" and n_vit_fits else 0.0),
            }
            for a in grid["architectures"]
        },
        "image_epochs": image_epochs,
        "images_per_second": image_epochs / grid_s if grid_s else None,
        "peak_rss_mb": peak_memory(cy),
        "failures": cy["failures"],
    }


def summarize(config: dict, cy: dict, st: dict | None, grid: dict) -> dict:
    """cytoops' grid; the study loop's subset, its extrapolated grid, the speed-up and the F1 agreement."""
    import pandas as pd

    cytoops = summarize_cytoops(cy, grid)
    out = {"cytoops": cytoops, "study": None, "speedup": None, "f1_agreement": None}
    if st is None:
        return out
    fits, units_per_arch = pd.DataFrame(cy["fits"]), grid["units_per_architecture"]
    done = [u for u in st["units"] if "seconds" in u]
    by_arch: dict[str, dict] = {}
    grid_est = grid_est_ie = 0.0
    for a in grid["architectures"]:
        mine = [u for u in done if u["architecture"] == a]
        if not mine:
            by_arch[a] = {"units": 0, "mean": None}
            continue
        secs = float(np.mean([u["seconds"] for u in mine]))
        per_ie = sum(u["seconds"] for u in mine) / max(
            1, sum(u["n_train_images"] * u["epochs_run"] for u in mine)
        )
        by_arch[a] = {"units": len(mine), "mean": secs, "seconds_per_image_epoch": per_ie}
        grid_est += secs * units_per_arch[a]
        arch_fits = fits[fits.architecture == a]
        grid_est_ie += per_ie * float((arch_fits.n_train_images * arch_fits.epochs_run).sum())
    complete = all(v["units"] for v in by_arch.values())
    cy_subset = {unit_key(u): u for u in cy["subset"]}
    both = [u for u in done if cy_subset.get(unit_key(u), {}).get("fit_wells") is not None]
    # training wells per fit of the units both sides fitted: equal, since both take them from train.fold_split
    cytoops["fit_wells_mean"] = mean_of([cy_subset[unit_key(u)]["fit_wells"] for u in both])
    study_secs = sum(u["seconds"] for u in done)
    study = {
        "extrapolated": True,
        "subset_units_per_architecture": config["study_units_per_arch"],
        "subset_seed": config["subset_seed"],
        "units_run": len(done),
        "units_failed": len(st["units"]) - len(done),
        "units_per_architecture": {a: v["units"] for a, v in by_arch.items()},
        "fit_wells_mean": mean_of([u["fit_wells"] for u in both]),
        "seconds_per_fit_by_architecture": by_arch,
        "grid_seconds_extrapolated": grid_est if complete else None,
        "grid_seconds_extrapolated_by_image_epochs": grid_est_ie if complete else None,
        "subset_seconds": study_secs,
        "images_per_second": sum(u["n_train_images"] * u["epochs_run"] for u in done) / study_secs
        if study_secs
        else None,
        "peak_rss_mb": st["peak_rss_mb"],
    }
    pairs = []
    for u in st["units"]:
        c = cy_subset.get(unit_key(u), {})
        pairs.append(
            {
                **{k: u[k] for k in ("architecture", "augmentation", "cytokine", "repeat", "fold")},
                "study_seconds": u.get("seconds"),
                "study_epochs_run": u.get("epochs_run"),
                "n_train_images": u.get("n_train_images"),
                "fit_wells_study": u.get("fit_wells"),
                "fit_wells_cytoops": c.get("fit_wells"),
                "f1_study": u.get("f1"),
                "f1_cytoops": c.get("f1"),
                "f1_cytoops_other_seed": c.get("f1_other_seed"),
                **({"error": u["error"]} if "error" in u else {}),
            }
        )
    study["units"] = pairs
    vs = paired([q["f1_study"] for q in pairs], [q["f1_cytoops"] for q in pairs])
    noise = paired([q["f1_cytoops_other_seed"] for q in pairs], [q["f1_cytoops"] for q in pairs])
    agree = None
    if vs["pairs"] and noise["mean_abs_diff"] is not None and vs["wilcoxon_p"] is not None:
        agree = bool(vs["wilcoxon_p"] >= 0.05 and vs["mean_abs_diff"] <= 2 * noise["mean_abs_diff"] + 1e-9)
    f1 = {
        "unit": "test-fold F1 of each subset unit (architecture, augmentation, cytokine, repeat, fold)",
        "study_vs_cytoops": vs,
        "study_vs_cytoops_mean_abs_diff_by_architecture": {
            a: paired(
                [q["f1_study"] for q in pairs if q["architecture"] == a],
                [q["f1_cytoops"] for q in pairs if q["architecture"] == a],
            )["mean_abs_diff"]
            for a in grid["architectures"]
        },
        "seed_noise": {
            **noise,
            "what": f"cytoops vs cytoops with unit seeds from base {cy['other_seed_base']}",
        },
        "mean_f1": {side: mean_of([q[f"f1_{side}"] for q in pairs]) for side in ("study", "cytoops")},
        "agree": agree,
        "rule": AGREEMENT_RULE,
    }
    cy_per_fit = {
        a: v["mean_with_features_share"] for a, v in cytoops["seconds_per_fit_by_architecture"].items()
    }
    grid_s = cytoops["grid_seconds"]
    speedup = {
        "grid": grid_est / grid_s if complete and grid_s else None,
        "grid_by_image_epochs": grid_est_ie / grid_s if complete and grid_s else None,
        "per_fit_by_architecture": {
            a: by_arch[a]["mean"] / cy_per_fit[a] if by_arch[a]["mean"] and cy_per_fit[a] else None
            for a in grid["architectures"]
        },
        "what": "study-loop grid seconds (extrapolated from its subset, fitted on cytoops' wells) / "
        "cytoops grid seconds (features + load + train, measured); "
        "per fit: study mean seconds / cytoops mean worker seconds (ViT: + features share)",
    }
    out.update(study=study, speedup=speedup, f1_agreement=f1)
    return out
