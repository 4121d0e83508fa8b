"""cytoops: can a cell image predict what cytokines the cells secrete?

The package, top-down (each module's opening docstring says what it owns):

- the command: `cli` (one typer app; each subcommand is the thin I/O edge of one module below) and
  `pipeline` (`cytoops run`: every stage in one process).
- the stages, in pipeline order (dvc.yaml): `plate` (read and validate raw plates; a package: well names
  and slugs, plate.yaml, images, the CSV files, the plate assembled, `validate`), `wrangle` (targets,
  normalized thumbnails), `augment` (flip views), `features` (frozen ViT-B/32 features), `profile`
  (morphological profile per well), `train` (cross-validation of every model on the plate's folds: the
  science rules and the dispatch; its engines: `backends` (local processes or Ray), `fitter` (the one
  training loop), `multitask`; `schedule` orders the tasks and sizes the bar; `taskcache` keeps finished
  tasks for a rerun), `evaluate` (the study's scores
  and figures), `verdict` (which cytokines images predict: baselines, calibrated test, call; `report` draws
  it), `tracking` (MLflow runs and what each logs), `register` (refits the models that earned a call and
  registers them; `serving` answers for them), `predict` (new plates scored by the champions).
- hand-offs between stages: `dataset` (what the models read: wells, labels, views, features, profile),
  `cvresult` (what cross-validation produced, read by every later stage without importing the trainer),
  `tables` (the hand-off tables' columns and types).
- MLflow: `store` (where the tracking store is, connecting, retries, dead runs) and `registry` (the model
  registry's read side: names, aliases, a cytokine's champion; `cytoops best-model`).
- shared pieces: `params` (params.yaml and the table of architectures), `models` (the architectures,
  built by name), `machine` (CPU cores, a GPU: how many workers), `demo` (the simulated demo plate).
"""

__version__ = "0.1.0"
