"""report: one self-contained HTML page (reports/index.html) that says which cytokines images predict.

Every figure is also written as a PNG under reports/verdict/ (for `dvc plots`) and inlined in the page as
base64, so the page can be mailed or opened offline. `write(verdict, reports)` is the entry point.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from cytoops import verdict as verdict_mod

CAUSE_COLORS = {
    "morphology": "#1b7837",
    "pathway": "#762a83",
    "position": "#b35806",
    "noise": "#4d4d4d",
    "rare": "#999999",
    "mixed": "#2166ac",
    "unknown": "#000000",
}
BASELINE_STYLE = {
    "prevalence": ("#9e9e9e", "|"),
    "image_features": ("#1f78b4", "s"),
    "position": ("#e66101", "^"),
    "embeddings": ("#6a3d9a", "D"),
}
BASELINE_TEXT = {
    "prevalence": 'always "responder" (on balanced wells F1 is about 0.67 for free)',
    "image_features": "logistic regression on a nucleus count and the mean intensity of each channel",
    "position": "logistic regression on the well's row, column, edge flag and distance from the plate centre",
    "embeddings": "logistic regression on the plate's embeddings.csv (the study's Part 1 approach)",
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


def _causes(v: verdict_mod.Verdict) -> dict[str, str]:
    return dict(zip(v.truth.cytokine, v.truth.cause, strict=True)) if len(v.truth) else {}


def _order(v: verdict_mod.Verdict) -> list[str]:
    t = v.table.sort_values(["predictable", "f1"], ascending=[False, False], na_position="last")
    return list(t.cytokine)


# ---- figures ------------------------------------------------------------------------------------------


def fig_model_vs_baselines(v: verdict_mod.Verdict, path: Path) -> bytes:
    plt = _plt()
    t = v.table.set_index("cytokine")
    order = _order(v)[::-1]
    causes = _causes(v)
    summ = v.summary[v.summary.architecture == verdict_mod.BASELINE_ARCH]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.28 * len(order) + 1.8), sharey=True)
    y = np.arange(len(order))
    for ax, metric in zip(axes, ["f1", "roc_auc"], strict=True):
        vals = t.reindex(order)
        lo, hi = vals.get(f"{metric}_lo"), vals.get(f"{metric}_hi")
        if lo is not None:
            ax.errorbar(
                vals[metric],
                y,
                xerr=[vals[metric] - lo, hi - vals[metric]],
                fmt="o",
                color="black",
                ms=5,
                lw=1,
                capsize=2,
                label="best image model (95% interval)",
                zorder=3,
            )
        for name, (color, marker) in BASELINE_STYLE.items():
            b = summ[summ.augmentation == name].set_index("cytokine")[metric].reindex(order)
            if b.notna().any():
                ax.scatter(
                    b, y, marker=marker, color=color, s=28, alpha=0.85, label=f"baseline: {name}", zorder=2
                )
        ax.axvline(0.5, color="#cccccc", lw=0.8, zorder=0)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel({"f1": "F1 (mean over folds)", "roc_auc": "ROC AUC (mean over folds)"}[metric])
        ax.grid(axis="x", color="#eeeeee")
    labels = [f"{'* ' if bool(t.loc[c, 'predictable']) else ''}{c}" for c in order]
    axes[0].set_yticks(y, labels, fontsize=8)
    for tick, c in zip(axes[0].get_yticklabels(), order, strict=True):
        tick.set_color(CAUSE_COLORS.get(causes.get(c, "unknown"), "black"))
        if bool(t.loc[c, "predictable"]):
            tick.set_fontweight("bold")
    axes[1].legend(fontsize=7, loc="lower right")
    title = "Best image model vs baselines on the same folds (* = called predictable)"
    if causes:
        title += "\nlabel colour = simulated cause: " + ", ".join(
            f"{k}" for k in CAUSE_COLORS if k in set(causes.values())
        )
    fig.suptitle(title, fontsize=10)
    if causes:
        from matplotlib.patches import Patch

        handles = [Patch(color=CAUSE_COLORS[k], label=k) for k in CAUSE_COLORS if k in set(causes.values())]
        axes[0].legend(
            handles=handles, fontsize=7, loc="lower left", title="truth (simulated)", title_fontsize=7
        )
    fig.tight_layout()
    return _save(fig, path)


def fig_by(v: verdict_mod.Verdict, by: str, path: Path) -> bytes:
    """The study's Figure 5 (by augmentation) or 6 (by architecture): F1 per cytokine, boxes and dots."""
    plt = _plt()
    models = v.summary[v.summary.architecture != verdict_mod.BASELINE_ARCH]
    means = models.groupby([by, "cytokine"], as_index=False).f1.mean()
    levels = list(dict.fromkeys(models[by]))
    fig, ax = plt.subplots(figsize=(1.5 * max(len(levels), 2) + 2.5, 4.5))
    data = [means.loc[means[by] == lv, "f1"].to_numpy() for lv in levels]
    if levels:
        ax.boxplot(data, widths=0.5, showfliers=False)
        rng = np.random.default_rng(0)
        predictable = set(v.table.cytokine[v.table.predictable])
        for i, lv in enumerate(levels, start=1):
            g = means[means[by] == lv]
            colors = ["#d7301f" if c in predictable else "#636363" for c in g.cytokine]
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(g)), g.f1, s=12, c=colors, alpha=0.7)
        ax.set_xticks(range(1, len(levels) + 1), levels, rotation=20)
    prev = v.summary[
        (v.summary.architecture == verdict_mod.BASELINE_ARCH) & (v.summary.augmentation == "prevalence")
    ]
    if len(prev):
        ax.axhline(prev.f1.median(), ls="--", color="#9e9e9e", lw=1)
        ax.text(0.55, prev.f1.median() + 0.01, "always 'responder'", fontsize=7, color="#757575")
    other = "architectures" if by == "augmentation" else "augmentations"
    fig_no = "5" if by == "augmentation" else "6"
    ax.set_ylabel(f"F1 per cytokine (mean over folds and {other})")
    ax.set_ylim(-0.02, 1.02)
    h = v.hypotheses
    key = "augmentation" if by == "augmentation" else None
    note = ""
    if key is not None and len(h) and (h.hypothesis == key).any():
        r = h[h.hypothesis == key].iloc[0]
        note = f"\n{r.test}: p = {r.p:.3g}" if not r.skipped else f"\n{r.skipped}"
    ax.set_title(f"F1 by {by} (the study's Figure {fig_no}); red = called predictable{note}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def stat_name(vp: dict) -> str:
    """How the report names the verdict's statistic (params from older runs have none: F1)."""
    return {"roc_auc": "ROC AUC", "f1": "F1"}[vp.get("statistic", "f1")]


def fig_nulls(v: verdict_mod.Verdict, path: Path, limit: int = 12) -> bytes:
    plt = _plt()
    stat = stat_name(v.params)
    t = v.table.set_index("cytokine")
    shown = [c for c in _order(v) if c in v.nulls][:limit]
    n = max(len(shown), 1)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax, c in zip(axes.flat, shown, strict=False):
        nl = v.nulls[c]
        ax.hist(
            nl["conditional"],
            bins=40,
            range=(0, 1),
            color="#9ecae1",
            density=True,
            label="null: labels permuted (max over models)",
        )
        if "refit" in nl and len(nl["refit"]):
            ax.plot(
                nl["refit"],
                np.full(len(nl["refit"]), 0.3),
                "|",
                color="#08519c",
                ms=12,
                label=f"null: refit {nl.get('refit_model', '')}",
            )
            ax.axvline(nl["refit_observed"], color="#08519c", ls=":", lw=1.2)
        ax.axvline(nl["observed"], color="#d7301f", lw=2, label="observed (best model)")
        r = t.loc[c]
        extra = f", refit p {r.p_refit:.2g}" if pd.notna(r.get("p_refit")) else ""
        ax.set_title(
            f"{'* ' if r.predictable else ''}{c}: p {r.p_conditional:.2g}, q {r.q:.2g}{extra}", fontsize=8
        )
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.set_xlabel(f"mean {stat}", fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(
        f"Null distributions: {stat} the grid reaches when labels carry no information (red: observed)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def fig_curves(v: verdict_mod.Verdict, cytokines: list[str], path: Path) -> bytes:
    plt = _plt()
    t = v.table.set_index("cytokine")
    shown = [c for c in cytokines if c in t.index and pd.notna(t.loc[c, "architecture"])][:6]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), squeeze=False)
    curves = v.curves
    for ax, c in zip(axes.flat, shown, strict=False):
        r = t.loc[c]
        g = (
            curves[
                (curves.architecture == r.architecture)
                & (curves.augmentation == r.augmentation)
                & (curves.cytokine == c)
            ]
            if len(curves)
            else curves
        )
        for (rep, fold), h in g.groupby(["repeat", "fold"]) if len(g) else []:
            line = ax.plot(h.epoch, h.loss, label=f"train r{rep} f{fold}")[0]
            ax.plot(h.epoch, h.val_loss, "--", color=line.get_color(), label=f"validation r{rep} f{fold}")
        ax.set_title(f"{c}: {r.architecture}/{r.augmentation} (F1 {r.f1:.2f})", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    if shown:
        axes.flat[0].legend(fontsize=6)
    fig.suptitle(
        "Learning curves of the best model (solid: training, dashed: validation split of the training fold)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def plate_shape(wells: pd.DataFrame) -> tuple[int, int]:
    rows, cols = int(wells.row.max()) + 1, int(wells.col.max()) + 1
    for r, c in ((8, 12), (16, 24), (32, 48)):
        if rows <= r and cols <= c:
            return r, c
    return rows, cols


def maps_cytokines(v: verdict_mod.Verdict, limit: int) -> list[str]:
    """Cytokines of interest: those called, then those a position baseline predicts best, then by F1."""
    t = v.table[v.table.architecture.notna()]
    called = list(t.sort_values("f1", ascending=False).cytokine[t.predictable])
    pos = t[(t.best_baseline == "position")].sort_values("best_baseline_f1", ascending=False).cytokine
    rest = t.sort_values("f1", ascending=False).cytokine
    out: list[str] = []
    for c in [*called[: max(limit - 2, 1)], *pos[:2], *called, *rest]:
        if c not in out:
            out.append(c)
    return out[:limit]


def fig_plate_maps(v: verdict_mod.Verdict, cytokines: list[str], path: Path) -> bytes:
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
        pr = v.predictions[
            (v.predictions.cytokine == c)
            & (v.predictions.architecture == r.architecture)
            & (v.predictions.augmentation == r.augmentation)
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
        edge_mask[pw.row.to_numpy(), pw.col.to_numpy()] = (
            pw.edge.astype(str).str.lower().eq("true").to_numpy()
        )
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
            f"{c} ({plate}): out-of-fold P(responder), {r.architecture}/{r.augmentation}; "
            "circles = responders",
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


def _ci(r, metric: str) -> str:
    val, lo, hi = r.get(metric), r.get(f"{metric}_lo"), r.get(f"{metric}_hi")
    if val is None or pd.isna(val):
        return "&ndash;"
    if lo is None or pd.isna(lo):
        return f"{val:.2f}"
    return f"{val:.2f} <span class=ci>[{lo:.2f}, {hi:.2f}]</span>"


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(frame: pd.DataFrame, columns: dict[str, str], row_class=None) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for label in columns.values())
    body = []
    for _, r in frame.iterrows():
        cls = f' class="{row_class(r)}"' if row_class else ""
        cells = "".join(
            f"<td>{r[k] if isinstance(r[k], str) and k.startswith('_') else _fmt(r[k], 3)}</td>"
            for k in columns
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


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


HOW_TO_READ = """
<h2>How to read this</h2><ul>
<li><b>F1</b> (the study's score) is computed at P &ge; 0.5 on the wells of each held-out fold, then averaged
over folds (and repeats). Classes are balanced, so <b>always answering "responder" already gives
F1 &asymp; 0.67</b>: F1 alone says little. <b>ROC AUC</b> is 0.5 for a coin and 1 for a perfect ranking;
<b>AUPRC</b> is to be read beside the prevalence (its value for a coin); <b>MCC</b> is 0 for a coin and 1 for
perfect calls.</li>
<li>Brackets are {level}% intervals: a cluster bootstrap that resamples treatment groups within each test fold
({n_boot} draws, shared by all models so that comparisons are paired). They show how much a score would move
with other wells of the same kind; with 20 to 80 test wells per fold they are wide.</li>
<li><b>Baselines</b>, fitted on the training fold only, on exactly the folds the image models used:
{baselines}</li>
<li><b>p</b>: how often the grid's best model does as well when the labels are shuffled (see Method);
<b>q</b>: Benjamini-Hochberg across the {n_kept} kept cytokines (it bounds the expected share of false calls).
</li></ul>
"""

WHY_STAT = {
    "roc_auc": "it asks whether a model ranks responders above non-responders, whatever its threshold "
    "(F1 of calls at 0.5 also asks whether 0.5 suits the held-out fold; on the demo plate deep_cnn/flips "
    "reaches ROC AUC 0.84 on IL-1&alpha; with F1 0.00). Measured on the demo plates of seeds 0 and 1, it "
    "calls more morphology-driven cytokines than F1 (2 and 1 against 0 and 1) and also noise- or "
    "pathway-driven ones (1 and 3 against none): read its calls with the truth and the baselines in view.",
    "f1": "it is the study's metric, and on the demo plates of seeds 0 and 1 it called no noise-, position- "
    "or pathway-driven cytokine (ROC AUC, the other choice, called 1 and 3). It is a weak statistic: F1 of "
    "calls at 0.5 depends on 0.5 suiting the held-out fold (folds keep treatment groups whole, so their "
    "shares of responders differ), and the always-responder scores ~0.67 on balanced wells.",
}

METHOD = """
<h2>Method</h2><ul>
<li><b>The test behind the call ({test}).</b> Conditional permutation test: every model's out-of-fold calls
are held fixed and the labels of each held-out fold are shuffled; in each of {n_perm} permutations the
statistic is recomputed as the best mean {stat} over <i>all</i> models of the grid (max-T), so choosing the
best model of the grid is paid for. Under "the images carry no information about the label" a fold's calls
come from a model that never saw that fold's labels, so shuffling them is exact. p = (b + 1) / (n + 1),
where b permutations reach the observed {stat}: its floor is {floor:.1e}. BH at {alpha} over {n_kept}
cytokines needs p &le; {alpha}&middot;k/{n_kept} for the k-th smallest p (k = 1: {bh_first:.2g});
{floor_text}.</li>
<li><b>Exchangeability.</b> Labels move only within a plate and by treatment group, the unit the folds keep
together: groups with the same number of wells swap their label vectors whole (and the wells within a group
are shuffled); groups of a size no other group has are pooled and shuffled well by well. Without a layout
every well is its own group, and this is a within-plate well shuffle. Shuffling single wells across
treatments would break the clustering of labels by treatment and make the null too narrow.</li>
<li><b>Refit check: the whole fit repeated.</b> For the cytokines in scope (<code>refit_scope: {refit_scope}
</code>) the labels are shuffled by the same rule and the best architecture, with its {refit_augmentation}
augmentation, is cross-validated again through <code>train.cross_validate</code> with the same params and
seeds (the folds are re-made by the same seeded stratified, grouped rule on the shuffled labels); the
observed {stat} of this check is that model refitted on the real labels in the same process as its nulls.
{n_perm_cnn} permutations for a CNN (p floor {refit_floor:.2g}), {n_perm_vit} for a ViT head; a cytokine
stops after {stop_after} null values reach the observed (p then only errs high). This test refits the chosen
model only, so it does not pay for choosing it, and its floor is too high to pass BH across all cytokines:
it is a check here. <code>--set verdict.test=refit --set verdict.refit_scope=candidates
--set verdict.refit_max=0 --set verdict.n_perm_cnn=999</code> makes it the test behind the call, at about
n_perm_cnn CV fits per candidate cytokine.</li>
<li><b>The call:</b> q &lt; {alpha} and the best image model (by mean {stat}) beats every baseline on {beat}
(strictly greater). Why {stat}: {why_stat} A cytokine without a p counts as p = 1 in BH.</li>
<li><b>A trace in the images</b> (the column of that name): the same conditional test, max-T over every
image-derived predictor (image models, image-feature and embeddings baselines), BH across the cytokines,
and the best of them must beat the baselines that see no image (prevalence, position) by the same rule. It
separates "the images carry no information" from "the information is there but the image models miss it".</li>
<li>Time spent: {timing}.</li>{notes}</ul>
"""


def write(v: verdict_mod.Verdict, reports: Path) -> Path:
    """Draw the figures (reports/verdict/*.png) and write reports/index.html with all of them inlined."""
    reports = Path(reports)
    detail = reports / "verdict"
    detail.mkdir(parents=True, exist_ok=True)
    t = v.table
    interest = maps_cytokines(v, int(v.params.get("heatmaps", 6)))
    figs = {
        "model_vs_baselines": fig_model_vs_baselines(v, detail / "model_vs_baselines.png"),
        "nulls": fig_nulls(v, detail / "null_distributions.png"),
        "fig5": fig_by(v, "augmentation", detail / "f1_by_augmentation.png"),
        "fig6": fig_by(v, "architecture", detail / "f1_by_architecture.png"),
        "curves": fig_curves(v, interest, detail / "learning_curves.png"),
        "maps": fig_plate_maps(v, interest, detail / "plate_maps.png"),
    }
    wide = t[["cytokine", "f1"]].rename(columns={"f1": "best_model_f1"})
    for name in verdict_mod.BASELINES:
        if f"{name}_f1" in t:
            wide[f"{name}_f1"] = t[f"{name}_f1"]
    wide.to_csv(detail / "model_vs_baselines.csv", index=False)

    vp = v.params
    n_kept, called = len(t), list(t.cytokine[t.predictable])
    plates = sorted(v.wells.plate.astype(str).unique())
    archs = sorted(set(v.summary.architecture) - {verdict_mod.BASELINE_ARCH})
    augs = sorted(set(v.summary[v.summary.architecture != verdict_mod.BASELINE_ARCH].augmentation))
    bases = sorted(set(v.summary[v.summary.architecture == verdict_mod.BASELINE_ARCH].augmentation))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>cytoops verdict</title>"
        f"<style>{CSS}</style></head><body>",
        "<h1>Is a cytokine predictable from the well images?</h1>",
        f"<p class=small>Plates: {html.escape(', '.join(plates))}; {len(v.wells)} wells; "
        f"{n_kept} cytokines kept; "
        f"models: {html.escape(', '.join(archs))} x {html.escape(', '.join(augs))}; baselines: "
        f"{html.escape(', '.join(bases))}.</p>",
    ]
    if len(v.truth):
        parts.append(
            "<div class=banner><b>SIMULATED PLATE.</b> The plate folder carries <code>truth.json</code>: "
            "it was generated with known causes (<code>cytoops demo-plate</code>). Every number on this page "
            "is about that simulation, never about the study's own plate.</div>"
        )
    listing = ", ".join(html.escape(c) for c in called) or "none"
    parts.append(
        f"<div class=answer><b>{len(called)} of {n_kept}</b> kept cytokines are called predictable from "
        f"images: {listing}.<br><span class=small>Called when the permutation test's BH q-value is below "
        f"{vp['alpha']} <i>and</i> the best image model beats every baseline on "
        f"{_beat_text(vp['beat_on'])}.</span>"
    )
    if "signal_in_images" in t:
        sig = t[t.signal_in_images.astype(bool)]
        only = sig[~sig.predictable.astype(bool)]
        named = ", ".join(
            f"{html.escape(r.cytokine)} ({html.escape(str(r.image_predictor))})" for r in sig.itertuples()
        )
        parts.append(
            f"<br><b>{len(sig)} of {n_kept}</b> cytokines leave a trace in the images at all: "
            f"{named or 'none'}"
            f"<br><span class=small>(the best image-derived predictor, image models or the image-feature and "
            f"embeddings baselines, passes the same test against the baselines that see no image: prevalence "
            f"and position). {len(only)} of them are not called predictable: the images show them, but the "
            f"image models add nothing to a simple read-out.</span>"
        )
    ts = verdict_mod.truth_summary(v.truth)
    if ts:
        wrong = ", ".join(f"{html.escape(c)} ({k})" for c, k in ts["wrongly_called"].items()) or "none"
        parts.append(
            f"<br><b>Against the simulated truth:</b> {ts['morphology_found']} of {ts['morphology_kept']} "
            f"morphology-driven cytokines found; wrongly called: {wrong}. A trace in the images: "
            f"{ts['morphology_with_signal_in_images']} of {ts['morphology_kept']} morphology-driven, and "
            f"{', '.join(ts['signal_in_images_not_morphology']) or 'no'} other cytokines."
        )
    parts.append("</div>")
    parts.append(
        HOW_TO_READ.format(
            level=int(100 * vp["level"]),
            n_boot=vp["n_boot"],
            n_kept=n_kept,
            baselines="".join(f"<br>&bull; <i>{b}</i>: {BASELINE_TEXT[b]}" for b in bases),
        )
    )
    # verdict table
    tt = t.copy()
    causes = _causes(v)
    tt["_model"] = [
        f"{a}/{g}" if isinstance(a, str) else "&ndash;"
        for a, g in zip(tt.architecture, tt.augmentation, strict=True)
    ]
    tt["_f1"] = [_ci(r, "f1") for _, r in tt.iterrows()]
    tt["_auc"] = [_ci(r, "roc_auc") for _, r in tt.iterrows()]
    tt["_ap"] = [
        f"{_ci(r, 'average_precision')} <span class=ci>(prevalence {_fmt(r.get('prevalence'))})</span>"
        for _, r in tt.iterrows()
    ]
    tt["_mcc"] = [_ci(r, "mcc") for _, r in tt.iterrows()]
    tt["_base"] = [
        f"{html.escape(str(r.best_baseline))} "
        + _ci(
            {
                "f1": r.best_baseline_f1,
                "f1_lo": r.get("best_baseline_f1_lo"),
                "f1_hi": r.get("best_baseline_f1_hi"),
            },
            "f1",
        )
        if isinstance(r.get("best_baseline"), str)
        else "&ndash;"
        for _, r in tt.iterrows()
    ]
    tt["_signal"] = [
        f"yes: {html.escape(str(r.get('image_predictor')))}" if bool(r.get("signal_in_images")) else "no"
        for _, r in tt.iterrows()
    ]
    tt["_auc_base"] = [
        f"{html.escape(str(r.best_baseline_auc_name))} {_fmt(r.best_baseline_roc_auc)}"
        if isinstance(r.get("best_baseline_auc_name"), str)
        else "&ndash;"
        for _, r in tt.iterrows()
    ]
    tt["_reason"] = [html.escape(str(r)) for r in tt.reason]
    tt["_cause"] = [html.escape(causes.get(c, "")) for c in tt.cytokine]
    tt = tt.set_index("cytokine").loc[_order(v)].reset_index()
    columns = {
        "cytokine": "cytokine",
        "predictable": "predictable",
        "_model": "best model",
        "_f1": "F1 [95%]",
        "_auc": "ROC AUC",
        "_ap": "AUPRC",
        "_mcc": "MCC",
        "_base": "best baseline (F1)",
        "_auc_base": "best baseline (AUC)",
        "p": "p",
        "q": "q",
        "p_refit": "refit p",
        "_signal": "trace in the images",
        "_reason": "why",
    }
    if causes:
        columns = {
            "cytokine": "cytokine",
            "_cause": "truth (simulated)",
            **{k: c for k, c in columns.items() if k != "cytokine"},
        }

    def row_class(r):
        if causes and r.predictable and causes.get(r.cytokine) != "morphology":
            return "wrong"
        return "yes" if r.predictable else ""

    parts.append("<h2>The verdict, cytokine by cytokine</h2>")
    parts.append(_table(tt, columns, row_class))
    parts.append(
        "<p class=small>Also in <code>reports/predictable.csv</code>; every model and baseline with its "
        "interval in <code>reports/verdict/models_and_baselines.csv</code>.</p>"
    )
    parts.append(
        "<h2>Image models against the baselines</h2>" + _img(figs["model_vs_baselines"], "model vs baselines")
    )
    parts.append(
        "<p class=small>A cytokine a position baseline predicts as well as the images is a plate artefact "
        "(e.g. evaporation at the edge), not biology the images see; one the image-feature baseline predicts "
        "as well is visible in the images but needs no deep model.</p>"
    )
    parts.append("<h2>Null distributions</h2>" + _img(figs["nulls"], "null distributions"))
    parts.append(
        f"<p class=small>Light blue: the best mean {stat_name(vp)} of the whole grid when the held-out "
        "labels "
        "are shuffled (max over all models: the choice of the best model is part of the null). Dark ticks: "
        "the best architecture cross-validated again on shuffled labels (refit), where run; dotted line: "
        "that model's "
        f"observed {stat_name(vp)}.</p>"
    )
    parts.append("<h2>The study's claims, tested</h2>")
    h = v.hypotheses.copy()
    h["_p"] = [_fmt(x, 3) for x in h.p]
    parts.append(
        _table(
            h,
            {
                "hypothesis": "hypothesis",
                "claim": "claim",
                "test": "test",
                "statistic": "statistic",
                "p": "p",
                "p_adjusted": "p (Holm)",
                "n": "cytokines",
                "detail": "detail",
                "skipped": "skipped because",
            },
        )
    )
    parts.append(
        "<p class=small>Each cytokine is one paired observation (its mean F1). A large p for the "
        "augmentation "
        "claim is absence of evidence, not proof that the strategies are equivalent.</p>"
    )
    parts.append(
        "<h2>F1 by augmentation and by architecture (the study's Figures 5 and 6)</h2>"
        + _img(figs["fig5"], "figure 5")
        + _img(figs["fig6"], "figure 6")
    )
    parts.append("<h2>Learning curves</h2>" + _img(figs["curves"], "learning curves"))
    parts.append("<h2>Plate maps of predictions and errors</h2>" + _img(figs["maps"], "plate maps"))
    if len(v.truth):
        tr = v.truth.copy()
        parts.append("<h2>Scored against the simulated truth</h2>")
        parts.append(
            "<p>Only <i>morphology</i>-driven cytokines have a visible cause; <i>pathway</i> ones have none, "
            "<i>position</i> ones follow the plate edge and <i>noise</i> ones nothing at all: calling any of "
            "those is a false discovery. One caveat: the balanced non-responders of a pathway cytokine are "
            "drawn from all other wells, many of them changed by morphology-active compounds, while its "
            "responders are wells of compounds that hit the pathway only; so its responders can be told "
            "apart by the <i>absence</i> of a phenotype. Such a call is an association the images really "
            "carry, but not the cause.</p>"
        )
        parts.append(
            _table(
                tr,
                {c: c for c in tr.columns},
                lambda r: (
                    "wrong"
                    if r.outcome == verdict_mod.TRUTH_WRONG
                    else ("yes" if r.outcome == verdict_mod.TRUTH_FOUND else "")
                ),
            )
        )
    parts.append(_method(v))
    parts.append("</body></html>")
    page = reports / "index.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page


def _beat_text(rule: str) -> str:
    return {
        "both": "mean F1 and mean ROC AUC",
        "f1": "mean F1",
        "roc_auc": "mean ROC AUC",
        "either": "mean F1 or mean ROC AUC",
    }[rule]


def _method(v: verdict_mod.Verdict) -> str:
    vp = v.params
    n_kept = len(v.table)
    floor = 1 / (vp["n_perm"] + 1)
    k_needed = max(1, int(np.ceil(floor * n_kept / vp["alpha"] - 1e-9)))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in v.notes)
    timing = ", ".join(f"{k.replace('_s', '')} {s:.0f} s" for k, s in v.timing.items())
    refit_floor = 1 / (vp["n_perm_cnn"] + 1) if vp["n_perm_cnn"] else float("nan")
    return METHOD.format(
        stat=stat_name(vp),
        why_stat=WHY_STAT[vp.get("statistic", "f1")],
        test=html.escape(vp["test"]),
        n_perm=vp["n_perm"],
        floor=floor,
        alpha=vp["alpha"],
        n_kept=n_kept,
        floor_text=(
            "so a single cytokine at the floor can be called"
            if k_needed <= 1
            else f"at the floor, a call needs at least {k_needed} cytokines there"
        ),
        bh_first=vp["alpha"] / max(n_kept, 1),
        refit_scope=html.escape(vp["refit_scope"]),
        refit_augmentation=html.escape(vp["refit_augmentation"]),
        n_perm_cnn=vp["n_perm_cnn"],
        n_perm_vit=vp["n_perm_vit"],
        refit_floor=refit_floor,
        stop_after=vp["refit_stop_after"],
        beat=_beat_text(vp["beat_on"]),
        timing=html.escape(timing),
        notes=notes,
    )
