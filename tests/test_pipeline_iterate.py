"""Iterating on a built `ci` tree with real Snakemake runs (not -n): a changed experiment retrains
exactly its run and never loses the old weights before the new ones exist, a failed job leaves
nothing that blocks the corrected one, and a change to both caches and runs needs one pass."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import ci_snakemake

RUN = "runs/ci/dec-lmp/rrsisd/seed0"


@pytest.fixture(scope="module")
def built(ci_local_run, tmp_path_factory) -> Path:
    """A private copy of the session's built ci tree, Snakemake's records and mtimes included.
    The tests below edit it in turn (their changes add up)."""
    work = tmp_path_factory.mktemp("iterate") / "workflow"
    shutil.copytree(ci_local_run, work, symlinks=True)
    return work


def snakemake(workdir: Path, *args: str):
    return ci_snakemake(workdir, "--cores", "2", *args)


def jobs_run(proc) -> Counter:
    return Counter(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, re.MULTILINE))


def edit_params(workdir: Path, change) -> None:
    path = workdir / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def weights(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.glob("runs/ci/*/*/seed*/model.safetensors"))}


def test_a_changed_experiment_retrains_exactly_its_run_and_keeps_the_old_weights(built):
    before = weights(built)
    edit_params(built, lambda p: p["experiments"].update({"dec-lmp": {"decoder": "lmp", "lmp": {"hidden_dim": 16}}}))

    blocker = built / f"{RUN}.partial"  # a folder train may not clear: the job fails at its start
    blocker.mkdir()
    (blocker / "notes.txt").write_text("mine")
    failed = snakemake(built)
    assert failed.returncode != 0 and "seed0.partial: exists and was not written by `diffris train`" in failed.stderr
    log = "logs/ci/train/dec-lmp/rrsisd/seed0.log"  # the failure names its log and shows it (show-failed-logs)
    assert f"Logfile {log}:" in failed.stderr and "exists and was not written" in (built / log).read_text()
    assert weights(built) == before  # the old weights of the failed run are still there
    shutil.rmtree(blocker)

    proc = snakemake(built)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    jobs = jobs_run(proc)
    assert jobs["train"] == 1 and jobs["evaluate"] == 1 and not {"fetch", "prepare", "cache_features"} & set(jobs)
    after = weights(built)
    assert after[f"{RUN}/model.safetensors"] != before[f"{RUN}/model.safetensors"]
    assert {k: v for k, v in after.items() if RUN not in k} == {k: v for k, v in before.items() if RUN not in k}
    assert not (built / f"{RUN}.partial").exists()
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(built, "-n"))


def test_one_pass_rebuilds_the_caches_and_retrains_the_runs_that_read_them(built):
    target = "runs/ci/full/rrsisd/seed0/model.safetensors"
    old = (built / target).read_bytes()
    edit_params(built, lambda p: p["scales"]["ci"]["model"].update(text_max_length=24))
    proc = snakemake(built, target)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    jobs = jobs_run(proc)
    assert jobs["cache_features"] >= 1 and jobs["train"] == 1
    assert (built / target).read_bytes() != old
    again = snakemake(built, "-n", target)
    assert "Nothing to be done" in again.stdout + again.stderr
