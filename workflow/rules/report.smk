# report: the paper's tables beside the regenerated rows (cells: the mean over seeds) with their
# intervals, the figures, the comparison page, every run's training curves; and, Snakemake only,
# the cost of the jobs (rule costs). report(): shown by `snakemake --report` (workflow/report/).


rule report_tables:
    output:
        reported_tables("{scale}"),
    input:
        lambda w: evaluation_files(w, ".json", ".csv"),
        "results/reference/table1.csv",
        code("report"),
    params:
        tables=config["tables"],
    log:
        log_of("report_tables", "tables"),
    conda:
        ENV
    shell:
        "python -m diffris report-tables --reference results/reference --metrics results/{wildcards.scale}/metrics"
        " --scale {wildcards.scale} --out results/{wildcards.scale}/tables --quiet > {log} 2>&1"


rule environment:
    """What the results depend on (CPU kernel pin, versions, threads; no host, no time):
    rewritten with every regeneration of the tables (docs/reproducibility.md)."""
    output:
        report("results/{scale}/ENVIRONMENT.json", caption="../report/environment.rst", category="Comparison"),
    input:
        expand("results/{{scale}}/tables/{table}.csv", table=TABLES),
    log:
        log_of("environment", "environment"),
    conda:
        ENV
    shell:
        "python -m diffris environment --scale {wildcards.scale} --out {output} > {log} 2>&1"


rule report_figures:
    output:
        reported_figures("{scale}"),
    input:
        "results/{scale}/tables/fig8.csv",
        "results/{scale}/tables/fig8-intervals.csv",
        lambda w: [
            f"results/{w.scale}/metrics/{f['experiment']}/{f['dataset']}/seed{FIRST_SEED}/{f['split']}{kind}"
            for f in config["figures"].values()
            for kind in ("-predictions", ".json")
        ],
        lambda w: [ancient(f"data/prepared/{w.scale}/{f['dataset']}/summary.json") for f in config["figures"].values()],
        code("report"),
    params:
        figures=config["figures"],
    log:
        log_of("report_figures", "figures"),
    conda:
        ENV
    shell:
        "python -m diffris report-figures --tables results/{wildcards.scale}/tables --metrics results/{wildcards.scale}/metrics"
        " --data data/prepared/{wildcards.scale} --out results/{wildcards.scale}/figures > {log} 2>&1"


rule report_comparison:
    output:
        report("results/{scale}/comparison.md", caption="../report/comparison.rst", category="Comparison"),
    input:
        expand("results/{{scale}}/tables/{table}{kind}.csv", table=TABLES, kind=("", "-intervals")),
        lambda w: jobs.grounding_files(config, w.scale),
        code("report"),
    params:
        grounding=lambda w: "".join(f" --grounding {g}" for g in jobs.grounding_files(config, w.scale)),
    log:
        log_of("report_comparison", "comparison"),
    conda:
        ENV
    shell:
        "python -m diffris report-comparison --tables results/{wildcards.scale}/tables --scale {wildcards.scale}"
        "{params.grounding} --out {output} > {log} 2>&1"


rule report_curves:
    output:
        directory("results/{scale}/curves"),  # <experiment>/<dataset>/seed<k>[-steps].csv
    input:
        trained_files,
        code("report"),
    log:
        log_of("report_curves", "curves"),
    conda:
        ENV
    shell:
        "python -m diffris report-curves --runs runs/{wildcards.scale} --scale {wildcards.scale}"
        " --out results/{wildcards.scale}/curves > {log} 2>&1"


rule report_costs:
    """Snakemake only (DVC has no benchmark files): runs after every job of the scale and gathers
    their benchmark files; not part of `all`, so a tree built by `dvc repro` is not re-measured."""
    output:
        csv="benchmarks/results/jobs-{scale}.csv",
        md="benchmarks/results/jobs-{scale}.md",
    input:
        lambda w: final_outputs(w.scale),
    params:
        benchmarks=jobs.BENCHMARKS,
    log:
        log_of("report_costs", "costs"),
    conda:
        ENV
    shell:
        "python -m diffris report-costs --benchmarks {params.benchmarks} --scale {wildcards.scale} --out {output.csv} > {log} 2>&1"


localrules:
    costs,


rule costs:
    """`snakemake costs`: the cost table of the configured scale (after building it)."""
    input:
        f"benchmarks/results/jobs-{SCALE}.csv",
