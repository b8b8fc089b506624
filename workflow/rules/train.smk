# train: one run per (experiment, dataset) that a table or figure names; resumes if interrupted.


rule train:
    output:
        "runs/{scale}/{experiment}/{dataset}/model.safetensors",
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
    threads: lambda w: config["scales"][w.scale]["train"].get("cpu_threads") or workflow.cores
    resources:
        # one process per GPU (diffris launch); sizes for a cluster: workflow/profiles/slurm
        gpu=lambda w: config.get("train_gpus", {}).get(w.scale, 0),
    shell:
        "python -m diffris launch --gpus {resources.gpu} train --experiment {wildcards.experiment} --dataset {wildcards.dataset}"
        " --scale {wildcards.scale} --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{params.backbone}{params.features} --out runs/{wildcards.scale}/{wildcards.experiment}/{wildcards.dataset}"
