"""Shared fixtures: small synthetic raw datasets written once per session, copied per test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffris.determinism import pin_cpu

pin_cpu()  # before any test imports torch or numpy: in-process results use the kernels `python -m diffris` uses

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


# --- the test-sized `ci` suite, run once per session by Snakemake in a copy of the workflow -----------

WORKFLOW_FILES = ("Snakefile", "params.yaml", "workflow", "profiles", "results/reference")


def copy_workflow(dest: Path) -> Path:
    """The files a Snakemake run needs (workflow, params, code, reference tables), copied to ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src, dst = REPO / name, dest / name
        shutil.copytree(src, dst) if src.is_dir() else shutil.copy(src, dst)
    shutil.copytree(REPO / "diffris", dest / "diffris", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def ci_snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`snakemake --config scale=ci ...` in ``workdir`` with this interpreter's tools on PATH."""
    bin_dir = Path(sys.executable).parent
    env = dict(env or os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return subprocess.run(
        [str(bin_dir / "snakemake"), *args, "--config", "scale=ci"],  # last: --config takes every word after it
        cwd=workdir, env=env, capture_output=True, text=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def ci_local_run(tmp_path_factory) -> Path:
    """The whole `ci` DAG run locally (the default profile), shared by the pipeline and SLURM tests."""
    work = copy_workflow(tmp_path_factory.mktemp("workflow"))
    proc = ci_snakemake(work, "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return work
