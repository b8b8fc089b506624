# Two entry points for a fresh machine (see README):  make mini  |  make test
# Everything installs into .venv inside the repository, from pyproject.toml pinned by constraints.txt.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SCALE ?= mini
DATASETS := rrsisd refsegrs risbench

.PHONY: setup mini test clean-data

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[pipeline,slurm,dev]"
	touch $@

setup: $(VENV)/.installed

# The main job at the mini scale: synthetic data in each benchmark's raw layout, then prepared arrays.
mini: setup
	set -e; size=$$($(PY) -c "from diffris.config import load_params, scale_params; print(scale_params(load_params(), '$(SCALE)')['image_size'])"); \
	for ds in $(DATASETS); do \
		$(PY) -m diffris fetch --dataset $$ds --scale $(SCALE) --out data/raw/$(SCALE)/$$ds; \
		$(PY) -m diffris prepare --dataset $$ds --raw data/raw/$(SCALE)/$$ds --out data/prepared/$(SCALE)/$$ds --image-size $$size; \
	done

test: setup
	$(PY) -m pytest

clean-data:
	rm -rf data/raw data/prepared
