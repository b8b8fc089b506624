# The DiffRIS suite: fetch -> prepare -> fetch-weights -> measure-grounding -> train -> evaluate -> report.
# `snakemake --cores all` builds the configured scale; `--config scale=paper` the paper scale.
# Backbones come from the Hub, the checksummed zoo/ or a pretrain-backbone run; `snakemake zoo`
# regenerates the zoo's pretraining (about 50 CPU-minutes).
# Wiring only: every job runs `python -m diffris <command>`; the job list comes from params.yaml.
# Each job writes logs/<scale>/<rule>/<job>.log; pretraining, caches, trainings and evaluations
# also benchmarks/jobs/<scale>/<rule>/<job>.tsv, gathered by `snakemake costs` (docs/pipeline.md).

from snakemake.utils import min_version, validate

from diffris.pipeline.params_check import check_workflow_config

min_version("9.20")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # snakemake --report results/<scale>/report.html (docs/pipeline.md)


validate(config, "workflow/schemas/params.schema.yaml")
check_workflow_config(config, workflow.configfiles)  # cross-references, duplicate keys: before any planning


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/studies.smk"


rule all:
    input:
        REPORT_OUTPUTS,
