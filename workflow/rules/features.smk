# cache-features: the frozen VAE/CLIP (and, for runs without CP-adapter, UNet) outputs of a prepared
# dataset, once per (dataset, backbone); train and evaluate read them (scales.<scale>.features).


def feature_cache(wildcards):
    return pipeline.FeatureCache(wildcards.dataset, wildcards.backbone)


def latent_donor_input(wildcards):
    """The cache whose latents this one may reuse (same VAE sha256, checked when it runs)."""
    donor = pipeline.latent_donor(config, wildcards.scale, feature_cache(wildcards))
    return [f"{donor.folder(wildcards.scale)}/cache.json"] if donor else []


def features_input(wildcards):
    """A run's feature cache, when the scale enables caches. Not ancient: a rebuilt cache must
    rerun its runs in the same pass (Snakemake does not check the params of a job downstream of
    one that reruns, so a text_max_length change would otherwise need a second pass)."""
    cache = pipeline.feature_cache_of(config, wildcards.scale, wildcards.experiment, wildcards.dataset)
    return [f"{cache.folder(wildcards.scale)}/cache.json", *code("features")] if cache else []


def features_option(wildcards):
    return pipeline.features_option(config, wildcards.scale, wildcards.experiment, wildcards.dataset)


rule cache_features:
    output:
        "features/{scale}/{dataset}/{backbone}/cache.json",
    input:
        ancient("data/prepared/{scale}/{dataset}/summary.json"),
        ancient("models/backbones/{backbone}/backbone.json"),
        latent_donor_input,
        code("models", "features"),
    params:
        options=lambda w: pipeline.feature_cache_options(config, w.scale, feature_cache(w)),
        settings=lambda w: config["scales"][w.scale]["features"],
    threads: lambda w: config["scales"][w.scale]["train"].get("cpu_threads") or workflow.cores
    shell:
        "python -m diffris cache-features --data data/prepared/{wildcards.scale}/{wildcards.dataset}"
        " --backbone-dir models/backbones/{wildcards.backbone}{params.options}"
        " --out features/{wildcards.scale}/{wildcards.dataset}/{wildcards.backbone}"
