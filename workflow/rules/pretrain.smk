# pretrain-backbone: a tiny backbone pretrained as a latent text-to-image diffusion model; its
# checkpoints (params.yaml `pretraining.<run>.unet.checkpoints`) feed fetch-weights.


rule pretrain_backbone:
    output:
        "models/pretrained/{run}/summary.json",
    input:
        code("models", "data", "pretraining"),
    params:
        spec=lambda w: config["pretraining"][w.run],
        start=lambda w: config["backbones"][config["pretraining"][w.run]["architecture"]],
    threads: 1
    shell:
        "python -m diffris pretrain-backbone --run {wildcards.run} --out models/pretrained/{wildcards.run}"
