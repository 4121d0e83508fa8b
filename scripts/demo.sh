#!/usr/bin/env bash
# `make demo`: pull the demo plate from the DVC remote committed in this repo, validate it, run the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
dvc pull data.dvc
cytoops validate data
dvc repro
cytoops summary metrics/summary.json
cytoops ui-url --run work/track/run.json
