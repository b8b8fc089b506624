# evaluate: metrics JSON, per-sample CSV and a few prediction PNGs per (run, seed, split); the
# shuffled-expression control (a table row with `evaluation: shuffled`) as <split>-shuffled.*.


rule evaluate:
    output:
        json="results/{scale}/metrics/{experiment}/{dataset}/seed{seed}/{split}.json",
        csv="results/{scale}/metrics/{experiment}/{dataset}/seed{seed}/{split}.csv",
        predictions=directory("results/{scale}/metrics/{experiment}/{dataset}/seed{seed}/{split}-predictions"),
    input:
        "runs/{scale}/{experiment}/{dataset}/seed{seed}/model.safetensors",
        "runs/{scale}/{experiment}/{dataset}/seed{seed}/trained.json",  # train writes it last: a failed run reruns
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        features_input,
        EVAL_CODE,
    params:
        backbone=backbone,
        features=features_option,
        control="",
        run=run_config,  # the run's config: a changed experiment reruns this job, and so its training if that failed
    log:
        log_of("evaluate", "{experiment}/{dataset}/seed{seed}/{split}"),
    benchmark:
        benchmark_of("evaluate", "{experiment}/{dataset}/seed{seed}/{split}")
    threads: cpu_threads
    resources:
        gpu=evaluate_gpus,
    conda:
        ENV
    shell:
        "python -m diffris evaluate --run runs/{wildcards.scale}/{wildcards.experiment}/{wildcards.dataset}/seed{wildcards.seed}"
        " --split {wildcards.split} --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{params.backbone}{params.features} --out {output.json}{params.control} > {log} 2>&1"


use rule evaluate as evaluate_shuffled with:
    output:
        json="results/{scale}/metrics/{experiment}/{dataset}/seed{seed}/{split}-shuffled.json",
        csv="results/{scale}/metrics/{experiment}/{dataset}/seed{seed}/{split}-shuffled.csv",
        predictions=directory("results/{scale}/metrics/{experiment}/{dataset}/seed{seed}/{split}-shuffled-predictions"),
    params:
        backbone=backbone,
        features=features_option,
        control=" --shuffle-expressions",
        run=run_config,
    log:
        log_of("evaluate_shuffled", "{experiment}/{dataset}/seed{seed}/{split}"),
    benchmark:
        benchmark_of("evaluate_shuffled", "{experiment}/{dataset}/seed{seed}/{split}")
