"""DiffRIS: frozen SD backbone + CP-adapter + 2x feature lift + decoder (the contract in
docs/interfaces.md)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from diffris.errors import ConfigError
from diffris.models.backbone import FrozenBackbone
from diffris.models.config import ModelConfig
from diffris.models.cp_adapter import CPAdapter
from diffris.models.decoders import build_decoder
from diffris.models.layers import FeatureLift, TextFeatures, resize
from diffris.models.loss import SegmentationLoss

COMPONENTS = ("cp_adapter", "neck", "decoder", "backbone.unet", "backbone.vae", "backbone.text_encoder")


class DiffRIS(nn.Module):
    def __init__(self, config: ModelConfig, backbone: FrozenBackbone):
        super().__init__()
        if config.text_max_length > backbone.max_text_length:
            raise ConfigError(
                f"text_max_length {config.text_max_length} exceeds the text encoder's "
                f"{backbone.max_text_length} positions ({backbone.name})"
            )
        self.config = config
        self.backbone = backbone
        self.cp_adapter = CPAdapter(config.cp_adapter, backbone.text_dim)
        self.decoder = build_decoder(config, backbone.text_dim)
        self.neck = FeatureLift(backbone.tap_channels, config.feature_dim, self.decoder.levels)
        self.criterion = SegmentationLoss(config.loss)

    def tokenize(self, expressions: list[str]) -> tuple[Tensor, Tensor]:
        """Padded to ``text_max_length`` and truncated (the end-of-text token is kept)."""
        enc = self.backbone.tokenizer(
            list(expressions),
            padding="max_length",
            max_length=self.config.text_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """pixel_values [B, 3, S, S] in [-1, 1] -> logits [B, 2, S, S]."""
        size = tuple(pixel_values.shape[-2:])
        text, taps = self.encode(pixel_values, input_ids, attention_mask)
        return resize(self.decoder(self.neck(taps, size), text), size)

    def encode(
        self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> tuple[TextFeatures, list[Tensor]]:
        """The refined text L^ and the UNet taps c1..c4 (before the 2x lift)."""
        mask = attention_mask.bool()
        text = TextFeatures(self.cp_adapter(self.backbone.encode_text(input_ids), mask), mask)
        latents = self.backbone.encode_image(pixel_values, self.config.latent_scaling)
        # Without a trainable adapter nothing upstream of the UNet needs a gradient.
        with torch.set_grad_enabled(torch.is_grad_enabled() and text.tokens.requires_grad):
            taps = self.backbone.unet_features(latents, self.config.timestep, text.tokens)
        return text, taps

    def loss(self, logits: Tensor, masks: Tensor) -> Tensor:
        return self.criterion(logits, masks)

    def train(self, mode: bool = True) -> DiffRIS:
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Only the parameters with requires_grad (no decoder here keeps buffers)."""
        return {name: p.detach().clone() for name, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of ``trainable_state_dict``; the key sets must match exactly."""
        expected = {name for name, p in self.named_parameters() if p.requires_grad}
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ConfigError(
                f"trainable weights do not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
        self.load_state_dict(state, strict=False)

    def backbone_info(self) -> dict[str, str]:
        return {
            "name": self.backbone.name,
            "revision": self.backbone.revision,
            "weights_sha256": self.backbone.weights_sha256(),
        }

    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        """component -> (trainable, frozen) parameter counts."""
        counts = {}
        for name in COMPONENTS:
            params = list(self.get_submodule(name).parameters())
            trainable = sum(p.numel() for p in params if p.requires_grad)
            counts[name] = (trainable, sum(p.numel() for p in params) - trainable)
        return counts


def build_model(config: ModelConfig, backbone_dir: str | Path) -> DiffRIS:
    """The model for ``config`` on the backbone folder written by ``diffris fetch-weights``.

    Trainable weights are drawn from torch's global RNG: seed it first for a reproducible start.
    """
    return DiffRIS(config, FrozenBackbone.from_folder(backbone_dir, expected_name=config.backbone))
