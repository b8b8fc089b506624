"""The architecture of a Stable Diffusion 1.x-shaped backbone: the constructor arguments of its
UNet, VAE and CLIP text encoder, for SD 1.x itself and for the tiny generated backbones.

An ``Architecture`` builds the three networks with random weights, with no download and no
weights file: ``fetch-weights`` seeds it to generate tiny backbones, ``describe-model`` counts
its parameters on the meta device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from diffris.errors import ConfigError
from diffris.models.config import from_dict
from diffris.models.tokenizer import BOS, EOS, build_vocab

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # only fetch-weights (via the CLI) turns the Hub on

CROSS_ATTN_DOWN, DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_ATTN_UP, UP = "CrossAttnUpBlock2D", "UpBlock2D"


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a generated tiny backbone (``backbones.<name>.tiny`` in params.yaml)."""

    seed: int
    unet_channels: tuple[int, ...]  # four levels, SD's block types
    unet_layers_per_block: int
    unet_heads: int
    vae_channels: tuple[int, ...]  # four levels -> factor-8 latent
    vae_layers_per_block: int
    norm_groups: int
    text_width: int
    text_layers: int
    text_heads: int
    text_ffn: int
    max_length: int  # CLIP position embeddings and tokenizer model_max_length


@dataclass(frozen=True)
class Architecture:
    """Constructor arguments of the three networks; enough to build them with random weights."""

    unet: dict
    vae: dict
    text: dict

    def instantiate(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        return UNet2DConditionModel(**self.unet), AutoencoderKL(**self.vae), CLIPTextModel(CLIPTextConfig(**self.text))

    @classmethod
    def from_folder(cls, path: Path) -> Architecture:
        """The architecture recorded in a backbone folder's config files."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig

        text = CLIPTextConfig.from_pretrained(path / "text_encoder").to_dict()
        return cls(
            unet=dict(UNet2DConditionModel.load_config(path / "unet")),
            vae=dict(AutoencoderKL.load_config(path / "vae")),
            text={k: v for k, v in text.items() if not k.startswith("_")},
        )


def unet_arguments(channels: tuple[int, ...], layers: int, heads: int, context: int, groups: int) -> dict:
    """UNet2DConditionModel arguments with SD 1.x block types (four levels)."""
    return {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": tuple(channels),
        "layers_per_block": layers,
        "down_block_types": (CROSS_ATTN_DOWN,) * 3 + (DOWN,),
        "up_block_types": (UP,) + (CROSS_ATTN_UP,) * 3,
        "cross_attention_dim": context,
        "attention_head_dim": heads,  # in SD 1.x configs this field is the number of heads
        "norm_num_groups": groups,
    }


def vae_arguments(channels: tuple[int, ...], layers: int, groups: int) -> dict:
    """AutoencoderKL arguments: len(channels) levels, downsampling 2^(levels-1)."""
    levels = len(channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(channels),
        "layers_per_block": layers,
        "latent_channels": 4,
        "norm_num_groups": groups,
        "scaling_factor": 0.18215,
    }


def sd1_architecture() -> Architecture:
    """Stable Diffusion 1.x (v1-1 ... v1-5 share it) with CLIP ViT-L/14's text encoder."""
    return Architecture(
        unet={**unet_arguments((320, 640, 1280, 1280), 2, 8, 768, 32), "sample_size": 64},
        vae={**vae_arguments((128, 256, 512, 512), 2, 32), "sample_size": 512},
        text={
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "projection_dim": 768,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
    )


def tiny_architecture(spec: TinySpec) -> Architecture:
    vocab, _ = build_vocab()
    if len(spec.unet_channels) != 4 or len(spec.vae_channels) != 4:
        raise ConfigError("tiny backbones keep SD's four UNet and four VAE levels")
    return Architecture(
        unet=unet_arguments(
            spec.unet_channels, spec.unet_layers_per_block, spec.unet_heads, spec.text_width, spec.norm_groups
        ),
        vae=vae_arguments(spec.vae_channels, spec.vae_layers_per_block, spec.norm_groups),
        text={
            "vocab_size": len(vocab),
            "hidden_size": spec.text_width,
            "intermediate_size": spec.text_ffn,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "max_position_embeddings": spec.max_length,
            "hidden_act": "quick_gelu",
            "projection_dim": spec.text_width,
            "bos_token_id": vocab[BOS],
            "eos_token_id": vocab[EOS],
            "pad_token_id": vocab[EOS],
        },
    )


def tiny_spec(entry: dict, name: str) -> TinySpec:
    return from_dict(TinySpec, entry["tiny"], f"backbones.{name}.tiny")


def sd1_random_architecture() -> Architecture:
    """SD 1.x's architecture with the tiny backbones' tokenizer vocabulary (77 positions): the
    random-weight control at the paper scale, generated without any download."""
    vocab, _ = build_vocab()
    sd1 = sd1_architecture()
    ids = {"vocab_size": len(vocab), "bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}
    return Architecture(sd1.unet, sd1.vae, {**sd1.text, **ids})

