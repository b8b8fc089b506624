# report: the paper's tables beside the regenerated rows (cells: the mean over seeds) with their
# intervals, the figures, the comparison page.


rule report_tables:
    output:
        expand("results/{{scale}}/tables/{table}{kind}.csv", table=TABLES, kind=("", "-intervals")),
    input:
        lambda w: evaluation_files(w, ".json", ".csv"),
        "results/reference/table1.csv",
        code("report"),
    params:
        tables=config["tables"],
    shell:
        "python -m diffris report-tables --reference results/reference --metrics results/{wildcards.scale}/metrics"
        " --scale {wildcards.scale} --out results/{wildcards.scale}/tables --quiet"


rule environment:
    """What the results depend on (CPU kernel pin, versions, threads; no host, no time):
    rewritten with every regeneration of the tables (docs/reproducibility.md)."""
    output:
        "results/{scale}/ENVIRONMENT.json",
    input:
        expand("results/{{scale}}/tables/{table}.csv", table=TABLES),
    shell:
        "python -m diffris environment --scale {wildcards.scale} --out {output}"


rule report_figures:
    output:
        expand("results/{{scale}}/figures/{figure}.png", figure=FIGURES),
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
    shell:
        "python -m diffris report-figures --tables results/{wildcards.scale}/tables --metrics results/{wildcards.scale}/metrics"
        " --data data/prepared/{wildcards.scale} --out results/{wildcards.scale}/figures"


rule report_comparison:
    output:
        "results/{scale}/comparison.md",
    input:
        expand("results/{{scale}}/tables/{table}{kind}.csv", table=TABLES, kind=("", "-intervals")),
        code("report"),
    shell:
        "python -m diffris report-comparison --tables results/{wildcards.scale}/tables --scale {wildcards.scale}"
        " --out {output}"
