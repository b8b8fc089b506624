"""Snakemake and DVC build the same jobs with the same commands, all derived from params.yaml."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from diffris import pipeline
from diffris.config import load_params

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def snakemake_dry_run(*extra: str) -> list[dict]:
    """Jobs of `snakemake -n -p --forceall` as {rule, outputs, cmd}."""
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-p", "--forceall", "--cores", "1", *extra],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    jobs, job = [], None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            job = {"rule": m.group(1), "outputs": [], "cmd": None}
            jobs.append(job)
        elif job and (m := re.match(r"^\s+output: (.*)$", line)):
            job["outputs"] = m.group(1).split(", ")
        elif job and line.startswith("Shell command: "):
            job["cmd"] = line[len("Shell command: ") :]
    return [j for j in jobs if j["rule"] != "all"]


@pytest.fixture(scope="module")
def smk_jobs() -> list[dict]:
    return snakemake_dry_run()


def test_snakemake_plans_fifteen_trainings_and_every_evaluation(smk_jobs):
    counts = Counter(j["rule"] for j in smk_jobs)
    params = load_params()
    assert counts["train"] == len(pipeline.runs(params)) == 18  # 15 + the random control on 3 datasets
    assert counts["evaluate"] == len(pipeline.evaluations(params)) == 24  # Tables 1-3 on val and test
    assert counts["fetch"] == counts["prepare"] == 3 and counts["fetch_weights"] == 5
    assert counts["pretrain_backbone"] == 1


def test_committed_dvc_yaml_is_generated_from_params():
    params = load_params()
    assert (REPO / "dvc.yaml").read_text() == pipeline.dvc_yaml(params, params["scale"]), (
        "dvc.yaml is stale: run `python -m diffris export-dvc`"
    )


def test_dvc_and_snakemake_have_the_same_commands_and_outputs(smk_jobs):
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        dvc = {stage.cmd: [str(o.def_path) for o in stage.outs] for stage in repo.index.stages}
    smk = {job["cmd"]: job["outputs"] for job in smk_jobs}
    assert set(smk) == set(dvc)
    for cmd, outputs in smk.items():
        for out in outputs:  # a Snakemake output is a DVC out or a file inside one
            assert any(out == d or out.startswith(d + "/") for d in dvc[cmd]), (cmd, out, dvc[cmd])
        for d in dvc[cmd]:
            assert any(out == d or out.startswith(d + "/") for out in outputs), (cmd, d, outputs)


def test_paper_scale_plans_the_same_jobs_on_the_real_backbones():
    jobs = snakemake_dry_run("--config", "scale=paper")
    weights = sorted(j["outputs"][0].split("/")[2] for j in jobs if j["rule"] == "fetch_weights")
    assert weights == ["sd-1-1", "sd-1-2", "sd-1-4", "sd-1-5", "sd-random"]
    assert sum(j["rule"] == "train" for j in jobs) == 18 and not any(j["rule"] == "pretrain_backbone" for j in jobs)
    assert all("--scale paper" in j["cmd"] for j in jobs if j["rule"] in ("train", "fetch"))


def test_dvc_sees_the_pipeline():
    proc = subprocess.run([str(BIN / "dvc"), "dag", "--md"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "train-full-rrsisd" in proc.stdout and "report-tables" in proc.stdout
