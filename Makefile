# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the package with pip the first time (and again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test coverage lint docs quality clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# Datumaro's CVAT reader checks mal labels export in the tests; its pins would downgrade Pillow and OpenCV,
	# so it comes without them (it runs with the newer ones: docs/EXPORT.md).
	$(BIN)/python -m pip install --quiet --no-deps datumaro==1.13.12 orjson json-stream json-stream-rs-tokenizer \
		shapely imagesize
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mal demo

# Two pytest workers (pytest-xdist): the tests run their trainings on one thread (tests/conftest.py) and spend part
# of their time waiting on a subprocess (a training, a server, a browser), so two keep a 2-core machine busier than
# one (measured here: 12.4 minutes, a cold torch.compile cache included, against about 17 in one process).
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# Line coverage of src/mal by the whole suite, subprocesses included (about 12 minutes on 2 cores; not run by CI).
coverage: $(STAMP)
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest -q -p no:cacheprovider
	$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports

docs: $(STAMP)
	$(BIN)/mal schema --docs docs/SPEC.md

# The auto-label quality table of docs/QUALITY.md (about 5 minutes on a quiet 2-core CPU, data from ../shared).
quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py ../shared/data/dsb2018_dev --spec cpu-nuclei
	$(BIN)/python benchmarks/quality.py ../shared/data/coco128_dev --spec cpu-natural

clean:
	rm -rf $(VENV) .pytest_cache results
