# train: one run per (experiment, dataset) that a table or figure names and per seed of the scale
# (scales.<scale>.seeds); resumes if interrupted.


rule train:
    output:
        # update: Snakemake keeps (and backs up) the old weights while the job runs and restores
        # them if it fails; train replaces them only once the new ones exist. trained.json, written
        # last, is removed when the job starts, so a failed job is run again next time.
        update("runs/{scale}/{experiment}/{dataset}/seed{seed}/model.safetensors"),
        "runs/{scale}/{experiment}/{dataset}/seed{seed}/trained.json",
    input:
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        ancient(lambda w: f"models/backbones/{backbone(w)}/backbone.json"),
        features_input,
        code("models"),
        TRAIN_CODE,
    params:
        run=run_config,
        backbone=backbone,
        features=features_option,
    log:
        log_of("train", "{experiment}/{dataset}/seed{seed}"),
    benchmark:
        benchmark_of("train", "{experiment}/{dataset}/seed{seed}")
    threads: cpu_threads
    resources:
        # one process per GPU (diffris launch); sizes for a cluster: workflow/profiles/slurm
        gpu=lambda w: config.get("train_gpus", {}).get(w.scale, 0),
    conda:
        ENV
    shell:
        "python -m diffris launch --gpus {resources.gpu} train --experiment {wildcards.experiment} --dataset {wildcards.dataset}"
        " --seed {wildcards.seed} --scale {wildcards.scale} --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{params.backbone}{params.features}"
        " --out runs/{wildcards.scale}/{wildcards.experiment}/{wildcards.dataset}/seed{wildcards.seed} > {log} 2>&1"
