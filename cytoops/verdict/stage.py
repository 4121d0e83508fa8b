"""verdict.stage: the verdict stage, from train's results to reports/verdict/.

`compute` runs the verdict's steps in order (baselines on train's folds, scores and bootstrap intervals, the
permutation test, the call, the leave-one-plate-out estimate where there are 2+ plates, the study's claims,
the known truth), each owned by its verdict module; `save`
writes the tables, `summary_lines` says the answer, and `run` / `command` are the stage's edges.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from cytoops import cvresult, evaluate, wrangle
from cytoops.params import STUDY_ARCHITECTURES, Params, VerdictParams
from cytoops.params import load as load_params
from cytoops.verdict import baselines, call, claims, metrics, permutation, transfer, truth
from cytoops.verdict.result import Verdict

log = logging.getLogger(__name__)


def _problems(result: cvresult.Result) -> dict[str, str]:
    """Cytokines train could not cross-validate (fold problems), with train's reason."""
    f = result.failures
    if f.empty:
        return {}
    whole = f[(f.architecture == "*") & (f.augmentation == "*")]
    return {str(c): str(e) for c, e in zip(whole.cytokine, whole.error, strict=True)}


def compute(
    w: wrangle.Wrangled,
    result: cvresult.Result,
    p: Params,
    profile: pd.DataFrame | None = None,
    data: Path | None = None,
    vit_pretrained: bool | None = None,
) -> Verdict:
    """The verdict from the wrangled plate, the training grid's results and (optionally) the profile table."""
    vp = p.verdict
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    kept = list(wrangle.kept_cytokines(w.cytokines))
    problems = _problems(result)
    feats = baselines.baseline_features(w, profile)
    both, notes = _predictions(w, result, feats, kept, problems)
    timing["baselines_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    scores = metrics.score_predictions(both)
    summary, draws = metrics.summarize(both, w.wells, vp.n_boot, vp.level, vp.seed, scores=scores)
    timing["intervals_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    tests, nulls = _permutation_tests(both, w.wells, kept, problems, vp)
    timing["permutation_test_s"] = time.perf_counter() - t2
    table = call.decide(summary, draws, tests, kept, problems, vp.alpha, vp.level)
    metrics.check_scores(scores, both, _best_predictors(table))
    t3 = time.perf_counter()
    trained = result.predictions[["cytokine", "architecture"]].drop_duplicates()
    trained = trained[trained.cytokine.isin(kept)]
    refit = transfer.refit_features(feats, profile)
    lopo = transfer.leave_one_plate_out(w.wells, w.labels, kept, refit, trained, vp)
    table = transfer.attach(table, lopo)
    if len(transfer.plates(w.wells)) > 1:
        timing["leave_one_plate_out_s"] = time.perf_counter() - t3
    hyp = _claims(both, p, vit_pretrained)
    known = truth.find_truth(data, list(w.wells.plate.astype(str).unique()))
    timing["total_s"] = time.perf_counter() - t0
    return Verdict(
        table=table,
        summary=summary,
        fold_scores=scores,
        hypotheses=hyp,
        truth=truth.score_truth(table, known),
        nulls=nulls,
        predictions=both,
        curves=result.curves,
        wells=w.wells,
        params=dataclasses.asdict(vp),
        notes=notes,
        timing={k: round(v, 2) for k, v in timing.items()},
        lopo=lopo,
    )


def _predictions(
    w: wrangle.Wrangled,
    result: cvresult.Result,
    feats: dict[str, pd.DataFrame | None],
    kept: list[str],
    problems: dict[str, str],
) -> tuple[pd.DataFrame, list[str]]:
    """(train's predictions of the kept cytokines and the baselines' on the same folds; notes for users)."""
    notes = []
    preds = result.predictions[result.predictions.cytokine.isin(kept)]
    if "embeddings" not in feats:
        notes.append("No embeddings.csv on the plates: the Part 1 (embeddings) comparison is left out.")
    folds = result.folds[result.folds.cytokine.isin(kept) & ~result.folds.cytokine.isin(list(problems))]
    base = baselines.baseline_predictions(folds, w.labels, w.wells, feats)
    return pd.concat([preds, base], ignore_index=True), notes


def _permutation_tests(
    both: pd.DataFrame,
    wells: pd.DataFrame,
    kept: list[str],
    problems: dict[str, str],
    vp: VerdictParams,
) -> tuple[pd.DataFrame, dict]:
    """(cytokine, p, n_perm of each testable kept cytokine; cytokine -> its null and observed statistic)."""
    tests, nulls = [], {}
    images = both[call.image_predictors(both)]
    for i, cytokine in enumerate(kept):
        cp = images[images.cytokine == cytokine]
        if cp.empty or cytokine in problems:
            continue
        observed, null, _ = permutation.conditional_test(
            cp, wells, vp.n_perm, np.random.default_rng([vp.seed, i])
        )
        tests.append(
            {"cytokine": cytokine, "p": permutation.permutation_p(null, observed), "n_perm": len(null)}
        )
        nulls[cytokine] = {"null": null, "observed": observed}
    return pd.DataFrame(tests), nulls


def _best_predictors(table: pd.DataFrame) -> pd.DataFrame:
    """architecture, augmentation, cytokine of each row of the verdict table that names a best predictor."""
    return pd.DataFrame(
        [dict(zip(metrics.MODEL, str(b).split("/", 1), strict=True)) | {"cytokine": c}
         for c, b in zip(table.cytokine, table.get("best_predictor", pd.Series(dtype=str)), strict=True)
         if isinstance(b, str)],
        columns=[*metrics.MODEL, "cytokine"],
    )  # fmt: skip


def _claims(both: pd.DataFrame, p: Params, vit_pretrained: bool | None) -> pd.DataFrame:
    """The study's claims (`claims.hypotheses`) on its own metric and wells: F1 on class-balanced wells."""
    study = both[both.balanced.astype(bool)]
    study_scores = metrics.score_predictions(study)
    is_base = study_scores.architecture.isin(baselines.BASELINES)
    model_means = evaluate.per_cytokine(
        study_scores[~is_base & study_scores.architecture.isin(STUDY_ARCHITECTURES)]
    )
    base_means = (
        study_scores[is_base].groupby([*metrics.MODEL, "cytokine"], as_index=False)[metrics.METRICS].mean()
    )
    return claims.hypotheses(model_means, base_means, p.evaluate.f1_cutoff, p.verdict.alpha, vit_pretrained)


TABLE_COLUMNS = [
    "cytokine", "predictable", "q", "p", "n_perm", "best_predictor", "best_family", "roc_auc", "roc_auc_lo",
    "roc_auc_hi", *transfer.TABLE_COLUMNS, "best_blind", "best_blind_roc_auc", "beats_blind", "f1",
    "average_precision", "prevalence", "study_vs_profile_auc_diff", "study_vs_profile_lo",
    "study_vs_profile_hi", "best_vs_embeddings_auc_diff", "best_vs_embeddings_lo", "best_vs_embeddings_hi",
    "best_vs_cell_count_auc_diff", "best_vs_cell_count_lo", "best_vs_cell_count_hi", "cell_count_alone",
    "reason",
]  # fmt: skip


def save(v: Verdict, reports: Path, metrics_path: Path | None) -> list[Path]:
    """predictable.csv, hypotheses.csv, truth.csv and the per-predictor tables under reports/verdict/
    (leave_one_plate_out.csv: header only on one plate)."""
    reports.mkdir(parents=True, exist_ok=True)
    detail = reports / "verdict"
    detail.mkdir(parents=True, exist_ok=True)
    families = sorted(c for c in v.table.columns if c.startswith("auc_"))
    cols = [c for c in TABLE_COLUMNS if c in v.table.columns] + families
    v.table[cols].to_csv(reports / "predictable.csv", index=False)
    v.hypotheses.to_csv(reports / "hypotheses.csv", index=False)
    v.truth.to_csv(reports / "truth.csv", index=False)
    v.summary.to_csv(detail / "predictors.csv", index=False)
    v.fold_scores.to_csv(detail / "fold_scores.csv", index=False)
    v.lopo.reindex(columns=transfer.COLUMNS).to_csv(detail / "leave_one_plate_out.csv", index=False)
    # for `dvc plots`: the best image predictor's AUC per cytokine beside the image-blind baseline's
    v.table[["cytokine", "roc_auc", "best_blind_roc_auc", *families]].to_csv(
        detail / "auc_by_family.csv", index=False
    )
    rows = [
        {"cytokine": c, "observed": n["observed"], **{f"null_q{q}": float(np.quantile(n["null"], q))
                                                      for q in (0.5, 0.9, 0.95, 0.99, 0.999)}}
        for c, n in v.nulls.items() if len(n["null"])
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(detail / "null_quantiles.csv", index=False)
    if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(
            json.dumps(metrics_summary(v), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
    return [reports / "predictable.csv", reports / "hypotheses.csv", reports / "truth.csv"]


def metrics_summary(v: Verdict) -> dict:
    """A handful of headline numbers (dvc metrics show / exp show)."""
    t = v.table
    called = t[t.predictable] if len(t) else t
    out = {
        "n_kept": int(len(t)),
        "n_predictable": int(len(called)),
        "median_auc": round(float(t.roc_auc.median()), 4) if len(t) and t.roc_auc.notna().any() else None,
        "best_family": str(called.best_family.mode().iat[0]) if len(called) else None,
        "share_auc_over_0.9": round(float((t.roc_auc > 0.9).mean()), 4) if len(t) else None,
        "share_auc_over_0.7": round(float((t.roc_auc > 0.7).mean()), 4) if len(t) else None,
    }
    ts = truth.truth_summary(v.truth)
    if ts:
        out["truth_morphology_found"] = ts["morphology_found"]
        out["truth_morphology_kept"] = ts["morphology_kept"]
        out["truth_wrongly_called"] = len(ts["wrongly_called"])
    return out


def _vit_pretrained(features_path: Path | None) -> bool | None:
    if features_path is None or not Path(features_path).is_file():
        return None
    with np.load(features_path) as z:
        return bool(z["pretrained"]) if "pretrained" in z else None


def summary_lines(v: Verdict, alpha: float) -> list[str]:
    """The answer, first: what `make demo` and the stage print."""
    t = v.table
    called = t[t.predictable]
    lines = [
        f"{len(called)} of {len(t)} cytokines predictable from images (q < {alpha}, beating position and "
        f"prevalence): "
        + (
            ", ".join(f"{r.cytokine} ({r.best_family}, AUC {r.roc_auc:.2f})" for r in called.itertuples())
            or "none"
        )
    ]
    if len(v.lopo):
        held = called[called.lopo_roc_auc.notna()]
        lines.append(
            f"on another plate (leave one plate out, {v.wells.plate.astype(str).nunique()} plates; CNNs and "
            f"ViTs not re-trained): "
            + (
                ", ".join(
                    f"{r.cytokine} AUC {r.lopo_roc_auc:.2f} [{r.lopo_lo:.2f}, {r.lopo_hi:.2f}]"
                    for r in held.itertuples()
                )  # fmt: skip
                or "no called cytokine's best predictor is refit per plate"
            )
            + "; reports/verdict/leave_one_plate_out.csv"
        )
    ts = truth.truth_summary(v.truth)
    if ts:
        lines.append(
            f"vs truth.json (SIMULATED plate): morphology found {ts['morphology_found']} of "
            f"{ts['morphology_kept']}; wrongly called: {ts['wrongly_called'] or 'none'}"
        )
    return lines


def run(
    w: wrangle.Wrangled,
    result: cvresult.Result,
    profile_table: pd.DataFrame | None,
    vit_pretrained: bool | None,
    data: Path | None,
    reports: Path,
    metrics_path: Path | None,
    p: Params,
) -> Verdict:
    """The verdict of a trained plate, saved (tables, verdict.json) and reported (index.html)."""
    from cytoops import report

    v = compute(w, result, p, profile_table, data, vit_pretrained)
    save(v, reports, metrics_path)
    report.write(v, reports)
    for line in summary_lines(v, p.verdict.alpha):
        log.info(f"verdict: {line}")
    log.info(f"verdict: report -> {reports / 'index.html'} ({v.timing['total_s']:.0f} s)")
    return v


def command(
    wrangled: Path = typer.Option(..., "--wrangled", help="Folder written by `cytoops wrangle`."),
    trained: Path = typer.Option(
        ..., "--trained", help="Folder written by `cytoops train` (folds.csv included)."
    ),
    profile_path: Path | None = typer.Option(None, "--profile", help="Per-well profile (`cytoops profile`)."),
    vit_features: Path | None = typer.Option(None, "--features", help="ViT features (says if pretrained)."),
    data: Path | None = typer.Option(
        None, "--data", help="Plates folder: truth.json, where present, is scored."
    ),
    reports: Path = typer.Option(
        ..., "--reports", help="Folder for index.html, predictable.csv, hypotheses.csv."
    ),
    metrics_path: Path | None = typer.Option(None, "--metrics", help="verdict.json for `dvc metrics show`."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set verdict.n_perm=999"),
) -> None:
    """Say which cytokines images predict: baselines on the same folds, a calibrated test, BH, the report."""
    p = load_params(params_file, overrides)
    from cytoops import profile

    cvresult.check_trained_folder(trained)  # one line, not a traceback, when nothing was trained
    table = profile.load(profile_path) if profile_path is not None and profile_path.is_file() else None
    w, result = wrangle.load(wrangled), cvresult.load(trained)
    run(w, result, table, _vit_pretrained(vit_features), data, reports, metrics_path, p)
