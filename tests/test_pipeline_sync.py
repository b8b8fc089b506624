"""Snakemake and DVC build the same jobs with the same commands, all derived from params.yaml.

Two differences are by design (docs/pipeline.md), and the tests below state them:

- a Snakemake job's command ends with ``> <log> 2>&1``, its `log:` under logs/ (DVC has no log
  directive: `dvc repro` streams the same command's output to the terminal);
- rule ``report_costs`` (target ``costs``) gathers Snakemake's `benchmark:` files into
  benchmarks/results/jobs-<scale>.csv; DVC has no benchmark files, so it has no such stage.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from diffris.pipeline import dvc_stages, jobs as pipeline_jobs
from diffris.cli import main
from diffris.config import check_references, load_params
from diffris.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


SNAKEMAKE_ONLY_RULES = {"report_costs"}
TARGET_RULES = ("all", "studies", "zoo")  # rules that only name outputs
LOG_REDIRECT = re.compile(r"^(?P<cmd>.*) > (?P<log>logs/\S+\.log) 2>&1$")


def snakemake_dry_run(*extra: str) -> list[dict]:
    """Jobs of `snakemake -n -p --forceall` as {rule, outputs, log, benchmark, cmd}; cmd without the redirect to the log."""
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-p", "--forceall", "--cores", "1", *extra],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    jobs, job = [], None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            job = {"rule": m.group(1), "outputs": [], "log": None, "benchmark": None, "cmd": None}
            jobs.append(job)
        elif job and (m := re.match(r"^\s+output: (.*)$", line)):
            job["outputs"] = [o.removesuffix(" (update)") for o in m.group(1).split(", ")]
        elif job and (m := re.match(r"^\s+(log|benchmark): (.*)$", line)):
            job[m.group(1)] = m.group(2)
        elif job and line.startswith("Shell command: ") and job["rule"] not in TARGET_RULES:
            redirect = LOG_REDIRECT.match(line[len("Shell command: ") :])
            assert redirect and redirect["log"] == job["log"], f"{job['rule']}: output not sent to its log: {line}"
            job["cmd"] = redirect["cmd"]
    return [j for j in jobs if j["rule"] not in TARGET_RULES]


@pytest.fixture(scope="module")
def smk_jobs() -> list[dict]:
    return snakemake_dry_run()


def test_snakemake_plans_eighteen_runs_each_with_its_seeds_and_every_evaluation(smk_jobs):
    counts = Counter(j["rule"] for j in smk_jobs)
    params = load_params()
    scale = params["scale"]
    runs, evaluations = pipeline_jobs.runs(params), pipeline_jobs.evaluations(params)
    assert len(runs) == 18  # 15 + the random control on 3 datasets
    assert counts["train"] == sum(len(pipeline_jobs.seeds(params, scale, r.experiment)) for r in runs)
    plain = [e for e in evaluations if not e.shuffled]
    assert len(plain) == 24  # Tables 1-3 on val and test, the rest on test
    assert counts["evaluate"] == sum(len(pipeline_jobs.seeds(params, scale, e.experiment)) for e in plain)
    assert counts["fetch"] == counts["prepare"] == 3 and counts["fetch_weights"] == 5
    assert counts["pretrain_backbone"] == 0 and counts["measure_grounding"] == 1  # the backbones come from the zoo


def test_the_shuffled_control_is_part_of_the_dag(smk_jobs):
    """`full` on each dataset, each seed, val and test, evaluated with shuffled expressions; the
    report reads them (Snakemake and dvc.yaml alike)."""
    params = load_params()
    seeds = pipeline_jobs.seeds(params, params["scale"])
    shuffled = [j for j in smk_jobs if j["rule"] == "evaluate_shuffled"]
    expected = {
        f"results/mini/metrics/full/{ds}/seed{seed}/{split}-shuffled.json"
        for ds in ("rrsisd", "refsegrs", "risbench") for seed in seeds for split in ("val", "test")
    }  # fmt: skip
    assert {j["outputs"][0] for j in shuffled} == expected
    assert all(j["cmd"].endswith(" --shuffle-expressions") and " --run runs/mini/full/" in j["cmd"] for j in shuffled)
    assert not any("--shuffle-expressions" in j["cmd"] for j in smk_jobs if j["rule"] == "evaluate")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    report = stages["report-tables"]["deps"]
    for path in expected:
        assert path in report and path.replace(".json", ".csv") in report
        name = "evaluate-full-{}-seed{}-{}-shuffled".format(*re.match(r".*/full/(\w+)/seed(\d+)/(\w+)-", path).groups())
        assert stages[name]["cmd"].endswith("--shuffle-expressions")
    assert {"label": "DiffRIS, shuffled expressions", "experiment": "full", "control": True,
            "evaluation": "shuffled"} in params["tables"]["table1"]["rows"]  # fmt: skip


def test_each_seed_trains_its_own_run_folder(smk_jobs):
    params = load_params()
    seeds = pipeline_jobs.seeds(params, params["scale"])
    assert seeds == [params["seed"] + k for k in range(params["scales"]["mini"]["seeds"])]
    trains = [j for j in smk_jobs if j["rule"] == "train" and " --experiment full --dataset rrsisd " in j["cmd"]]
    assert sorted(j["outputs"][0] for j in trains) == [f"runs/mini/full/rrsisd/seed{s}/model.safetensors" for s in seeds]
    assert sorted(re.search(r" --seed (\d+) ", j["cmd"]).group(1) for j in trains) == [str(s) for s in seeds]
    others = [j for j in smk_jobs if j["rule"] == "train" and " --experiment cp-none --dataset rrsisd " in j["cmd"]]
    assert [j["outputs"][0] for j in others] == [f"runs/mini/cp-none/rrsisd/seed{seeds[0]}/model.safetensors"]


def test_seeded_experiments_get_every_seed_and_the_others_the_first():
    params = load_params()
    params["scales"]["paper"].update(seeds=3, seeded_experiments=["full"])
    assert pipeline_jobs.seeds(params, "paper", "full") == [0, 1, 2] and pipeline_jobs.seeds(params, "paper", "cp-none") == [0]
    stages = dvc_stages.dvc_stages(params, "paper")
    assert {n for n in stages if n.startswith("train-full-rrsisd-")} == {f"train-full-rrsisd-seed{k}" for k in range(3)}
    assert {n for n in stages if n.startswith("train-cp-none-rrsisd-")} == {"train-cp-none-rrsisd-seed0"}
    params["scales"]["paper"]["seeded_experiments"] = ["ful"]
    with pytest.raises(ConfigError, match=r"scales\.paper\.seeded_experiments\.0: 'ful' is not a key of `experiments`"):
        check_references(params)


def test_three_seeds_give_three_runs_and_evaluations_each():
    params = load_params()
    params["scales"]["paper"]["seeds"] = 3
    stages = dvc_stages.dvc_stages(params, "paper")
    folders = sorted(s["outs"][0] for name, s in stages.items() if name.startswith("train-cp-none-rrsisd-"))
    assert folders == [f"runs/paper/cp-none/rrsisd/seed{k}/model.safetensors" for k in (0, 1, 2)]
    evaluate = stages["evaluate-cp-none-rrsisd-seed2-test"]
    assert evaluate["cmd"].startswith("python -m diffris evaluate --run runs/paper/cp-none/rrsisd/seed2 --split test")
    assert evaluate["metrics"] == [{"results/paper/metrics/cp-none/rrsisd/seed2/test.json": {"cache": False}}]


def test_the_seed_option_reaches_the_training_run(monkeypatch, tmp_path):
    import diffris.determinism
    import diffris.training.trainer

    seen = []

    class Recorder:
        def __init__(self, spec, out):
            seen.append(spec)

        def run(self):
            return None

    monkeypatch.setattr(diffris.training.trainer, "Trainer", Recorder)
    monkeypatch.setattr(diffris.determinism, "set_cpu_threads", lambda count: None)  # this process keeps its threads
    common = ["train", "--experiment", "full", "--dataset", "rrsisd", "--data", str(tmp_path), "--backbone-dir", str(tmp_path),
              "--out", str(tmp_path / "run"), "--scale", "ci"]  # fmt: skip
    assert main([*common, "--seed", "7"]) == 0 and main(common) == 0
    assert [spec.seed for spec in seen] == [7, load_params()["seed"]]


def test_committed_dvc_yaml_is_generated_from_params():
    params = load_params()
    assert (REPO / "dvc.yaml").read_text() == dvc_stages.dvc_yaml(params, params["scale"]), (
        "dvc.yaml is stale: run `python -m diffris export-dvc`"
    )
    assert (REPO / "studies" / "dvc.yaml").read_text() == dvc_stages.studies_dvc_yaml(params, params["scale"]), (
        "studies/dvc.yaml is stale: run `python -m diffris export-dvc`"
    )
    assert (REPO / "zoo" / "dvc.yaml").read_text() == dvc_stages.zoo_dvc_yaml(params), (
        "zoo/dvc.yaml is stale: run `python -m diffris export-dvc`"
    )


def test_the_zoo_stages_run_the_commands_of_the_snakemake_rules():
    """zoo/dvc.yaml regenerates what `snakemake zoo` does: the same pretraining and pack-zoo commands."""
    jobs = snakemake_dry_run("zoo")
    stages = dvc_stages.zoo_stages(load_params()).values()
    assert {j["cmd"] for j in jobs} == {s["cmd"] for s in stages}
    assert {o for j in jobs for o in j["outputs"]} == {"models/pretrained/tiny/summary.json", "models/zoo/tiny/zoo.json"}


def test_every_job_writes_its_log_and_the_measured_rules_a_benchmark(smk_jobs):
    """logs/<scale>/<rule>/<job>.log for every job (logs/<rule>/... without a scale); benchmark files
    for pretraining, caches, trainings and evaluations, where diffris.pipeline (report-costs) expects them."""
    params = load_params()
    scale = params["scale"]
    assert all(j["log"] and j["log"].startswith(("logs/mini/", "logs/pretrain_backbone/", "logs/fetch_weights/")) for j in smk_jobs)
    assert len({j["log"] for j in smk_jobs}) == len(smk_jobs)  # one log per job
    benchmarks = {j["benchmark"] for j in smk_jobs if j["benchmark"]}
    measured = {rule for rule, _ in pipeline_jobs.benchmarked_jobs(params, scale)}
    assert {j["rule"] for j in smk_jobs if j["benchmark"]} == measured <= set(pipeline_jobs.BENCHMARKED)
    expected = {pipeline_jobs.job_file(pipeline_jobs.BENCHMARKS, scale, rule, job, ".tsv") for rule, job in pipeline_jobs.benchmarked_jobs(params, scale)}
    assert benchmarks == expected
    assert {j["rule"] for j in smk_jobs} & SNAKEMAKE_ONLY_RULES == set()  # not part of `all`: `snakemake costs`


def test_dvc_and_snakemake_have_the_same_commands_and_outputs():
    """Every job of `all` and `studies` but the Snakemake-only ones (SNAKEMAKE_ONLY_RULES, in
    neither) is a stage of dvc.yaml or studies/dvc.yaml with the same command (less the log
    redirect) and outputs; the studies' (and the zoo's) stages run from the repository root."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = repo.index.stages
        dvc = {s.cmd: [str(o.def_path) for o in s.outs] for s in stages if not s.path_in_repo.startswith("zoo/")}
        wdirs = {stage.path_in_repo: stage.wdir for stage in stages}
    assert {Path(w).resolve() for w in wdirs.values()} == {REPO.resolve()}
    smk = {job["cmd"]: job["outputs"] for job in snakemake_dry_run("all", "studies")}
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
