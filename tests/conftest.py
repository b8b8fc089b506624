"""Shared fixtures: small synthetic raw datasets written once per session, copied per test."""

from __future__ import annotations

import contextlib
import io
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


SUBPROCESS_COMMANDS = {"launch"}  # starts processes of its own: always run as the pipeline does
IN_PROCESS_ENV = {"OMP_NUM_THREADS"}  # an ``env`` that changes only these can run in this process


def run_cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `diffris ...` as `python -m diffris ...` would, from the repository root; returns the
    completed process (exit code, stdout, stderr).

    Most commands run in this process, through the same ``main``: a new interpreter would spend
    4-5 s importing torch and diffusers before doing a test's few seconds of work. ``env`` may
    set OMP_NUM_THREADS (torch's thread count for the call); any other change to the environment,
    or ``launch``, runs a real subprocess."""
    argv = [str(a) for a in args]
    changed = {k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)} if env is not None else set()
    if argv[0] in SUBPROCESS_COMMANDS or changed - IN_PROCESS_ENV:
        proc = subprocess.run([sys.executable, "-m", "diffris", *argv], capture_output=True, text=True, cwd=REPO, env=env)
    else:
        threads = int(env["OMP_NUM_THREADS"]) if "OMP_NUM_THREADS" in changed else None
        proc = run_in_process(argv, threads)
    if check and proc.returncode != 0:
        raise AssertionError(f"diffris {' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_in_process(argv: list[str], threads: int | None) -> subprocess.CompletedProcess:
    """``diffris.cli.main(argv)`` with its output captured and the process state it may change
    (environment, working folder, torch's thread count, accelerate's state) put back afterwards."""
    import torch

    from diffris.cli import main

    saved_env, saved_cwd, saved_threads = dict(os.environ), os.getcwd(), torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(REPO)
        if threads is not None:
            torch.set_num_threads(threads)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as done:  # argparse's usage errors, --help
                code = done.code if isinstance(done.code, int) else 0 if done.code is None else 1
                if isinstance(done.code, str):
                    print(done.code, file=sys.stderr)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)
        if "accelerate" in sys.modules:  # a later run may ask for another precision or process layout
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
    return subprocess.CompletedProcess(["diffris", *argv], code, out.getvalue(), err.getvalue())


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


# --- two workers (pyproject: -n 2 --dist loadgroup) ------------------------------------------------
# A session fixture is built once per worker, so the tests that share an expensive one go to the
# same worker: the ci build (about 3.5 minutes, then the studies, SLURM, DVC and iteration tests on
# it: the longest chain, so it goes first; the local SLURM cluster, one per machine, with it) and
# the small trained run of test_train.py.
SHARED_BUILDS = {
    "ci": ("ci_local_run", "slurm_env"),
    "train-assets": ("assets", "evaluated", "trained", "corrupted"),
}


def shared_build(item: pytest.Item) -> str | None:
    return next((g for g, names in SHARED_BUILDS.items() if set(names) & set(item.fixturenames)), None)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if group := shared_build(item):
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: shared_build(item) != "ci")  # stable: the ci chain first, each in file order
