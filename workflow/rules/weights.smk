# fetch-weights: a Hub snapshot at a pinned revision, a generated backbone, or a checkpoint of a
# pretraining run (then the command names its folder: diffris.pipeline.fetch_weights_cmd).


rule fetch_weights:
    output:
        "models/backbones/{backbone}/backbone.json",
    input:
        pretraining_input,
        code("models"),
        "diffris/pretraining/backbones.py",
    params:
        spec=lambda w: config["backbones"][w.backbone],
        cmd=lambda w: jobs.fetch_weights_cmd(config, w.backbone),
    log:
        log_of("fetch_weights", "{backbone}"),
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"
