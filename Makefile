# Two commands for a fresh machine: `make demo` (the main job on the bundled demo plate) and `make test`.
# Both bootstrap .venv from nothing with a supported Python (3.10 or 3.11: vit-keras 0.2 needs < 3.12).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
EXTRA ?= cpu
STAMP := $(VENV)/.installed-$(EXTRA)

.PHONY: demo test bench lint venv clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@PY=""; for c in $${PYTHON:-} python3.11 python3.10 python3; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; sys.exit(not ((3,10) <= sys.version_info[:2] < (3,12)))' 2>/dev/null; then PY=$$c; break; fi; \
	done; \
	if [ -z "$$PY" ]; then echo "cytoops needs Python 3.10 or 3.11 (vit-keras requires < 3.12); none found: install one or set PYTHON=/path/to/python3.11" >&2; exit 1; fi; \
	if [ ! -x $(BIN)/python ]; then $$PY -m venv $(VENV); fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRA),dev,ray]"
	@touch $(STAMP)

demo: $(STAMP)
	@bash scripts/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check cytoops tests benchmarks

bench: $(STAMP)
	$(BIN)/dvc pull --quiet data.dvc  # the demo plate, as make demo gets it (a no-op once pulled)
	$(BIN)/python benchmarks/bench.py --out benchmarks/results.json

clean-venv:
	rm -rf $(VENV)
