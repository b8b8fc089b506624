# studies: what the paper leaves open (params.yaml `studies`, docs/studies.md). `snakemake studies`
# builds results/<scale>/studies/; not part of `all`. Their runs and plain evaluations use the
# rules train and evaluate; the jobs here are the ones only a study has. Commands come from
# diffris.studies.plan, as studies/dvc.yaml's do.


rule studies:
    input:
        STUDY_OUTPUTS,


rule report_study:
    """Gumbel temperature, loss, order of the ablations: rows of experiments with intervals."""
    output:
        csv=report("results/{scale}/studies/{study}.csv", category="Studies", labels={"study": "{study}", "file": "table"}),
        png=report("results/{scale}/studies/{study}.png", category="Studies", labels={"study": "{study}", "file": "figure"}),
    input:
        lambda w: study_evaluation_files(w, w.study),
        code("report"),
        study_plan.STUDY_CODE["variants"],
    params:
        settings=lambda w: study_settings(config, w.scale)[w.study],
        cmd=lambda w: study_plan.report_study_cmd(w.scale, w.study),
    wildcard_constraints:
        study="|".join(study_plan.VARIANT_STUDIES),
    log:
        log_of("report_study", "{study}"),
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


rule touching_data:
    """The synthetic RRSIS-D test split whose targets touch or overlap another object."""
    output:
        "data/prepared/{scale}/rrsisd-touching/summary.json",
        "data/prepared/{scale}/rrsisd-touching/bins.csv",
    input:
        code("data"),
        study_plan.STUDY_CODE["touching_data"],
    params:
        cmd=lambda w: study_plan.touching_data_cmd(config, w.scale),
    log:
        log_of("touching_data", "rrsisd-touching"),
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


rule evaluate_touching:
    output:
        json="results/{scale}/studies/touching/{experiment}/seed{seed}/test.json",
        csv="results/{scale}/studies/touching/{experiment}/seed{seed}/test.csv",
        predictions=directory("results/{scale}/studies/touching/{experiment}/seed{seed}/test-predictions"),
    input:
        "runs/{scale}/{experiment}/rrsisd/seed{seed}/model.safetensors",
        "runs/{scale}/{experiment}/rrsisd/seed{seed}/trained.json",
        "data/prepared/{scale}/rrsisd-touching/summary.json",
        EVAL_CODE,
    params:
        cmd=lambda w: study_plan.touching_evaluate_cmd(config, w.scale, study_run(w, "rrsisd")),
    log:
        log_of("evaluate_touching", "{experiment}/seed{seed}"),
    threads: cpu_threads
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


rule report_touching:
    output:
        csv=report("results/{scale}/studies/touching.csv", category="Studies", labels={"study": "touching", "file": "table"}),
        png=report("results/{scale}/studies/touching.png", category="Studies", labels={"study": "touching", "file": "figure"}),
    input:
        lambda w: [f"{study_plan.touching_base(w.scale, r)}.csv" for g in study_plan.touching_runs(config, w.scale).values() for r in g],
        "data/prepared/{scale}/rrsisd-touching/bins.csv",
        code("report"),
        study_plan.STUDY_CODE["touching_report"],
    params:
        cmd=lambda w: study_plan.touching_report_cmd(config, w.scale),
    log:
        log_of("report_touching", "touching"),
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


rule evaluate_corrupted:
    """A trained run on its test split under every corruption and severity, and clean."""
    output:
        directory("results/{scale}/studies/corruptions/{experiment}/{dataset}/seed{seed}"),
    input:
        "runs/{scale}/{experiment}/{dataset}/seed{seed}/model.safetensors",
        "runs/{scale}/{experiment}/{dataset}/seed{seed}/trained.json",
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        EVAL_CODE,
        study_plan.STUDY_CODE["corrupted"],
    params:
        settings=lambda w: {k: v for k, v in study_settings(config, w.scale)["corruptions"].items() if k in ("corruptions", "severities")},
        cmd=lambda w: study_plan.corruption_cmd(config, w.scale, study_run(w, w.dataset)),
    log:
        log_of("evaluate_corrupted", "{experiment}/{dataset}/seed{seed}"),
    benchmark:
        benchmark_of("evaluate_corrupted", "{experiment}/{dataset}/seed{seed}")
    threads: cpu_threads
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


rule report_corruptions:
    output:
        csv=report("results/{scale}/studies/corruptions.csv", category="Studies", labels={"study": "corruptions", "file": "table"}),
        png=report("results/{scale}/studies/corruptions.png", category="Studies", labels={"study": "corruptions", "file": "figure"}),
    input:
        lambda w: [study_plan.corruption_folder(w.scale, r) for r in study_plan.corruption_runs(config, w.scale)],
        code("report"),
        study_plan.STUDY_CODE["corruption_report"],
    params:
        cmd=lambda w: study_plan.corruption_report_cmd(config, w.scale),
    log:
        log_of("report_corruptions", "corruptions"),
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


rule measure_cost:
    """Parameters, FLOPs and training memory of every variant (results/), counted on the meta
    device; measure_cost_timed adds the latency (benchmarks/results/) where `timing` asks."""
    output:
        csv=report("results/{scale}/studies/cost-{architecture}.csv", category="Studies", labels={"study": "cost", "file": "{architecture}"}),
        png=report("results/{scale}/studies/cost-{architecture}.png", category="Studies", labels={"study": "cost", "file": "{architecture} figure"}),
    input:
        code("models"),
        study_plan.STUDY_CODE["cost"],
    params:
        settings=lambda w: study_settings(config, w.scale)["cost"],
        cmd=lambda w: study_plan.cost_cmd(config, w.scale, w.architecture),
    wildcard_constraints:
        architecture=UNTIMED_COST,
    log:
        log_of("measure_cost", "{architecture}"),
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"


use rule measure_cost as measure_cost_timed with:
    output:
        csv=report("results/{scale}/studies/cost-{architecture}.csv", category="Studies", labels={"study": "cost", "file": "{architecture}"}),
        png=report("results/{scale}/studies/cost-{architecture}.png", category="Studies", labels={"study": "cost", "file": "{architecture} figure"}),
        timings="benchmarks/results/studies-cost-{scale}-{architecture}.csv",
    wildcard_constraints:
        architecture=TIMED_COST,
    log:
        log_of("measure_cost_timed", "{architecture}"),
    threads: all_cores  # alone on the machine: other jobs would slow the timed passes


rule attention_maps:
    output:
        csv=report("results/{scale}/studies/attention-{figure}.csv", category="Studies", labels={"study": "attention", "file": "{figure}"}),
        png=report("results/{scale}/studies/attention-{figure}.png", category="Studies", labels={"study": "attention", "file": "{figure} figure"}),
    input:
        lambda w: attention_inputs(w),
        EVAL_CODE,
        study_plan.STUDY_CODE["attention"],
    params:
        cmd=lambda w: study_plan.attention_cmd(config, w.scale, w.figure),
    wildcard_constraints:
        figure="fig5|fig6|fig7",
    log:
        log_of("attention_maps", "{figure}"),
    threads: cpu_threads
    conda:
        ENV
    shell:
        "{params.cmd} > {log} 2>&1"
