"""Building blocks shared by the decoders."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class TextFeatures:
    """The refined linguistic features every decoder receives."""

    tokens: Tensor  # [B, T, D_l], the CP-adapter's output L^
    mask: Tensor  # bool [B, T], True for real tokens (right padding)

    def at_end_of_text(self, sequence: Tensor) -> Tensor:
        """Rows of ``sequence`` [B, T, C] at CLIP's end-of-text token, the last real one: [B, C]."""
        index = self.mask.sum(dim=1) - 1
        return sequence[torch.arange(sequence.shape[0], device=sequence.device), index]

    @property
    def sentence(self) -> Tensor:
        """The sentence feature: L^ at the end-of-text position (what CLIP pools)."""
        return self.at_end_of_text(self.tokens)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups for wide layers and proportionally fewer for narrow ones."""
    return nn.GroupNorm(math.gcd(32, max(channels // 4, 1)), channels)


def conv_gn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        group_norm(out_channels),
        nn.ReLU(inplace=True),
    )


def resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (no-op when the size already matches)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class MLP(nn.Sequential):
    """Linear - GELU - Linear."""

    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, out or dim))


class FeatureLift(nn.Module):
    """Lift the UNet taps c1..c4 by 2x and project them to one width: V1..V4 at strides 4/8/16/32.

    Only the ``levels`` the decoder reads are built (None stands in for the others). A 1x1
    projection commutes with bilinear interpolation, so it runs first, on the smaller map;
    GroupNorm follows the resize. Target sizes come from the input size, so V_i sits exactly at
    stride 2^(i+1) even when the latent size is not a power of two.
    """

    def __init__(self, in_channels: tuple[int, ...], dim: int, levels: tuple[int, ...] = (0, 1, 2, 3)):
        super().__init__()
        self.projections = nn.ModuleDict({str(i): nn.Conv2d(in_channels[i], dim, 1) for i in levels})
        self.norms = nn.ModuleDict({str(i): group_norm(dim) for i in levels})

    def forward(self, taps: list[Tensor], image_size: tuple[int, int]) -> list[Tensor | None]:
        feats: list[Tensor | None] = []
        for level, tap in enumerate(taps):
            key = str(level)
            if key not in self.projections:
                feats.append(None)
                continue
            stride = 2 ** (level + 2)
            size = (image_size[0] // stride, image_size[1] // stride)
            feats.append(self.norms[key](resize(self.projections[key](tap), size)))
        return feats


class DynamicMaskHead(nn.Module):
    """Two 1x1 convolution kernels (and biases) generated from the sentence feature:
    ``logits[k] = w_k(s) . x + b_k(s)`` for k in {background, foreground}."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.dim = dim
        self.generate = nn.Sequential(nn.Linear(text_dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 2 * dim + 2))

    def forward(self, x: Tensor, sentence: Tensor) -> Tensor:
        params = self.generate(sentence)
        weight = params[:, : 2 * self.dim].view(-1, 2, self.dim) / math.sqrt(self.dim)
        bias = params[:, 2 * self.dim :]
        return torch.einsum("bkc,bchw->bkhw", weight, x) + bias[:, :, None, None]
