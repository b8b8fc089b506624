# pretrain-backbone: a tiny backbone pretrained as a latent text-to-image diffusion model; its
# checkpoints (params.yaml `pretraining.<run>.unet.checkpoints`) feed fetch-weights. No scale:
# logs/pretrain_backbone/<run>.log, benchmarks/jobs/pretrain_backbone/<run>.tsv.


rule pretrain_backbone:
    output:
        "models/pretrained/{run}/summary.json",
    input:
        code("models", "data", "pretraining"),
    params:
        spec=lambda w: config["pretraining"][w.run],
        start=lambda w: config["backbones"][config["pretraining"][w.run]["architecture"]],
    log:
        log_of("pretrain_backbone", "{run}"),
    benchmark:
        benchmark_of("pretrain_backbone", "{run}")
    threads: 1
    conda:
        ENV
    shell:
        "python -m diffris pretrain-backbone --run {wildcards.run} --out models/pretrained/{wildcards.run} > {log} 2>&1"


# pack-zoo: a pretraining run's checkpoints as the zoo's float16 files with their sha256
# (models/zoo/<run>/); `snakemake zoo` regenerates every run the zoo ships (docs/pretraining.md).
# Nothing else depends on it: the pipeline fetches the committed zoo/ files.


rule pack_zoo:
    output:
        "models/zoo/{run}/zoo.json",
    input:
        "models/pretrained/{run}/summary.json",
        "diffris/pretraining/zoo.py",
    log:
        log_of("pack_zoo", "{run}"),
    conda:
        ENV
    shell:
        "python -m diffris pack-zoo --pretrained models/pretrained/{wildcards.run} --out models/zoo/{wildcards.run} > {log} 2>&1"


rule zoo:
    input:
        expand("models/zoo/{run}/zoo.json", run=jobs.zoo_runs(config)),
