# Two entry points (see README): `make main` runs the main job, `make test` runs the test suite.
# Both create/update the local virtual environment .venv by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-16)
# CPU build of torch; install it before anything else so no dependency pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
RESULTS ?= results

.PHONY: setup main test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

main: setup
	$(PY) -m bundle.story --output $(RESULTS)

test: setup
	$(PY) -m ruff check bundle scripts tests
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m scripts.bench_projector

clean:
	rm -rf $(VENV) $(RESULTS)
