"""evaluate: out-of-fold predictions -> per-fold scores, a summary, and the study's figures.

`score`, `summarize`, `headline` and `model_table` are the pure core; `figures` draws; `command` does the I/O.
The metrics file (metrics/summary.json) holds a handful of headline numbers, so `dvc exp show` stays narrow;
the per-model and per-cytokine tables go to CSV in reports/ (DVC plots compare them across experiments).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from sklearn.metrics import roc_auc_score

from cytoops import cvresult, tables, wrangle
from cytoops.params import STUDY_ARCHITECTURES, EvaluateParams
from cytoops.params import load as load_params

log = logging.getLogger(__name__)

METRICS = ["f1", "precision", "recall", "roc_auc", "balanced_accuracy"]


def fold_scores(label: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """F1, precision, recall (0 where undefined), ROC AUC and balanced accuracy (NaN with one class) of
    calling a well a responder at `prob >= threshold`.

    The same floats as sklearn's scorers (tested bit for bit): the confusion counts are integers, so each
    ratio is one correctly rounded division whatever the formula's order; ROC AUC is sklearn's own. Computed
    from the counts because sklearn's input checks made its four scorers most of the evaluate stage.
    """
    label = np.asarray(label)
    truth, call = label == 1, np.asarray(prob) >= threshold
    tp, fp = int(np.sum(truth & call)), int(np.sum(~truth & call))
    fn, tn = int(np.sum(truth & ~call)), int(np.sum(~truth & ~call))
    both = len(np.unique(label)) == 2
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "roc_auc": roc_auc_score(label, prob) if both else np.nan,
        "balanced_accuracy": (tn / (tn + fp) + tp / (tp + fn)) / 2 if both else np.nan,
    }


def score(predictions: pd.DataFrame, fits: pd.DataFrame) -> pd.DataFrame:
    """Tidy scores: one row per (architecture, augmentation, cytokine, fold), on the study's test wells.

    Models predict every labelled well of a test fold (the verdict scores them all); the study's figures and
    F1 read the class-balanced ones, as the study did (`balanced`)."""
    if "balanced" in predictions:
        predictions = predictions[predictions.balanced.astype(bool)]
    rows = [
        {**dict(zip(tables.UNIT, key, strict=True)), **fold_scores(g.label.to_numpy(), g.prob.to_numpy())}
        for key, g in predictions.groupby(tables.UNIT, sort=True)
    ]
    scores = pd.DataFrame(rows, columns=[*tables.UNIT, *METRICS])
    sizes = fits[[*tables.UNIT, "n_train", "n_test"]]
    return scores.merge(sizes, on=tables.UNIT, how="left")


def per_cytokine(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean over folds (and repeats) per (architecture, augmentation, cytokine)."""
    return scores.groupby([*tables.MODEL, "cytokine"], as_index=False)[METRICS].mean()


def summarize(scores: pd.DataFrame, p: EvaluateParams, n_kept: int, n_failed: int) -> dict:
    """Per model: mean F1 over cytokines and how many reach the F1 cut-off; the best model per cytokine."""
    means = per_cytokine(scores)
    models = {}
    for (arch, aug), g in means.groupby(tables.MODEL):
        models[f"{arch}/{aug}"] = {
            "mean_f1": round(float(g.f1.mean()), 4),
            "mean_roc_auc": round(float(g.roc_auc.mean()), 4),
            "n_predicted": int((g.f1 >= p.f1_cutoff).sum()),
        }
    best = means.sort_values(["cytokine", "f1"], ascending=[True, False]).groupby("cytokine").head(1)
    top = max(models.items(), key=lambda kv: (kv[1]["n_predicted"], kv[1]["mean_f1"]))[0] if models else None
    return {
        "f1_cutoff": p.f1_cutoff,
        "n_cytokines_kept": n_kept,
        "n_failed_fits": n_failed,
        "best_model": top,
        "n_cytokines_predicted_by_any": int((best.f1 >= p.f1_cutoff).sum()),
        "models": models,
        "best_per_cytokine": {
            r.cytokine: {"model": f"{r.architecture}/{r.augmentation}", "f1": round(float(r.f1), 4)}
            for r in best.itertuples()
        },
    }


def headline(summary: dict) -> dict:
    """The few numbers of metrics/summary.json: what `dvc exp show` and `dvc exp diff` compare."""
    best = (summary.get("models") or {}).get(summary.get("best_model") or "", {})
    return {
        "n_kept": summary["n_cytokines_kept"],
        "n_predicted": summary["n_cytokines_predicted_by_any"],
        "n_failed": summary["n_failed_fits"],
        "best_model": summary["best_model"],
        "best_f1": best.get("mean_f1"),
        "best_auc": best.get("mean_roc_auc"),
    }


MODEL_COLUMNS = ["model", "architecture", "augmentation", "mean_f1", "mean_roc_auc", "n_predicted"]


def model_table(summary: dict) -> pd.DataFrame:
    """One row per model (architecture/augmentation): mean F1 and ROC AUC over cytokines, n predicted."""
    rows = [
        {"model": m, "architecture": m.split("/")[0], "augmentation": m.split("/")[1], **v}
        for m, v in (summary.get("models") or {}).items()
    ]
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def figures(scores: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """The study's Figure 5 (F1 by augmentation), Figure 6 (by architecture) and learning curves, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    means = per_cytokine(scores)
    written = []
    for by, title, name in [
        ("augmentation", "F1 per cytokine by augmentation (the study's Figure 5)", "f1_by_augmentation.png"),
        ("architecture", "F1 per cytokine by architecture (the study's Figure 6)", "f1_by_architecture.png"),
    ]:
        # by augmentation: the study's architectures only (ours train under one strategy each)
        part = means[means.architecture.isin(STUDY_ARCHITECTURES)] if by == "augmentation" else means
        levels = list(dict.fromkeys(part[by]))
        fig, ax = plt.subplots(figsize=(1.6 * len(levels) + 2, 4.5))
        data = [part.loc[part[by] == lv, "f1"].to_numpy() for lv in levels]
        ax.boxplot(data, widths=0.5, showfliers=False)
        rng = np.random.default_rng(0)  # jitter only
        for i, d in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=10, alpha=0.6)
        ax.set_xticks(range(1, len(levels) + 1), levels, rotation=20)
        ax.set_ylabel("F1 (mean over folds), one dot per cytokine" + (" x model" if by else ""))
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    if len(curves):
        keys = ["architecture", "augmentation", "cytokine"]
        trained = means.merge(curves[keys].drop_duplicates(), on=keys)  # models with curves (no profile)
        best = trained.sort_values("f1", ascending=False).drop_duplicates("cytokine").head(6)
        fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), squeeze=False)
        for ax, r in zip(axes.flat, best.itertuples(), strict=False):
            c = curves[
                (curves.architecture == r.architecture)
                & (curves.augmentation == r.augmentation)
                & (curves.cytokine == r.cytokine)
            ]
            for fold, g in c.groupby("fold"):
                ax.plot(g.epoch, g.loss, label=f"train, fold {fold}")
                ax.plot(g.epoch, g.val_loss, "--", label=f"validation, fold {fold}")
            ax.set_title(f"{r.cytokine}: {r.architecture}/{r.augmentation} (F1 {r.f1:.2f})", fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel("loss")
        for ax in list(axes.flat)[len(best) :]:
            ax.axis("off")
        with_lines = [ax for ax in axes.flat if ax.get_legend_handles_labels()[0]]
        if with_lines:
            with_lines[0].legend(fontsize=7)
        fig.suptitle("Learning curves of the best trained model per cytokine (top 6 by F1)")
        fig.tight_layout()
        fig.savefig(out / "learning_curves.png", dpi=100)
        plt.close(fig)
        written.append(out / "learning_curves.png")
    return written


def best_curve(means: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch loss and validation loss of the best model of any cytokine, first repeat and fold."""
    columns = ["epoch", "loss", "val_loss"]
    if means.empty or curves.empty:
        return pd.DataFrame(columns=columns)
    top = means.sort_values("f1", ascending=False).iloc[0]
    pick = (
        (curves.architecture == top.architecture)
        & (curves.augmentation == top.augmentation)
        & (curves.cytokine == top.cytokine)
        & (curves.repeat == curves.repeat.min())
        & (curves.fold == curves.fold.min())
    )
    return curves.loc[pick, columns]


def summary_lines(head: dict, models: pd.DataFrame, f1_cutoff: float) -> list[str]:
    """The short table `make demo` prints: kept cytokines, best model, cytokines each model predicts."""
    lines = [
        f"cytokines kept: {head['n_kept']}; predicted (F1 >= {f1_cutoff}) by some model: "
        f"{head['n_predicted']}; best model: {head['best_model']}",
        f"{'model':<24} {'mean F1':>8} {'mean AUC':>9} {'predicted':>10}",
    ]
    ranked = models.sort_values(["n_predicted", "mean_f1"], ascending=[False, False])
    lines += [
        f"{r.model:<24} {r.mean_f1:>8.3f} {r.mean_roc_auc:>9.3f} {int(r.n_predicted):>10}"
        for r in ranked.itertuples()
    ]
    return lines


# ---- stage I/O -------------------------------------------------------------------------------------------


def run(
    result: cvresult.Result, cytokines: pd.DataFrame, reports: Path, metrics: Path, p: EvaluateParams
) -> tuple[dict, pd.DataFrame]:
    """Score, write the reports and metrics; return (the summary, the mean scores per model and cytokine)."""
    scores = score(result.predictions, result.fits)
    reports.mkdir(parents=True, exist_ok=True)
    scores.to_csv(reports / "scores.csv", index=False)
    means = per_cytokine(scores)
    means.to_csv(reports / "f1_per_cytokine.csv", index=False)
    best_curve(means, result.curves).to_csv(reports / "best_learning_curve.csv", index=False)
    figures(scores, result.curves, reports)
    n_kept = len(wrangle.kept_cytokines(cytokines))
    summary = summarize(scores, p, n_kept, len(result.failures))
    model_table(summary).to_csv(reports / "models.csv", index=False)
    pd.DataFrame(
        [{"cytokine": c, **v} for c, v in summary["best_per_cytokine"].items()],
        columns=["cytokine", "model", "f1"],
    ).to_csv(reports / "best_per_cytokine.csv", index=False)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps(headline(summary), indent=2) + "\n")
    log.info(
        f"evaluate: best model {summary['best_model']}; {summary['n_cytokines_predicted_by_any']} of "
        f"{summary['n_cytokines_kept']} kept cytokines reach F1 >= {p.f1_cutoff} with some model -> {reports}"
    )
    return summary, means


def command(
    trained: Path = typer.Option(..., "--trained", help="Folder written by `cytoops train`."),
    cytokines: Path = typer.Option(
        ..., "--cytokines", help="cytokines.csv written by `cytoops wrangle` (kept/dropped)."
    ),
    reports: Path = typer.Option(
        ..., "--reports", help="Folder for scores.csv, the figures and their plot data."
    ),
    metrics: Path = typer.Option(..., "--metrics", help="summary.json for `dvc metrics show`."),
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params.yaml to read."),
    overrides: list[str] = typer.Option([], "--set", help="Override a param: --set evaluate.f1_cutoff=0.8"),
) -> None:
    """Score every fold (F1, precision, recall, ROC AUC), summarize per model, draw the study's figures."""
    p = load_params(params_file, overrides).evaluate
    cytokine_table = tables.read(cytokines, empty_is_missing=False)
    run(cvresult.load(trained), cytokine_table, reports, metrics, p)


def summary_command(
    metrics: Path = typer.Argument(
        Path("metrics/summary.json"), help="summary.json written by `cytoops evaluate`."
    ),
    models: Path = typer.Option(
        Path("reports/models.csv"), "--models", help="models.csv written by `cytoops evaluate`."
    ),
    params_file: Path = typer.Option(
        Path("params.yaml"), "--params", help="params.yaml (evaluate.f1_cutoff)."
    ),
) -> None:
    """Print the evaluation summary as a table: kept cytokines, best model, cytokines each model predicts."""
    for path in (metrics, models):
        if not path.is_file():
            raise ValueError(f"{path} does not exist: run `dvc repro` (or `cytoops evaluate`) first")
    cutoff = load_params(params_file if params_file.is_file() else None, []).evaluate.f1_cutoff
    for line in summary_lines(json.loads(metrics.read_text()), pd.read_csv(models), cutoff):
        typer.echo(line)
    verdict_file = metrics.with_name("verdict.json")  # written by the verdict stage, when it ran
    if verdict_file.is_file():
        v = json.loads(verdict_file.read_text())
        log.info(
            f"predictable from images: {v['n_predictable']} of {v['n_kept']} cytokines "
            f"(median best AUC {v['median_auc']}, best family {v['best_family']}); reports/predictable.csv"
        )
        if "truth_morphology_found" in v:
            log.info(
                f"against the plate's truth.json (simulated): {v['truth_morphology_found']} of "
                f"{v['truth_morphology_kept']} morphology-driven cytokines found, "
                f"{v['truth_wrongly_called']} others called; details in reports/index.html"
            )
