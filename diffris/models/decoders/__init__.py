"""The four decoders of Table 5; each maps V1..V4 and the refined text to two logits at stride 4."""

from __future__ import annotations

from torch import nn

from diffris.models.config import ModelConfig
from diffris.models.decoders.camd import CAMD
from diffris.models.decoders.topdown import TopDownDecoder
from diffris.models.pcmrd import PCMRD


def build_decoder(config: ModelConfig, text_dim: int) -> nn.Module:
    d = config.feature_dim
    builders = {
        "lmp": lambda: TopDownDecoder(d, config.lmp.hidden_dim),
        "oad": lambda: TopDownDecoder(d, config.oad.hidden_dim, (config.oad.max_angle, config.oad.route_dropout)),
        "camd": lambda: CAMD(config.camd, d, text_dim),
        "pcmrd": lambda: PCMRD(config.pcmrd, d, text_dim),
    }
    return builders[config.decoder]()
