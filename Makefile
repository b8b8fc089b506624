# Two entry points for a fresh machine (see README):  make mini  |  make test
# Everything installs into .venv inside the repository, from pyproject.toml pinned by constraints.txt.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup mini test

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[pipeline,slurm,dev]"
	touch $@

setup: $(VENV)/.installed

# The main job: the whole suite of the configured scale (params.yaml `scale`, mini by default):
# fetch -> prepare -> fetch-weights -> 15 trainings -> evaluations -> tables, figures, comparison.
mini: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" snakemake --cores all

test: setup
	$(PY) -m pytest

