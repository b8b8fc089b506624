"""Shared fixtures: small synthetic raw datasets written once per session, copied per test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMALL_SPLITS = {"train": 8, "val": 4, "test": 4}


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m diffris ...` as the pipeline does; returns the completed process."""
    proc = subprocess.run(
        [sys.executable, "-m", "diffris", *map(str, args)], capture_output=True, text=True, cwd=REPO, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"diffris {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def synthetic_raw_cache(tmp_path_factory) -> dict[str, Path]:
    from diffris.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic_raw")
    return {ds: generate(ds, root / ds, SMALL_SPLITS, 96, seed=7) for ds in ("rrsisd", "refsegrs", "risbench")}


@pytest.fixture
def raw_copy(synthetic_raw_cache, tmp_path):
    """A private, mutable copy of a small synthetic raw dataset."""

    def copy(dataset: str) -> Path:
        target = tmp_path / dataset
        shutil.copytree(synthetic_raw_cache[dataset], target)
        return target

    return copy
