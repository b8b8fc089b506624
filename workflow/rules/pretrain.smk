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
