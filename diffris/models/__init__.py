"""DiffRIS and its ablation variants: frozen Stable Diffusion backbone, CP-adapter, decoders.

Owns the network: its config, the SD-shaped architectures, the frozen backbone and its feature
taps, getting weights into a diffusers folder, the CP-adapter, PCMRD, the decoders and the loss.

Imports: the shared basics only. Every later stage builds on it; it sits before ``pretraining``
because pretraining trains the SD-shaped networks defined here (models never imports pretraining).
"""

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


def __getattr__(name: str):
    """``DiffRIS`` and ``build_model`` load torch and diffusers: import them only when asked for,
    so that reading configs (the CLI's parser, Snakemake's DAG) stays fast."""
    if name in ("DiffRIS", "build_model"):
        from diffris.models import model

        return getattr(model, name)
    raise AttributeError(f"module 'diffris.models' has no attribute {name!r}")


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
