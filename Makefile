# Two commands a new user needs: `make demo` runs the main job, `make test` runs the tests.
# `make docs` writes the API reference to docs/api/, `make typecheck` runs mypy; CI runs all three.
# Each creates .venv, installs the CPU build of torch first (a plain `torch` requirement would
# pull a multi-GB CUDA build), then the package.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs typecheck lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,docs,typecheck]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lvm collapse --out results

test: $(STAMP)
	$(BIN)/python -m pytest

# The API reference from the docstrings (pdoc), in docs/api/; a warning fails the build.
docs: $(STAMP)
	$(BIN)/python docs/build_api.py docs/api

typecheck: $(STAMP)
	$(BIN)/mypy

# The deliberately broken estimators of tests/test_mutants.py: each must be caught by a check.
.PHONY: mutants
mutants: $(STAMP)
	$(BIN)/python -m pytest tests/test_mutants.py -q

lint: $(STAMP)
	$(BIN)/ruff check lvm_models guides inference tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) results
