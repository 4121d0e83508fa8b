"""verdict: which cytokines a plate's images predict, with which model, and how sure.

The answer comes first. A cytokine is **predictable from images** when the best predictor that reads the
thumbnails, of any family (the study's five architectures, our multitask and all-wells CNNs, the
morphological profile, cell count), beats the image-blind baselines (prevalence, well position) on held-out
wells, under a test whose false-call rate on plates of pure noise has been measured (benchmarks/answer.py,
its null plates; docs/statistics.md).

Modules, in the order the stage uses them:
- `baselines`: prevalence, position, cell count and embeddings, fitted on the very same folds;
- `metrics`: per-fold scores on every labelled test well, cluster-bootstrap intervals (paired draws);
- `permutation`: the max-T permutation test of "images say nothing beyond the well's position";
- `call`: Benjamini-Hochberg, the call, and the comparisons beside it (family, study vs profile, embeddings,
  cell count alone);
- `transfer`: with 2+ plates, the leave-one-plate-out estimate of the families the verdict refits itself;
- `claims`: the study's own claims as tests; `truth`: calls scored against a simulated plate's truth.json;
- `result`: the `Verdict` the report reads; `stage`: the stage (compute, save, run, the typer command).
"""

from cytoops.verdict.result import Verdict

__all__ = ["Verdict"]
