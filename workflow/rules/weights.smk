# fetch-weights: a Hub snapshot at a pinned revision, a generated backbone, a checkpoint shipped in
# the zoo (zoo/, checksummed), or a checkpoint of a pretraining run (then the command names its
# folder: diffris.pipeline.fetch_weights_cmd).


rule fetch_weights:
    output:
        "models/backbones/{backbone}/backbone.json",
    input:
        pretraining_input,
        code("models"),
        jobs.WEIGHTS_CODE,
    params:
        spec=lambda w: config["backbones"][w.backbone],
        cmd=lambda w: jobs.fetch_weights_cmd(config, w.backbone),
    log:
        log_of("fetch_weights", "{backbone}"),
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


# measure-grounding: how much each backbone of the scale grounds its text (docs/pretraining.md),
# in the order of its SD versions; a scale without `grounding` settings (paper) has no such job.


rule measure_grounding:
    output:
        "results/{scale}/grounding.csv",
    input:
        lambda w: [f"models/backbones/{b}/backbone.json" for b in jobs.grounding_backbones(config, w.scale)],
        code("models", "data", "pretraining"),
    params:
        cmd=lambda w: jobs.grounding_cmd(config, w.scale),
    log:
        log_of("measure_grounding", "grounding"),
    threads: 1
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"
