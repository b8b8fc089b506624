"""The backbones DiffRIS freezes: pretraining the tiny SD-shaped ones as latent text-to-image
diffusion models, measuring how much a backbone grounds its text (``grounding``), sampling from
them (docs/pretraining.md), the checksummed model zoo (``zoo``), and ``diffris fetch-weights`` /
``describe-model`` (``backbones``), which put any backbone (Hub, zoo, tiny, random) into
``models/backbones/<name>/``.

Imports: the basics, ``data`` (captioned scenes) and ``models`` (architectures, backbone folders).
"""
