# report: the paper's tables beside the regenerated rows, the figures, the comparison page.


rule report_tables:
    output:
        expand("results/{{scale}}/tables/{table}.csv", table=TABLES),
    input:
        lambda w: expand(
            "results/{scale}/metrics/{e.experiment}/{e.dataset}/{e.split}.json", scale=w.scale, e=EVALS
        ),
        "results/reference/table1.csv",
        code("report"),
    params:
        tables=config["tables"],
    shell:
        "python -m diffris report-tables --reference results/reference --metrics results/{wildcards.scale}/metrics"
        " --out results/{wildcards.scale}/tables --quiet"


rule report_figures:
    output:
        expand("results/{{scale}}/figures/{figure}.png", figure=FIGURES),
    input:
        "results/{scale}/tables/fig8.csv",
        lambda w: [
            f"results/{w.scale}/metrics/{f['experiment']}/{f['dataset']}/{f['split']}-predictions"
            for f in config["figures"].values()
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
        expand("results/{{scale}}/tables/{table}.csv", table=TABLES),
        code("report"),
    shell:
        "python -m diffris report-comparison --tables results/{wildcards.scale}/tables --scale {wildcards.scale}"
        " --out {output}"
