# cache-features: the frozen VAE/CLIP (and, for runs without CP-adapter, UNet) outputs of a prepared
# dataset, once per (dataset, backbone); train and evaluate read them (scales.<scale>.features).


rule cache_features:
    output:
        "features/{scale}/{dataset}/{backbone}/cache.json",
    input:
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        ancient("models/backbones/{backbone}/backbone.json"),
        latent_donor_input,
        code("models", "features"),
    params:
        options=lambda w: jobs.feature_cache_options(config, w.scale, feature_cache(w)),
        settings=lambda w: config["scales"][w.scale]["features"],
    log:
        log_of("cache_features", "{dataset}/{backbone}"),
    benchmark:
        benchmark_of("cache_features", "{dataset}/{backbone}")
    threads: cpu_threads
    conda:
        ENV
    shell:
        "python -m diffris cache-features --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{wildcards.backbone}{params.options}"
        " --out features/{wildcards.scale}/{wildcards.dataset}/{wildcards.backbone} > {log} 2>&1"
