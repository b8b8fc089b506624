# evaluate: metrics JSON, per-sample CSV and a few prediction PNGs per (run, split).


rule evaluate:
    output:
        json="results/{scale}/metrics/{experiment}/{dataset}/{split}.json",
        csv="results/{scale}/metrics/{experiment}/{dataset}/{split}.csv",
        predictions=directory("results/{scale}/metrics/{experiment}/{dataset}/{split}-predictions"),
    input:
        "runs/{scale}/{experiment}/{dataset}/model.safetensors",
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        features_input,
        TRAIN_CODE,
    params:
        backbone=backbone,
        features=features_option,
    threads: lambda w: config["scales"][w.scale]["train"].get("cpu_threads") or workflow.cores
    resources:
        # one GPU where the scale trains on GPUs, so the global `gpu` limit counts evaluations too
        gpu=lambda w: min(config.get("train_gpus", {}).get(w.scale, 0), 1),
    shell:
        "python -m diffris evaluate --run runs/{wildcards.scale}/{wildcards.experiment}/{wildcards.dataset}"
        " --split {wildcards.split} --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{params.backbone}{params.features} --out {output.json}"
