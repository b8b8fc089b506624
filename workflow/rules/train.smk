# train: one run per (experiment, dataset) that a table or figure names; resumes if interrupted.


rule train:
    output:
        "runs/{scale}/{experiment}/{dataset}/model.safetensors",
    input:
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        ancient(lambda w: f"models/backbones/{backbone(w)}/backbone.json"),
        code("models"),
        TRAIN_CODE,
    params:
        run=run_config,
        backbone=backbone,
    threads: lambda w: config["scales"][w.scale]["train"].get("cpu_threads") or workflow.cores
    shell:
        "python -m diffris train --experiment {wildcards.experiment} --dataset {wildcards.dataset}"
        " --scale {wildcards.scale} --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{params.backbone} --out runs/{wildcards.scale}/{wildcards.experiment}/{wildcards.dataset}"
