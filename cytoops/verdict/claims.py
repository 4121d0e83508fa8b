"""verdict.claims: the study's claims as tests over cytokines (each cytokine one paired observation).

They read the study's own metric, F1 on its class-balanced test wells (`evaluate`), of the study's
architectures; the embeddings (the study's "Part 1") are scored on the same wells. `hypotheses` gathers
one function per claim (H1 augmentations, H2 wide vs deep CNN, H3 CNN vs ViT, H4 CNN vs embeddings) into
one table, a row per test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from cytoops.params import ARCHITECTURES, STUDY_ARCHITECTURES
from cytoops.verdict.metrics import MODEL

CNN_ARCHS = tuple(a for a in STUDY_ARCHITECTURES if ARCHITECTURES[a] == "cnn")
VIT_ARCHS = tuple(a for a in STUDY_ARCHITECTURES if ARCHITECTURES[a] == "vit")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


def _wilcoxon(x: np.ndarray, y: np.ndarray, alternative: str) -> tuple[float, float, str]:
    d = np.asarray(x, float) - np.asarray(y, float)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return np.nan, np.nan, "; no paired values"
    if np.allclose(d, 0):
        return 0.0, 1.0, "; all differences are zero"
    res = stats.wilcoxon(d, alternative=alternative, zero_method="wilcox")
    return float(res.statistic), float(res.pvalue), ""


def _row(hypothesis, claim, test, statistic=np.nan, p=np.nan, n=0, detail="", p_adj=np.nan, skipped=""):
    return {
        "hypothesis": hypothesis,
        "claim": claim,
        "test": test,
        "statistic": statistic,
        "p": p,
        "p_adjusted": p_adj,
        "n": n,
        "detail": detail,
        "skipped": skipped,
    }


def hypotheses(
    model_means: pd.DataFrame,
    baseline_means: pd.DataFrame,
    f1_cutoff: float,
    alpha: float,
    vit_pretrained: bool | None = None,
) -> pd.DataFrame:
    """The study's claims as tests over cytokines (each cytokine one paired observation).

    model_means: per (architecture, augmentation, cytokine) mean F1 (`evaluate.per_cytokine`);
    baseline_means: the same for the baselines (architecture: the baseline's name).
    """
    archs = sorted(set(model_means.architecture))
    per_arch = model_means.pivot_table(index="cytokine", columns="architecture", values="f1", aggfunc="mean")
    auc_arch = (
        model_means.pivot_table(index="cytokine", columns="architecture", values="roc_auc", aggfunc="mean")
        if "roc_auc" in model_means
        else per_arch * np.nan
    )
    rows = _augmentation_rows(model_means, alpha)
    rows.append(_wide_vs_deep_row(per_arch, auc_arch, archs))
    rows.append(_cnn_vs_vit_row(per_arch, auc_arch, archs, vit_pretrained))
    rows += _embeddings_rows(model_means, baseline_means, archs, f1_cutoff)
    return pd.DataFrame(rows)


def _augmentation_rows(model_means: pd.DataFrame, alpha: float) -> list[dict]:
    """H1's rows: the augmentation strategies do not differ (F1 averaged over architectures)."""
    aug = model_means.pivot_table(
        index="cytokine", columns="augmentation", values="f1", aggfunc="mean"
    ).dropna()
    claim = "The augmentation strategies do not differ"
    if aug.shape[1] < 2:
        return [_row("augmentation", claim, "Friedman", skipped="fewer than two strategies were run")]
    if aug.shape[1] == 2 or len(aug) < 3:
        s, p, note = _wilcoxon(aug.iloc[:, 0], aug.iloc[:, 1], "two-sided")
        return [
            _row(
                "augmentation",
                claim,
                "Wilcoxon signed-rank, two-sided",
                s,
                p,
                len(aug),
                f"{aug.columns[0]} vs {aug.columns[1]}{note}",
            )
        ]
    return [_friedman_row(aug, claim, alpha), *_augmentation_pairs(aug)]


def _friedman_row(aug: pd.DataFrame, claim: str, alpha: float) -> dict:
    """The Friedman test over three or more augmentation strategies (columns of `aug`), as one row."""
    res = stats.friedmanchisquare(*[aug[c].to_numpy() for c in aug.columns])
    k = aug.shape[1]
    w_kendall = float(res.statistic) / (len(aug) * (k - 1)) if len(aug) else np.nan
    verdict = (
        "reject: they differ" if res.pvalue < alpha else "not rejected (absence of evidence, not equivalence)"
    )
    medians = ", ".join(f"{c} {aug[c].median():.3f}" for c in aug.columns)
    return _row(
        "augmentation",
        claim,
        "Friedman chi-square over cytokines",
        float(res.statistic),
        float(res.pvalue),
        len(aug),
        f"Kendall W {w_kendall:.3f}; median F1 {medians}; {verdict}",
    )


def _augmentation_pairs(aug: pd.DataFrame) -> list[dict]:
    """The post hoc rows: every pair of augmentation strategies, Wilcoxon with Holm's adjustment."""
    pairs = [(a, b) for i, a in enumerate(aug.columns) for b in aug.columns[i + 1 :]]
    tests_ = [_wilcoxon(aug[a], aug[b], "two-sided") for a, b in pairs]
    adj = holm(np.array([t[1] if not np.isnan(t[1]) else 1.0 for t in tests_]))
    rows = []
    for (a, b), (s, p, note), pa in zip(pairs, tests_, adj, strict=True):
        d = float((aug[a] - aug[b]).median())
        rows.append(
            _row(
                f"augmentation: {a} vs {b}",
                "post hoc",
                "Wilcoxon signed-rank, two-sided, Holm",
                s,
                p,
                len(aug),
                f"median difference {d:+.3f}{note}",
                pa,
            )
        )
    return rows


def _wide_vs_deep_row(per_arch: pd.DataFrame, auc_arch: pd.DataFrame, archs: list[str]) -> dict:
    """H2's row: the wide CNN beats the deep CNN (F1 averaged over augmentations)."""
    claim = "The wide CNN beats the deep CNN"
    if not {"wide_cnn", "deep_cnn"} <= set(archs):
        missing = sorted({"wide_cnn", "deep_cnn"} - set(archs))
        return _row(
            "wide_cnn > deep_cnn", claim, "Wilcoxon signed-rank", skipped=f"not run: {', '.join(missing)}"
        )
    pair = per_arch[["wide_cnn", "deep_cnn"]].dropna()
    s, p, note = _wilcoxon(pair.wide_cnn, pair.deep_cnn, "greater")
    d = float((pair.wide_cnn - pair.deep_cnn).median())
    d_auc = float((auc_arch.wide_cnn - auc_arch.deep_cnn).median())
    return _row(
        "wide_cnn > deep_cnn",
        claim,
        "Wilcoxon signed-rank, one-sided (greater)",
        s,
        p,
        len(pair),
        f"F1 averaged over augmentations; median difference {d:+.3f} (ROC AUC {d_auc:+.3f}: an F1 "
        f"gain without an AUC gain is a shift of calls at P=0.5, not a better ranking){note}",
    )


def _cnn_vs_vit_row(
    per_arch: pd.DataFrame, auc_arch: pd.DataFrame, archs: list[str], vit_pretrained: bool | None
) -> dict:
    """H3's row: CNNs beat the frozen ViTs (mean F1 of each family, per cytokine)."""
    claim = "CNNs beat the frozen ViTs"
    cnn = [a for a in archs if a in CNN_ARCHS]
    vit = [a for a in archs if a in VIT_ARCHS]
    if not (cnn and vit):
        skipped = "no CNN was run" if not cnn else "no ViT was run"
        return _row("CNN > ViT", claim, "Wilcoxon signed-rank", skipped=skipped)
    pair = pd.DataFrame({"cnn": per_arch[cnn].mean(axis=1), "vit": per_arch[vit].mean(axis=1)}).dropna()
    s, p, note = _wilcoxon(pair.cnn, pair.vit, "greater")
    d = float((pair.cnn - pair.vit).median())
    d_auc = float((auc_arch[cnn].mean(axis=1) - auc_arch[vit].mean(axis=1)).median())
    caveat = "; the ViT backbone was NOT pretrained (random weights)" if vit_pretrained is False else ""
    return _row(
        "CNN > ViT",
        claim,
        "Wilcoxon signed-rank, one-sided (greater)",
        s,
        p,
        len(pair),
        f"mean F1 of {'+'.join(cnn)} vs {'+'.join(vit)}; "
        f"median difference {d:+.3f} (ROC AUC {d_auc:+.3f}){caveat}{note}",
    )


_BETTER_THAN_EMBEDDINGS = (
    "CNN better than embeddings",
    "CNNs predict cytokines better than the Part 1 embeddings",
)
_MORE_THAN_EMBEDDINGS = (
    "CNN predicts more than embeddings",
    "CNNs predict more cytokines than the Part 1 embeddings",
)


def _embeddings_rows(
    model_means: pd.DataFrame, baseline_means: pd.DataFrame, archs: list[str], f1_cutoff: float
) -> list[dict]:
    """H4's two rows: CNNs predict cytokines better, and more of them, than the Part 1 embeddings."""

    cnn = [a for a in archs if a in CNN_ARCHS]
    emb = baseline_means[baseline_means.architecture == "embeddings"].set_index("cytokine").f1
    skipped = "no CNN was run" if not cnn else "the plates carry no embeddings.csv" if emb.empty else ""
    if skipped:
        return [
            _row(name, claim, "", skipped=skipped)
            for name, claim in (_BETTER_THAN_EMBEDDINGS, _MORE_THAN_EMBEDDINGS)
        ]
    pair, label = _best_cnn_vs_embeddings(model_means[model_means.architecture.isin(cnn)], emb)
    return [_better_than_embeddings_row(pair, label), _more_than_embeddings_row(pair, label, f1_cutoff)]


def _best_cnn_vs_embeddings(cnn_means: pd.DataFrame, emb: pd.Series) -> tuple[pd.DataFrame, str]:
    """(per-cytokine F1 of the best CNN and of the embeddings, columns cnn and emb; a label for them)."""
    overall = cnn_means.groupby(MODEL).f1.mean().sort_values(ascending=False)
    arch, aug_ = overall.index[0]
    best = (
        cnn_means[(cnn_means.architecture == arch) & (cnn_means.augmentation == aug_)]
        .set_index("cytokine")
        .f1
    )
    pair = pd.DataFrame({"cnn": best, "emb": emb}).dropna()
    label = f"{arch}/{aug_} (the CNN with the best mean F1 over cytokines) vs the embeddings baseline"
    return pair, label


def _better_than_embeddings_row(pair: pd.DataFrame, label: str) -> dict:
    """The best CNN's F1 against the embeddings' over cytokines (Wilcoxon, one-sided), as one row."""
    s, p, note = _wilcoxon(pair.cnn, pair.emb, "greater")
    d = float((pair.cnn - pair.emb).median())
    return _row(
        *_BETTER_THAN_EMBEDDINGS,
        "Wilcoxon signed-rank, one-sided (greater)",
        s,
        p,
        len(pair),
        f"{label}; median difference {d:+.3f}{note}",
    )


def _more_than_embeddings_row(pair: pd.DataFrame, label: str, f1_cutoff: float) -> dict:
    """Cytokines only the best CNN or only the embeddings predict (F1 >= cutoff), McNemar, as one row."""
    a, b = pair.cnn >= f1_cutoff, pair.emb >= f1_cutoff
    only_cnn, only_emb = int((a & ~b).sum()), int((~a & b).sum())
    p = (
        float(stats.binomtest(only_cnn, only_cnn + only_emb, 0.5, alternative="greater").pvalue)
        if only_cnn + only_emb
        else 1.0
    )
    return _row(
        *_MORE_THAN_EMBEDDINGS,
        "exact McNemar, one-sided",
        float(only_cnn),
        p,
        len(pair),
        f"{label}; F1 >= {f1_cutoff}: CNN {int(a.sum())}, embeddings {int(b.sum())} cytokines; "
        f"only CNN {only_cnn}, only embeddings {only_emb}",
    )
