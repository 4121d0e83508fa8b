"""cytoops: can a cell image predict what cytokines the cells secrete?

The package, top-down (each module's opening docstring says what it owns):

- the command: `cli` (one typer app; each subcommand is the thin I/O edge of one module below) and
  `pipeline` (`cytoops run`: every stage in one process).
- the stages, in pipeline order (dvc.yaml): `plate` (read and validate raw plates), `wrangle` (targets,
  normalized thumbnails), `augment` (flip views), `features` (frozen ViT-B/32 features), `profile`
  (morphological profile per well), `train` (cross-validation of every model on the plate's folds; its
  engines: `backends`, `fitter` (the one training loop), `multitask`), `evaluate` (the study's
  scores and figures), `verdict` (which cytokines images predict: baselines, calibrated test, call;
  `report` draws it), `tracking` (MLflow runs), `register` (champions in the model registry; `serving`
  answers for them), `predict` (new plates scored by the champions).
- shared pieces: `params` (params.yaml and the table of architectures), `models` (the architectures,
  built by name), `tables` (the hand-off tables' columns and types), `demo` (the simulated demo plate).
"""

__version__ = "0.1.0"
