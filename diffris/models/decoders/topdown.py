"""LMP and OAD: the top-down mask predictors of LAVT and RMSIN (Table 5, rows 1-2).

Three stages: upsample the coarser map to the finer one, concatenate, two 3x3 conv-norm-ReLU;
then a 1x1 conv to two logits at stride 4. OAD replaces each stage's second convolution by an
adaptive rotated convolution. Neither looks at the text: in both source models language is fused
in the encoder, here through the UNet's cross-attention on the refined text.
GroupNorm replaces the originals' BatchNorm so that results do not depend on the batch size.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffris.models.decoders.rotated_conv import AdaptiveRotatedConv2d
from diffris.models.layers import TextFeatures, conv_gn_relu, group_norm, resize


class TopDownStage(nn.Module):
    def __init__(self, in_channels: int, hidden: int, second: nn.Module):
        super().__init__()
        self.first = conv_gn_relu(in_channels, hidden)
        self.second = nn.Sequential(second, group_norm(hidden), nn.ReLU(inplace=True))

    def forward(self, coarse: Tensor, fine: Tensor) -> Tensor:
        x = torch.cat([resize(coarse, fine.shape[-2:]), fine], dim=1)
        return self.second(self.first(x))


class TopDownDecoder(nn.Module):
    levels = (0, 1, 2, 3)  # V1..V4 are read

    def __init__(self, feature_dim: int, hidden: int, rotated: tuple[float, float] | None = None):
        """``rotated``: (max_angle, route_dropout) for OAD's rotated convolutions; None for LMP."""
        super().__init__()

        def second() -> nn.Module:
            if rotated is None:
                return nn.Conv2d(hidden, hidden, 3, padding=1, bias=False)
            return AdaptiveRotatedConv2d(hidden, hidden, *rotated)

        self.stages = nn.ModuleList(
            TopDownStage(c + feature_dim, hidden, second()) for c in (feature_dim, hidden, hidden)
        )
        self.classify = nn.Conv2d(hidden, 2, 1)

    def forward(self, feats: list[Tensor], text: TextFeatures) -> Tensor:
        v1, v2, v3, v4 = feats
        x = v4
        for stage, fine in zip(self.stages, (v3, v2, v1)):
            x = stage(x, fine)
        return self.classify(x)
