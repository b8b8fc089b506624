"""A slice of the `ci` suite on a real one-node SLURM cluster, through the SLURM profile: the same
tables as locally.

The cluster comes from Debian's packages (scripts/local-slurm/cluster.sh; `make test` installs them
where it runs as root with apt-get). Where it cannot run, the test is skipped and says why.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, ci_snakemake, copy_workflow

CLUSTER = REPO / "scripts" / "local-slurm" / "cluster.sh"
SLURM_TOOLS = ("munged", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "srun", "scancel")


def why_no_cluster() -> str | None:
    """Why a local SLURM cluster cannot be started on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "starting slurmd and munged needs root"
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"  # the daemons live in sbin
    missing = [tool for tool in SLURM_TOOLS if shutil.which(tool, path=path) is None]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} not found); as root with apt-get, "
            "`scripts/local-slurm/cluster.sh install` or `make test` installs slurm-wlm and munge"
        )
    if Path("/etc/slurm/slurm.conf").exists():
        return "/etc/slurm/slurm.conf exists (a real cluster, or a local one still running); it is left alone"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """Environment of a freshly started private cluster (own folder and ports); stopped afterwards."""
    if reason := why_no_cluster():
        pytest.skip(f"cannot run a local SLURM cluster here: {reason}")
    state = tmp_path_factory.mktemp("slurm")
    env = dict(
        os.environ, DIFFRIS_SLURM_DIR=str(state),
        DIFFRIS_SLURMCTLD_PORT=str(free_port()), DIFFRIS_SLURMD_PORT=str(free_port()),
    )  # fmt: skip
    start = subprocess.run([str(CLUSTER), "start"], env=env, capture_output=True, text=True)
    assert start.returncode == 0, f"the local cluster did not start:\n{start.stdout}{start.stderr}"
    yield dict(env, SLURM_CONF=str(state / "slurm.conf"))
    subprocess.run([str(CLUSTER), "stop"], env=env, capture_output=True, text=True)


# Table 1's random-backbone control, read by Table 1 and Fig. 8 only
SLICE = "runs/ci/random/rrsisd/seed0/model.safetensors"
SLURM_OPTIONS = (
    "--workflow-profile", "workflow/profiles/slurm", "--jobs", "4", "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "1",
    # the profile sizes jobs for the paper scale; the test node has 2 CPUs and a few GB
    "--default-resources", "mem_mb=1000", "runtime=30", "--set-resources", "train:mem_mb=1500",
)  # fmt: skip


@pytest.mark.e2e
def test_slurm_runs_the_jobs_of_one_prepared_dataset(slurm_env, tmp_path):
    """The fast end-to-end check of the SLURM path: fetch and prepare, each a SLURM job."""
    work = copy_workflow(tmp_path / "workflow")
    target = "data/prepared/ci/refsegrs/summary.json"
    proc = ci_snakemake(work, target, *SLURM_OPTIONS, env=slurm_env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert log.count("has been submitted with SLURM jobid") == 2, log[-3000:]
    assert (work / target).is_file()


def test_a_slice_of_the_ci_suite_through_the_slurm_executor_gives_the_local_table(slurm_env, ci_local_run, tmp_path):
    """The session's built ci tree, copied with Snakemake's records, with one training forced to run
    again: Snakemake sends that training, its evaluations and the tables to SLURM (each SLURM job
    pays for its own Snakemake start and the plugin's status polling, about 12 s on a 2-CPU node),
    and every table equals the local one byte for byte. DIFFRIS_SLURM_FULL_SUITE=1 builds the
    whole ci suite from scratch on the cluster instead."""
    full_suite = os.environ.get("DIFFRIS_SLURM_FULL_SUITE") == "1"
    work = tmp_path / "workflow"
    if full_suite:
        copy_workflow(work)
    else:
        shutil.copytree(ci_local_run, work, symlinks=True)
    targets = [] if full_suite else ["results/ci/tables/table1.csv", "--forcerun", SLICE]
    proc = ci_snakemake(work, *targets, *SLURM_OPTIONS, env=slurm_env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    submitted = log.count("has been submitted with SLURM jobid")
    ran = set(re.findall(r"^(?:local)?rule (\w+):$", log, re.MULTILINE))
    assert submitted >= (40 if full_suite else 4), log[-3000:]  # every job went to SLURM
    assert {"train", "evaluate", "report_tables"} <= ran, log[-3000:]
    local, slurm = ci_local_run / "results" / "ci" / "tables", work / "results" / "ci" / "tables"
    tables = sorted(p.name for p in local.glob("*.csv"))
    assert tables and all((slurm / name).is_file() for name in tables)
    for name in tables:
        assert (slurm / name).read_text() == (local / name).read_text(), name
