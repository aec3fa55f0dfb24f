#!/usr/bin/env bash
# Snakemake runs this in the conda environment right after creating it (--software-deployment-method
# conda), from its working directory, which must be the repository root: install the harness
# itself into the environment, leaving the dependencies of adept.yaml as they are.
set -euo pipefail
if [ ! -f pyproject.toml ] || [ ! -d adept ]; then
    echo "run snakemake from the repository root to use its conda environment (cwd: $(pwd))" >&2
    exit 1
fi
pip install --no-deps -e .
