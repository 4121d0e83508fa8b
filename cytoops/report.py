"""report: one self-contained HTML page (reports/index.html) that says which cytokines images predict.

The answer leads: a figure of every kept cytokine's best image predictor (ROC AUC with its interval, coloured
by the call, marked by family, beside the best image-blind baseline), then the sentence "N of M cytokines
predictable from images", then the detail. Figures are also PNGs under reports/verdict/ (for `dvc plots`)
and inlined as base64, so the page opens offline. The page is a Jinja2 template (`report.html.j2`) filled
by small functions that build its rows; `write(verdict, reports)` is the entry point.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from cytoops.plate import FORMATS
from cytoops.verdict import truth
from cytoops.verdict.result import Verdict

FAMILY_MARKERS = {
    "study CNN": "s",
    "study ViT": "D",
    "profile": "o",
    "multitask CNN": "P",
    "all-wells CNN": "X",
    "cell count": "v",
}
CAUSE_COLORS = {
    "morphology": "#1b7837",
    "pathway": "#762a83",
    "position": "#b35806",
    "noise": "#4d4d4d",
    "mixed": "#2166ac",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _plt().close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _causes(v: Verdict) -> dict[str, str]:
    return dict(zip(v.truth.cytokine, v.truth.cause, strict=True)) if len(v.truth) else {}


def _order(v: Verdict) -> list[str]:
    t = v.table.sort_values(["predictable", "roc_auc"], ascending=[False, False], na_position="last")
    return list(t.cytokine)


# ---- figures ------------------------------------------------------------------------------------------


def fig_answer(v: Verdict, path: Path) -> bytes:
    """The lead figure: best image predictor per cytokine (AUC, interval), call, family, blind baseline."""
    plt = _plt()
    t = v.table.set_index("cytokine").loc[_order(v)]
    causes = _causes(v)
    fig, ax = plt.subplots(figsize=(11, 0.28 * len(t) + 1.6))
    y = np.arange(len(t))[::-1]
    for yi, (_, r) in zip(y, t.iterrows(), strict=True):
        if pd.isna(r.get("roc_auc")):
            continue
        color = "#1a9850" if r.predictable else "#999999"
        ax.plot([r.roc_auc_lo, r.roc_auc_hi], [yi, yi], color=color, lw=2, alpha=0.7)
        ax.plot(r.roc_auc, yi, FAMILY_MARKERS.get(r.best_family, "o"), color=color, ms=7)
        if pd.notna(r.get("best_blind_roc_auc")):
            ax.plot(r.best_blind_roc_auc, yi, "|", color="#d95f02", ms=11, mew=2)
    ax.axvline(0.5, color="#bbbbbb", lw=1, ls=":")
    labels = [f"{c}  ({causes[c]})" if c in causes else c for c in t.index]
    ax.set_yticks(y, labels, fontsize=8)
    for tick, c in zip(ax.get_yticklabels(), t.index, strict=True):
        tick.set_color(CAUSE_COLORS.get(causes.get(c, ""), "#000000"))
    ax.set_xlim(0.2, 1.0)
    ax.set_xlabel("ROC AUC on held-out wells (mean over folds; bar: 95% cluster-bootstrap interval)")
    handles = [
        plt.Line2D([], [], marker=m, ls="", color="#555555", label=f) for f, m in FAMILY_MARKERS.items()
    ]
    handles += [
        plt.Line2D([], [], color="#1a9850", lw=2, label="predictable from images"),
        plt.Line2D([], [], color="#999999", lw=2, label="not predictable"),
        plt.Line2D(
            [], [], marker="|", ls="", color="#d95f02", ms=11, mew=2, label="best image-blind baseline"
        ),
    ]
    ax.legend(handles=handles, fontsize=7, loc="lower right", ncol=2)
    n = int(t.predictable.sum())
    ax.set_title(
        f"{n} of {len(t)} cytokines predictable from images: best image predictor per cytokine", fontsize=10
    )
    fig.tight_layout()
    return _save(fig, path)


def fig_families(v: Verdict, path: Path) -> bytes:
    """ROC AUC of each family's best predictor, per cytokine: which family sees what."""
    plt = _plt()
    cols = [c for c in v.table.columns if c.startswith("auc_")]
    t = v.table.set_index("cytokine").loc[_order(v), cols]
    names = [c[4:].replace("_", " ") for c in cols]
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 3, 0.26 * len(t) + 1.4))
    im = ax.imshow(t.to_numpy(float), cmap="RdYlGn", vmin=0.3, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(t)), t.index, fontsize=7)
    for (i, j), val in np.ndenumerate(t.to_numpy(float)):
        if not np.isnan(val):
            ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.03, label="ROC AUC")
    ax.set_title("Best ROC AUC within each family (same folds, same test wells)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def fig_nulls(v: Verdict, path: Path, limit: int = 12) -> bytes:
    plt = _plt()
    t = v.table.set_index("cytokine")
    shown = [c for c in _order(v) if c in v.nulls][:limit]
    n = max(len(shown), 1)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax, c in zip(axes.flat, shown, strict=False):
        ax.hist(
            v.nulls[c]["null"], bins=40, range=(0.3, 1), color="#9ecae1", density=True, label="null (max)"
        )
        ax.axvline(v.nulls[c]["observed"], color="#d7301f", lw=2, label="observed (best)")
        r = t.loc[c]
        ax.set_title(f"{'* ' if r.predictable else ''}{c}: p {r.p:.2g}, q {r.q:.2g}", fontsize=8)
        ax.set_yticks([])
        ax.set_xlabel("max mean ROC AUC over image predictors", fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(
        "Null distributions: labels permuted within plate x fold x ring (red: observed)", fontsize=10
    )
    fig.tight_layout()
    return _save(fig, path)


def plate_shape(wells: pd.DataFrame) -> tuple[int, int]:
    """(rows, columns) of the smallest plate format that holds these wells."""
    rows, cols = int(wells.row.max()) + 1, int(wells.col.max()) + 1
    for r, c in sorted(FORMATS.values()):
        if rows <= r and cols <= c:
            return r, c
    return rows, cols


def maps_cytokines(v: Verdict, limit: int) -> list[str]:
    """Cytokines of interest: those called first, then the rest by AUC."""
    t = v.table[v.table.get("best_predictor", pd.Series(dtype=str)).notna()]
    return list(t.sort_values(["predictable", "roc_auc"], ascending=[False, False]).cytokine[:limit])


def fig_plate_maps(v: Verdict, cytokines: list[str], path: Path) -> bytes:
    """Per cytokine and plate: out-of-fold probability of the best model and its errors on the plate grid."""
    plt = _plt()
    from matplotlib.colors import ListedColormap

    wells = v.wells
    n_rows, n_cols = plate_shape(wells)
    plates = list(dict.fromkeys(wells.plate.astype(str)))
    t = v.table.set_index("cytokine")
    panels = [(c, p) for c in cytokines for p in plates]
    fig, axes = plt.subplots(max(len(panels), 1), 2, figsize=(12, 2.9 * max(len(panels), 1)), squeeze=False)
    err_cmap = ListedColormap(["#f7f7f7", "#2166ac", "#b2182b"])
    edge_mask = None
    for (c, plate), (ax_p, ax_e) in zip(panels, axes, strict=False):
        r = t.loc[c]
        arch, aug = str(r.best_predictor).split("/", 1)
        pr = v.predictions[
            (v.predictions.cytokine == c)
            & (v.predictions.architecture == arch)
            & (v.predictions.augmentation == aug)
            & (v.predictions.plate.astype(str) == plate)
        ]
        per_well = pr.groupby("well_index").agg(prob=("prob", "mean"), label=("label", "first"))
        prob = np.full((n_rows, n_cols), np.nan)
        err = np.full((n_rows, n_cols), np.nan)
        lab = np.full((n_rows, n_cols), np.nan)
        rows_, cols_ = wells.row.to_numpy()[per_well.index], wells.col.to_numpy()[per_well.index]
        prob[rows_, cols_] = per_well.prob
        lab[rows_, cols_] = per_well.label
        call = (per_well.prob >= 0.5).astype(int).to_numpy()
        err[rows_, cols_] = np.where(call == per_well.label.to_numpy(), 0, np.where(call == 1, 1, 2))
        pw = wells[wells.plate.astype(str) == plate]
        edge_mask = np.zeros((n_rows, n_cols), bool)
        edge_mask[pw.row.to_numpy(), pw.col.to_numpy()] = pw.edge.to_numpy(bool)
        im = ax_p.imshow(np.ma.masked_invalid(prob), cmap="viridis", vmin=0, vmax=1)
        ry, rx = np.nonzero(lab == 1)
        ax_p.scatter(rx, ry, s=9, facecolors="none", edgecolors="white", linewidths=0.8)
        fig.colorbar(im, ax=ax_p, fraction=0.025, pad=0.01)
        ax_e.imshow(np.ma.masked_invalid(err), cmap=err_cmap, vmin=-0.5, vmax=2.5)
        for ax in (ax_p, ax_e):
            ax.set_facecolor("#d9d9d9")
            ey, ex = np.nonzero(edge_mask)
            ax.scatter(ex, ey, s=2, c="#ff7f00", marker=".")
            ax.set_xticks(range(0, n_cols, 2), [str(k + 1) for k in range(0, n_cols, 2)], fontsize=6)
            ax.set_yticks(
                range(n_rows),
                [chr(65 + k) if k < 26 else "A" + chr(65 + k - 26) for k in range(n_rows)],
                fontsize=6,
            )
        ax_p.set_title(
            f"{c} ({plate}): out-of-fold P(responder), {r.best_predictor}; circles = responders",
            fontsize=8,
        )
        ax_e.set_title(
            f"{c}: errors (blue = false responder, red = missed responder, pale = right)", fontsize=8
        )
    if not panels:
        for ax in axes.flat:
            ax.axis("off")
    fig.suptitle("Plate maps (grey: well not used for this cytokine; orange dots: edge wells)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    return _save(fig, path)


# ---- page ---------------------------------------------------------------------------------------------


def _fmt(x, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "&ndash;"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{x:.{digits}g}" if abs(x) < 0.01 and x != 0 else f"{x:.{digits}f}"
    return html.escape(str(x))


def _ci(value, lo, hi) -> str:
    if value is None or pd.isna(value):
        return "&ndash;"
    if lo is None or pd.isna(lo):
        return f"{value:.2f}"
    return f"{value:.2f} <span class=ci>[{lo:.2f}, {hi:.2f}]</span>"


def _diff(r: pd.Series, name: str) -> str:
    return _ci(r.get(f"{name}_auc_diff"), r.get(f"{name}_lo"), r.get(f"{name}_hi"))


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1250px;margin:2em auto;
padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.82em;margin:.6em 0}th,td{border:1px solid #ddd;padding:3px 6px;
text-align:left;vertical-align:top}th{background:#f3f3f3}tr.yes{background:#e5f5e0}tr.wrong{background:#fde0dd}
.ci{color:#777;font-size:.9em}
.banner{background:#fff3cd;border:1px solid #e0c36a;padding:.8em 1em;margin:1em 0}
.answer{background:#eef5fb;border-left:5px solid #2171b5;padding:.8em 1em}img{max-width:100%}
.small{font-size:.85em;color:#555}code{background:#f5f5f5;padding:0 3px}
"""


def verdict_rows(v: Verdict) -> list[dict]:
    """One dict of display cells per kept cytokine, in the answer's order."""
    causes = _causes(v)
    t = v.table.set_index("cytokine")
    rows = []
    for c in _order(v):
        r = t.loc[c]
        rows.append(
            {
                "cls": "yes" if r.predictable else "",
                "cytokine": html.escape(c),
                "cause": html.escape(causes.get(c, "")),
                "predictable": "yes" if r.predictable else "no",
                "q": _fmt(r.get("q"), 2),
                "best": html.escape(
                    str(r.get("best_predictor", "")) if pd.notna(r.get("best_predictor")) else ""
                ),
                "family": html.escape(
                    str(r.get("best_family", "")) if pd.notna(r.get("best_family")) else ""
                ),
                "auc": _ci(r.get("roc_auc"), r.get("roc_auc_lo"), r.get("roc_auc_hi")),
                "lopo": _ci(r.get("lopo_roc_auc"), r.get("lopo_lo"), r.get("lopo_hi")),
                "blind": f"{html.escape(str(r.get('best_blind', '')))} {_fmt(r.get('best_blind_roc_auc'))}",
                "study_vs_profile": _diff(r, "study_vs_profile"),
                "vs_embeddings": _diff(r, "best_vs_embeddings"),
                "vs_cell_count": _diff(r, "best_vs_cell_count"),
                "reason": html.escape(str(r.get("reason", ""))),
            }
        )
    return rows


def lopo_plates(v: Verdict) -> int:
    """Plates of the leave-one-plate-out estimate (0 when there is none: one plate)."""
    if v.lopo.empty:
        return 0
    return int(v.wells.plate.astype(str).nunique())


def truth_rows(v: Verdict) -> list[dict]:
    wrong = truth.TRUTH_WRONG
    return [
        {
            "cls": "wrong" if r.outcome == wrong else ("yes" if r.outcome == truth.TRUTH_FOUND else ""),
            **{k: html.escape(str(getattr(r, k))) for k in ("cytokine", "cause", "driver", "outcome")},
        }
        for r in v.truth.itertuples()
    ]


def frame_rows(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    return [html.escape(str(c)) for c in frame.columns], [
        [_fmt(x, 3) for x in row] for row in frame.itertuples(index=False)
    ]


def write(v: Verdict, reports: Path) -> Path:
    """reports/index.html (self-contained) and the figures as PNGs under reports/verdict/."""
    import jinja2

    detail = reports / "verdict"
    detail.mkdir(parents=True, exist_ok=True)
    figures = {
        "answer": fig_answer(v, detail / "answer.png"),
        "families": fig_families(v, detail / "auc_by_family.png"),
        "nulls": fig_nulls(v, detail / "null_distributions.png"),
    }
    maps = maps_cytokines(v, int(v.params.get("heatmaps", 6)))
    if maps:
        figures["maps"] = fig_plate_maps(v, maps, detail / "plate_maps.png")
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cytoops", "templates"),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
    )
    t = v.table
    called = t[t.predictable]
    hyp_head, hyp_rows = frame_rows(
        v.hypotheses[[c for c in ("claim", "test", "p", "n", "detail", "skipped") if c in v.hypotheses]]
    )
    page = env.get_template("report.html.j2").render(
        css=CSS,
        n_called=len(called),
        n_kept=len(t),
        called=", ".join(html.escape(c) for c in called.cytokine) or "none",
        alpha=v.params["alpha"],
        n_perm=v.params["n_perm"],
        level=int(100 * v.params["level"]),
        figures={k: _img(data, k) for k, data in figures.items()},
        rows=verdict_rows(v),
        lopo_plates=lopo_plates(v),
        truth=truth_rows(v),
        truth_summary=truth.truth_summary(v.truth),
        hyp_head=hyp_head,
        hyp_rows=hyp_rows,
        notes=[html.escape(n) for n in v.notes],
        timing=v.timing,
    )
    out = reports / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
