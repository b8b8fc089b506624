# Helpers shared by the rules: the job lists and the code each step depends on. No logic here
# beyond naming things: diffris.pipeline derives the lists from params.yaml.

from pathlib import Path

from diffris import pipeline

SCALE = config["scale"]
RUNS = pipeline.runs(config)
EVALS = pipeline.evaluations(config)
TABLES = [*config["tables"]]
FIRST_SEED = config["seed"]  # the qualitative figures show the first seed's predictions
FIGURES = ["fig5", "fig6", "fig7", "fig8", "assignment"]  # assignment: PCMRD diagnostics (docs/model.md)
TRAIN_CODE = [f"diffris/{name}.py" for name in ("train", "run_spec", "run_folder", "run_log", "batches", "checkpoint", "evaluate", "metrics")]


def code(*packages):
    """The Python files a step depends on, so a change to a table formatter retrains nothing."""
    return sorted(str(p) for pkg in packages for p in Path("diffris", pkg).rglob("*.py"))


def backbone(wildcards):
    return pipeline.backbone_of(config, wildcards.scale, wildcards.experiment)


def run_config(wildcards):
    """What a run depends on in params.yaml, as Snakemake `params` (a change reruns the job)."""
    return pipeline.run_params(config, wildcards.scale, wildcards.experiment, wildcards.dataset, int(wildcards.seed))


def evaluation_files(wildcards, *suffixes):
    """Every evaluation's files (``.json``, ``.csv``) of every seed at the scale: the report's inputs."""
    scale = wildcards.scale
    return [f"{e.base(scale, seed)}{s}" for e in EVALS for seed in pipeline.seeds(config, scale, e.experiment) for s in suffixes]


wildcard_constraints:
    seed=r"\d+",
    split="val|test",


REPORT_OUTPUTS = [
    *expand("results/{scale}/tables/{table}{kind}.csv", scale=SCALE, table=TABLES, kind=("", "-intervals")),
    *expand("results/{scale}/figures/{figure}.png", scale=SCALE, figure=FIGURES),
    f"results/{SCALE}/comparison.md",
    f"results/{SCALE}/ENVIRONMENT.json",
]
