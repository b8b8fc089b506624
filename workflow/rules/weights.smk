# fetch-weights: a Hub snapshot at a pinned revision, or a generated tiny backbone.


rule fetch_weights:
    output:
        "models/backbones/{backbone}/backbone.json",
    input:
        code("models"),
    params:
        spec=lambda w: config["backbones"][w.backbone],
    shell:
        "python -m diffris fetch-weights --backbone {wildcards.backbone} --out models/backbones/{wildcards.backbone}"
