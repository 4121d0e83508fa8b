"""Does the verdict find what the demo plates hide, and does it stay quiet on pure noise?

Runs the whole pipeline (`cytoops run --no-track`) on simulated plates and scores the calls against their
truth.json:
- demo plates (seeds given by --seeds): morphology-driven cytokines found, and any noise-, position- or
  pathway-driven cytokine called;
- null plates (`cytoops demo-plate --null`, seeds given by --null-seeds): the same images, every cytokine
  noise: the number of calls (false by construction) and the distribution of the test's p-values, which a
  calibrated test makes uniform (Kolmogorov-Smirnov against U(0, 1); the p-values of a permutation test are
  discrete, floor 1/(n_perm + 1)).

Usage (the grid can be reduced with --set, as `cytoops run` takes it; say which in the results):
    python benchmarks/answer.py --out benchmarks/answer.json --seeds 0 1 2 --null-seeds 10 11 12 13 14 \
        --set 'train.architectures=[wide_cnn,vit_linear,profile,multitask_cnn]' \
        --set 'augment.strategies=[none]'
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


def run_plate(seed: int, null: bool, overrides: list[str], work: Path) -> dict:
    data, out = work / f"data-{seed}-{int(null)}", work / f"out-{seed}-{int(null)}"
    cli = [str(Path(sys.executable).parent / "cytoops")]
    subprocess.run(
        [*cli, "demo-plate", str(data), "--seed", str(seed), *(["--null"] if null else [])], check=True
    )
    t0 = time.perf_counter()
    sets = [a for o in overrides for a in ("--set", o)]
    subprocess.run([*cli, "run", "--data", str(data), "--out", str(out), "--no-track", *sets], check=True)
    seconds = time.perf_counter() - t0
    table = pd.read_csv(out / "reports" / "predictable.csv")
    truth = pd.read_csv(out / "reports" / "truth.csv")
    merged = table.merge(truth[["cytokine", "cause"]], on="cytokine")
    called = merged[merged.predictable.astype(bool)]
    return {
        "seed": seed,
        "null": null,
        "seconds": round(seconds, 1),
        "n_kept": int(len(table)),
        "called": {c: cause for c, cause in zip(called.cytokine, called.cause, strict=True)},
        "morphology_kept": int((merged.cause == "morphology").sum()),
        "morphology_found": int((called.cause == "morphology").sum()),
        "wrong_noise_or_position": sorted(called.cytokine[called.cause.isin(["noise", "position"])]),
        "pathway_called": sorted(called.cytokine[called.cause == "pathway"]),
        "p": {c: float(p) for c, p in zip(merged.cytokine, merged.p, strict=True)},
        "auc_by_cause": merged.groupby("cause").roc_auc.mean().round(3).to_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/answer.json"))
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--null-seeds", type=int, nargs="*", default=[10, 11, 12, 13, 14])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, null in [(s, False) for s in args.seeds] + [(s, True) for s in args.null_seeds]:
            runs.append(run_plate(seed, null, args.overrides, Path(tmp)))
            print(json.dumps({k: runs[-1][k] for k in ("seed", "null", "seconds", "called")}), flush=True)
            args.out.write_text(json.dumps({"overrides": args.overrides, "runs": runs}, indent=1) + "\n")
    demo = [r for r in runs if not r["null"]]
    nulls = [r for r in runs if r["null"]]
    p_null = np.array([p for r in nulls for p in r["p"].values()])
    summary = {
        "overrides": args.overrides,
        "demo_morphology_found_mean": float(np.mean([r["morphology_found"] for r in demo])) if demo else None,
        "demo_morphology_kept_mean": float(np.mean([r["morphology_kept"] for r in demo])) if demo else None,
        "demo_noise_or_position_called": sum(len(r["wrong_noise_or_position"]) for r in demo),
        "demo_pathway_called": sum(len(r["pathway_called"]) for r in demo),
        "null_plates": len(nulls),
        "null_calls_total": sum(len(r["called"]) for r in nulls),
        "null_p_values": len(p_null),
        "null_share_p_below_0.05": float((p_null < 0.05).mean()) if len(p_null) else None,
        "null_ks_uniform_p": float(stats.kstest(p_null, "uniform").pvalue) if len(p_null) else None,
    }
    args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")
    if len(p_null):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
        a.hist(p_null, bins=20, range=(0, 1), color="#6baed6", edgecolor="white")
        a.axhline(len(p_null) / 20, color="#d7301f", ls="--", label="uniform")
        a.set_xlabel("p (null plates: every cytokine noise)")
        a.legend()
        q = np.sort(p_null)
        b.plot(np.arange(1, len(q) + 1) / (len(q) + 1), q, ".", ms=3)
        b.plot([0, 1], [0, 1], color="#d7301f", ls="--")
        b.set_xlabel("uniform quantile")
        b.set_ylabel("observed p")
        fig.suptitle(
            f"{len(nulls)} null plates, {len(p_null)} cytokines: KS p = {summary['null_ks_uniform_p']:.2g}"
        )
        fig.tight_layout()
        fig.savefig(args.out.with_suffix(".png"), dpi=100)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
