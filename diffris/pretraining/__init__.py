"""Pretraining the tiny SD-shaped backbones as latent text-to-image diffusion models, and sampling
from them (docs/pretraining.md). Not part of the DiffRIS model: it uses ``diffris.models``'
architectures and backbone folders, and ``diffris.models`` never imports it."""
