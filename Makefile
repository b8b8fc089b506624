# Two entry points for a fresh machine (see README):  make mini  |  make test
# Everything installs into .venv inside the repository, from pyproject.toml pinned by constraints.txt.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup mini test slurm qemu

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[pipeline,slurm,dev]"
	touch $@

setup: $(VENV)/.installed

# The main job: the whole suite of the configured scale (params.yaml `scale`, mini by default):
# fetch -> prepare -> fetch-weights (the tiny backbones from the checksummed zoo/) -> grounding ->
# 24 trainings -> evaluations -> tables, figures, comparison, curves; then the cost table of its
# jobs (benchmarks/results/jobs-<scale>.csv). Regenerating the zoo is `snakemake zoo` (zoo/README.md).
mini: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" snakemake --cores all all costs

test: setup slurm qemu
	$(PY) -m pytest

# tests/test_slurm.py runs the ci suite on a local one-node SLURM cluster. Its packages are installed
# here where that is possible (root, apt-get, not yet installed); elsewhere the test says why it skips.
slurm:
	@if command -v sbatch >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		scripts/local-slurm/cluster.sh install || echo "make: could not install slurm-wlm and munge; tests/test_slurm.py will say why it skips"; \
	else echo "make: no root or no apt-get: SLURM not installed; tests/test_slurm.py will say why it skips"; fi


# tests/test_determinism.py compares the pinned CPU kernels' bytes with emulated AVX2-only Intel and
# AMD CPUs (qemu-user). Installed here where that is possible; elsewhere the test says why it skips.
qemu:
	@if command -v qemu-x86_64 >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -qq qemu-user >/dev/null 2>&1 || (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq qemu-user >/dev/null 2>&1)) \
		|| echo "make: could not install qemu-user; tests/test_determinism.py will say why it skips"; \
	else echo "make: no root or no apt-get: qemu-user not installed; tests/test_determinism.py will say why it skips"; fi
