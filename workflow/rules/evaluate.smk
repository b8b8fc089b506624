# evaluate: metrics JSON, per-sample CSV and a few prediction PNGs per (run, split).


rule evaluate:
    output:
        json="results/{scale}/metrics/{experiment}/{dataset}/{split}.json",
        csv="results/{scale}/metrics/{experiment}/{dataset}/{split}.csv",
        predictions=directory("results/{scale}/metrics/{experiment}/{dataset}/{split}-predictions"),
    input:
        "runs/{scale}/{experiment}/{dataset}/model.safetensors",
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        TRAIN_CODE,
    params:
        backbone=backbone,
    threads: lambda w: config["scales"][w.scale]["train"].get("cpu_threads") or workflow.cores
    shell:
        "python -m diffris evaluate --run runs/{wildcards.scale}/{wildcards.experiment}/{wildcards.dataset}"
        " --split {wildcards.split} --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{params.backbone} --out {output.json}"
