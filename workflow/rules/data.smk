# fetch -> prepare. A real fetch verifies checksums or a placed layout; a synthetic one writes the twin.


rule fetch:
    output:
        "data/raw/{scale}/{dataset}/FETCHED.json",
    input:
        code("data"),
    params:
        source=lambda w: config["scales"][w.scale]["data_source"],
        synthetic=lambda w: config["scales"][w.scale]["synthetic"],
        seed=config["seed"],
    log:
        log_of("fetch", "{dataset}"),
    conda:
        ENV
    shell:
        "python -m diffris fetch --dataset {wildcards.dataset} --scale {wildcards.scale}"
        " --out data/raw/{wildcards.scale}/{wildcards.dataset} > {log} 2>&1"


rule prepare:
    output:
        "data/prepared/{scale}/{dataset}/summary.json",
    input:
        ancient("data/raw/{scale}/{dataset}/FETCHED.json"),
        code("data"),
    params:
        image_size=lambda w: jobs.image_size(config, w.scale),
    log:
        log_of("prepare", "{dataset}"),
    conda:
        ENV
    shell:
        "python -m diffris prepare --dataset {wildcards.dataset} --raw data/raw/{wildcards.scale}/{wildcards.dataset}"
        " --out data/prepared/{wildcards.scale}/{wildcards.dataset} --image-size {params.image_size} > {log} 2>&1"
