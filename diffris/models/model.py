"""DiffRIS: frozen SD backbone + CP-adapter + 2x feature lift + decoder (the contract in
docs/interfaces.md)."""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class BackboneFeatures:
    """The frozen parts' output for a batch; a feature cache holds exactly these numbers."""

    text: Tensor  # CLIP last_hidden_state [B, T, D]
    attention_mask: Tensor  # [B, T], 1 for real tokens
    image_size: tuple[int, int]  # network input side, the size of the logits
    latents: Tensor | None = None  # VAE posterior mode, unscaled [B, 4, S/8, S/8]
    taps: list[Tensor] | None = None  # UNet taps c1..c4; only for a model with the CP-adapter off

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.preserve_format) -> BackboneFeatures:
        def move(t: Tensor) -> Tensor:
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=memory_format) if t.ndim == 4 else t

        return BackboneFeatures(
            text=move(self.text),
            attention_mask=move(self.attention_mask),
            image_size=self.image_size,
            latents=None if self.latents is None else move(self.latents),
            taps=None if self.taps is None else [move(t) for t in self.taps],
        )


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

    @property
    def unet_input_is_frozen(self) -> bool:
        """True when no trainable parameter acts before the UNet (CP-adapter off): its taps can
        then be computed once and cached (``diffris.features``)."""
        return not any(p.requires_grad for p in self.cp_adapter.parameters())

    def forward(
        self,
        pixel_values: Tensor | None = None,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        features: BackboneFeatures | None = None,
    ) -> Tensor:
        """pixel_values [B, 3, S, S] in [-1, 1] -> logits [B, 2, S, S]; or, from a feature cache,
        ``features`` instead of the three tensors (the same numbers, without the frozen passes)."""
        if features is None:
            features = self.backbone_features(pixel_values, input_ids, attention_mask)
        text, taps = self.encode_features(features)
        size = features.image_size
        return resize(self.decoder(self.neck(taps, size), text), size)

    @torch.no_grad()
    def backbone_features(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor) -> BackboneFeatures:
        """What the frozen VAE and text encoder make of a batch: what a feature cache stores."""
        return BackboneFeatures(
            text=self.backbone.encode_text(input_ids),
            attention_mask=attention_mask,
            image_size=tuple(pixel_values.shape[-2:]),
            latents=self.backbone.encode_image(pixel_values, scaled=False),
        )

    def encode(
        self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor
    ) -> tuple[TextFeatures, list[Tensor]]:
        """The refined text L^ and the UNet taps c1..c4 (before the 2x lift)."""
        return self.encode_features(self.backbone_features(pixel_values, input_ids, attention_mask))

    def encode_features(self, features: BackboneFeatures) -> tuple[TextFeatures, list[Tensor]]:
        mask = features.attention_mask.bool()
        text = TextFeatures(self.cp_adapter(features.text, mask), mask)
        if features.taps is not None:
            if not self.unet_input_is_frozen:
                raise ConfigError("cached UNet features need a model whose CP-adapter is off (no trainable UNet input)")
            return text, features.taps
        latents = features.latents
        if self.config.latent_scaling:
            latents = latents * self.backbone.vae.config.scaling_factor
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
