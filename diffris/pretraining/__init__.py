"""The backbones DiffRIS freezes: pretraining the tiny SD-shaped ones as latent text-to-image
diffusion models, sampling from them (docs/pretraining.md), and ``diffris fetch-weights`` /
``describe-model`` (``backbones``), which put any backbone (Hub, tiny, random) into
``models/backbones/<name>/``.

Imports: the basics, ``data`` (captioned scenes) and ``models`` (architectures, backbone folders).
"""
