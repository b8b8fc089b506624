# Helpers shared by the rules: the job lists, the code each step depends on, the per-job log and
# benchmark paths. No logic here beyond naming things: diffris.pipeline derives the lists from
# params.yaml. Every function the rule files call lives here, so they hold rules only (snakemake --lint).

from pathlib import Path

from snakemake.exceptions import WorkflowError

from diffris.pipeline import jobs
from diffris.studies import plan as study_plan
from diffris.studies.plan import study_settings

SCALE = config["scale"]
RUNS = jobs.runs(config)
EVALS = jobs.evaluations(config)
TABLES = [*config["tables"]]
FIRST_SEED = config["seed"]  # the qualitative figures show the first seed's predictions
FIGURES = ["fig5", "fig6", "fig7", "fig8", "assignment"]  # assignment: PCMRD diagnostics (docs/model.md)
TRAIN_CODE = jobs.TRAIN_CODE
EVAL_CODE = jobs.EVAL_CODE
# The software of every job: a conda env that pip-installs this package with constraints.txt
# (used with `--sdm conda`, e.g. on GPU nodes; locally the .venv runs the jobs). Relative to workflow/rules/.
ENV = "../envs/diffris.yaml"


def code(*packages):
    """The Python files a step depends on, so a change to a table formatter retrains nothing."""
    return sorted(str(p) for pkg in packages for p in Path("diffris", pkg).rglob("*.py"))


def log_of(rule, job):
    """logs/<scale>/<rule>/<job>.log (logs/<rule>/<job>.log for a scale-free rule); job: wildcards as a path."""
    return jobs.job_file(jobs.LOGS, "{scale}", rule, job, ".log")


def benchmark_of(rule, job):
    """benchmarks/jobs/<scale>/<rule>/<job>.tsv: gathered by `diffris report-costs` (rule costs)."""
    return jobs.job_file(jobs.BENCHMARKS, "{scale}", rule, job, ".tsv")


def backbone(wildcards):
    return jobs.backbone_of(config, wildcards.scale, wildcards.experiment)


def run_config(wildcards):
    """What a run depends on in params.yaml, as Snakemake `params` (a change reruns the job)."""
    return jobs.run_params(config, wildcards.scale, wildcards.experiment, wildcards.dataset, int(wildcards.seed))


def cpu_threads(wildcards):
    return config["scales"][wildcards.scale]["train"].get("cpu_threads") or workflow.cores


def evaluation_files(wildcards, *suffixes):
    """Every evaluation's files (``.json``, ``.csv``) of every seed at the scale: the report's inputs."""
    scale = wildcards.scale
    return [f"{e.base(scale, seed)}{s}" for e in EVALS for seed in jobs.seeds(config, scale, e.experiment) for s in suffixes]


def trained_files(wildcards):
    """Every run's trained.json at the scale (written last, after log.jsonl): report-curves' inputs."""
    return [f"{r.folder(wildcards.scale, s)}/trained.json" for r in RUNS for s in jobs.seeds(config, wildcards.scale, r.experiment)]


# --- data, weights, feature caches


def pretraining_input(wildcards):
    run, zoo = jobs.pretrained_from(config, wildcards.backbone), jobs.zoo_file(config, wildcards.backbone)
    return [f"models/pretrained/{run}/summary.json"] if run else [zoo] if zoo else []


def feature_cache(wildcards):
    return jobs.FeatureCache(wildcards.dataset, wildcards.backbone)


def latent_donor_input(wildcards):
    """The cache whose latents this one may reuse (same VAE sha256, checked when it runs)."""
    donor = jobs.latent_donor(config, wildcards.scale, feature_cache(wildcards))
    return [f"{donor.folder(wildcards.scale)}/cache.json"] if donor else []


def features_input(wildcards):
    """A run's feature cache, when the scale enables caches. Not ancient: a rebuilt cache must
    rerun its runs in the same pass (Snakemake does not check the params of a job downstream of
    one that reruns, so a text_max_length change would otherwise need a second pass)."""
    cache = jobs.feature_cache_of(config, wildcards.scale, wildcards.experiment, wildcards.dataset)
    return [f"{cache.folder(wildcards.scale)}/cache.json", *code("features")] if cache else []


def features_option(wildcards):
    return jobs.features_option(config, wildcards.scale, wildcards.experiment, wildcards.dataset)


# --- evaluation


def evaluate_gpus(wildcards):
    """One GPU where the scale trains on GPUs, so the global `gpu` limit counts evaluations too."""
    return min(config.get("train_gpus", {}).get(wildcards.scale, 0), 1)


# --- report: outputs with their captions for `snakemake --report` (workflow/report/)


def reported_tables(scale):
    """The tables and their intervals, each with its caption, in the report's "Tables" category."""
    return [report(
        f"results/{scale}/tables/{table}{kind}.csv",
        caption=f"../report/{'intervals' if kind else table}.rst",
        category="Tables",
        subcategory="intervals" if kind else "cells",
        labels={"table": table, "content": "intervals" if kind else "cells"},
    ) for table in TABLES for kind in ("", "-intervals")]  # fmt: skip (a line may not start with `report`)


def reported_figures(scale):
    return [report(
        f"results/{scale}/figures/{figure}.png", caption=f"../report/{figure}.rst", category="Figures", labels={"figure": figure}
    ) for figure in FIGURES]  # fmt: skip


wildcard_constraints:
    seed=r"\d+",
    split="val|test",
    dataset="rrsisd|refsegrs|risbench",  # not rrsisd-touching: that split has its own rule (studies.smk)


def final_outputs(scale):
    """What `all` builds at a scale: tables, figures, comparison, environment, training curves and
    (where the scale measures it) the backbones' grounding."""
    return [
        *jobs.grounding_files(config, scale),
        *expand("results/{scale}/tables/{table}{kind}.csv", scale=scale, table=TABLES, kind=("", "-intervals")),
        *expand("results/{scale}/figures/{figure}.png", scale=scale, figure=FIGURES),
        f"results/{scale}/comparison.md",
        f"results/{scale}/ENVIRONMENT.json",
        f"results/{scale}/curves",
    ]


REPORT_OUTPUTS = final_outputs(SCALE)


# --- studies (workflow/rules/studies.smk)

STUDY_OUTPUTS = study_plan.study_outputs(config, SCALE)
_COST = study_settings(config, SCALE).get("cost", {})
TIMED_COST = "|".join(a for a in _COST.get("architectures", []) if a in _COST.get("timing", [])) or "(?!)"  # (?!): matches nothing
UNTIMED_COST = "|".join(a for a in _COST.get("architectures", []) if a not in _COST.get("timing", [])) or "(?!)"  # (?!): matches nothing


def study_evaluation_files(wildcards, study):
    """The plain evaluations (JSON and per-sample CSV, every seed) a rows-of-experiments study reads."""
    settings = study_settings(config, wildcards.scale)[study]
    experiments = [study_plan.trained_as(config, wildcards.scale, e) for e in [settings["reference"], *(r["experiment"] for r in settings["rows"])]]
    return [
        f"{jobs.Evaluation(e, ds, split).base(wildcards.scale, seed)}{suffix}"
        for e in dict.fromkeys(experiments)
        for ds, split in study_plan.variant_evaluations(settings)
        for seed in jobs.seeds(config, wildcards.scale, e)
        for suffix in (".json", ".csv")
    ]


def all_cores(wildcards):
    """Every local core, so that the job runs alone; 1 under a cluster executor, which has no core count."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def study_run(wildcards, dataset):
    return study_plan.StudyRun(wildcards.experiment, dataset, int(wildcards.seed))


def attention_inputs(wildcards):
    """The run a qualitative figure shows (first seed), its prepared split and backbone."""
    run = study_plan.attention_source(config, wildcards.scale, wildcards.figure)
    return [
        f"{run.folder(wildcards.scale)}/model.safetensors",
        f"{run.folder(wildcards.scale)}/trained.json",
        ancient(f"data/prepared/{wildcards.scale}/{run.dataset}/summary.json"),
    ]
