# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the package with pip the first time (and again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs quality clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mal demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

docs: $(STAMP)
	$(BIN)/mal schema --docs docs/SPEC.md

# The auto-label quality table of docs/QUALITY.md (about 5 minutes on a quiet 2-core CPU, data from ../shared).
quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py ../shared/data/dsb2018_dev --spec specs/cpu_nuclei.yaml
	$(BIN)/python benchmarks/quality.py ../shared/data/coco128_dev --spec specs/cpu_natural.yaml

clean:
	rm -rf $(VENV) .pytest_cache results
