"""DiffRIS and its ablation variants: frozen Stable Diffusion backbone, CP-adapter, decoders."""

from diffris.models.config import (
    CAMDConfig,
    CPAdapterConfig,
    LMPConfig,
    LossConfig,
    ModelConfig,
    OADConfig,
    PCMRDConfig,
    config_from_params,
)
from diffris.models.model import DiffRIS, build_model

__all__ = [
    "CAMDConfig",
    "CPAdapterConfig",
    "DiffRIS",
    "LMPConfig",
    "LossConfig",
    "ModelConfig",
    "OADConfig",
    "PCMRDConfig",
    "build_model",
    "config_from_params",
]
