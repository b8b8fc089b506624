#!/usr/bin/env bash
# Run by Snakemake once, inside the new conda env, from the working directory (the repository root).
set -euo pipefail
if [ ! -f constraints.txt ] || [ ! -f pyproject.toml ]; then
    echo "diffris.post-deploy.sh: run snakemake from the repository root (constraints.txt not found in $PWD)" >&2
    exit 1
fi
python -m pip install --no-input -c constraints.txt -e .
