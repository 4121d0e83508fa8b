"""Write docs/results.md from a run's own files: metrics/*.json, reports/models.csv, reports/predictable.csv.

    python scripts/results.py                    # after `make demo` (or `dvc repro`), from the repo root
    python scripts/results.py --metrics out/metrics --reports out/reports    # after `cytoops run --out out`

Nothing in docs/results.md is typed by hand: rerun this after a run and commit the page with it. It uses the
columns the files have (the verdict's table changes over time) and says which ones it did not find.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
# per-cytokine columns, in the order shown, when present: (heading, candidate column names)
# a baseline's value is shown with the baseline's name, from these columns when present
BASELINE_NAMES = {
    "best baseline F1": "best_baseline",
    "best baseline ROC AUC": "best_baseline_auc_name",
    "best image-blind ROC AUC": "best_blind",
}
CYTOKINE_COLUMNS = [
    ("cytokine", ["cytokine"]),
    ("predictable", ["predictable"]),
    ("best model", ["best_predictor", "model", "best_model"]),
    ("family", ["best_family"]),
    ("ROC AUC", ["roc_auc", "auroc", "best_roc_auc", "best_auroc"]),
    ("best image-blind ROC AUC", ["best_blind_roc_auc"]),
    ("study - profile (AUC)", ["study_vs_profile_auc_diff"]),
    ("F1", ["f1", "best_f1"]),
    ("q", ["q"]),
]


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if pd.isna(value):
            return ""
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value).replace("|", "\\|")


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def flat(d: dict, prefix: str = "") -> dict:
    """Nested metrics as dotted keys; lists of scalars kept (shown joined)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        elif not isinstance(v, list) or all(not isinstance(x, dict | list) for x in v):
            out[key] = v
    return out


def _interval(table: pd.DataFrame, column: str) -> pd.Series:
    values = table[column].map(_fmt)
    lo, hi = f"{column}_lo", f"{column}_hi"
    if lo in table.columns and hi in table.columns:
        values = values + " (" + table[lo].map(_fmt) + "-" + table[hi].map(_fmt) + ")"
    return values


def cytokine_table(predictable: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The per-cytokine table (markdown lines) and the headings whose columns were not found."""
    shown, missing = {}, []
    for heading, names in CYTOKINE_COLUMNS:
        column = next((n for n in names if n in predictable.columns), None)
        if column is None:
            missing.append(heading)
        elif heading == "best model" or column in ("model", "best_model"):
            shown[heading] = predictable[column].astype(str)
        elif heading in ("F1", "ROC AUC"):
            shown[heading] = _interval(predictable, column)
        elif BASELINE_NAMES.get(heading) in predictable.columns:
            name = predictable[BASELINE_NAMES[heading]].astype(str)
            shown[heading] = predictable[column].map(_fmt) + " (" + name + ")"
        else:
            shown[heading] = predictable[column]
    if "best model" not in shown and {"architecture", "augmentation"} <= set(predictable.columns):
        shown["best model"] = (
            predictable.architecture.astype(str) + "/" + predictable.augmentation.astype(str)
        )
        missing.remove("best model")
    order = [h for h, _ in CYTOKINE_COLUMNS if h in shown]
    frame = pd.DataFrame({h: shown[h] for h in order})
    if "predictable" in frame.columns:
        calls = frame.predictable.astype(str).str.lower().eq("true")
        frame["predictable"] = calls
        frame = frame.iloc[(~calls).argsort(kind="stable")]  # predictable first, else the file's order
    return _table(order, frame.to_numpy().tolist()), missing


def _git(*args: str, cwd: Path = REPO) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    return out.stdout.strip()


def render(metrics: Path, reports: Path, data_dvc: Path | None, settings: list[str]) -> str:
    metric_files = sorted(metrics.glob("*.json"))
    predictable_csv, models_csv = reports / "predictable.csv", reports / "models.csv"
    inputs = [p for p in [*metric_files, predictable_csv, models_csv] if p.is_file()]
    if not inputs:
        raise SystemExit(
            f"no metrics/*.json or reports/predictable.csv under {metrics} and {reports}: run first"
        )
    newest = max(p.stat().st_mtime for p in inputs)
    date = dt.datetime.fromtimestamp(newest, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # the checkout the run was made in (a clone's metrics/ name the clone's commit, not this repo's)
    commit = _git("rev-parse", "--short", "HEAD", cwd=metrics.resolve()) or "unknown"
    data_version = "untracked"
    if data_dvc is not None and data_dvc.is_file():
        import yaml

        outs = (yaml.safe_load(data_dvc.read_text()) or {}).get("outs") or [{}]
        data_version = str(outs[0].get("md5", "untracked"))
    lines = [
        "# Results",
        "",
        f"The run of **{date}** (files written then), code at commit `{commit}`, "
        f"data version `{data_version}`.",
        "Generated by `python scripts/results.py` from "
        + ", ".join(f"`{p.relative_to(p.parents[1]) if len(p.parents) > 1 else p}`" for p in inputs)
        + ": never edited by hand. How the calls are made: [statistics.md](statistics.md).",
        "",
        "Params: params.yaml's defaults"
        + (" with " + ", ".join(f"`{x}`" for x in settings) if settings else "")
        + " (as passed to this script with --set).",
        "",
        "> On the bundled demo plate these figures are about a simulation (see the README), "
        "not about the study's data.",
    ]
    for path in metric_files:
        values = flat(json.loads(path.read_text()))
        lines += ["", f"## {path.name}", ""]
        lines += _table(["metric", "value"], [[k, v] for k, v in values.items()])
    if models_csv.is_file():
        models = pd.read_csv(models_csv)
        sort = [c for c in ("n_predicted", "mean_f1") if c in models.columns]
        models = models.sort_values(sort, ascending=False) if sort else models
        keep = [c for c in ("model", "mean_f1", "mean_roc_auc", "n_predicted") if c in models.columns]
        lines += ["", "## Models (mean over kept cytokines)", ""]
        lines += _table(keep, models[keep].to_numpy().tolist())
    lines += ["", "## Per cytokine", ""]
    if predictable_csv.is_file():
        table, missing = cytokine_table(pd.read_csv(predictable_csv))
        lines += table
        if missing:
            lines += ["", f"Not in {predictable_csv.name}: {', '.join(missing)}."]
    else:
        lines += [f"No {predictable_csv} (the verdict did not run)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, default=REPO / "metrics")
    parser.add_argument("--reports", type=Path, default=REPO / "reports")
    parser.add_argument("--data-dvc", type=Path, default=REPO / "data.dvc")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "results.md")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], help="a param the run overrode"
    )
    args = parser.parse_args()
    args.out.write_text(render(args.metrics, args.reports, args.data_dvc, args.settings))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
