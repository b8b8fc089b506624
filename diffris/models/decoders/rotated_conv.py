"""Adaptive rotated convolution (RMSIN's ARC, one kernel): a routing function predicts, per sample,
an angle and a gate; the 3x3 kernel is rotated by resampling its nine taps bilinearly and applied
as a per-sample (grouped) convolution."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (x, y) coordinates of the nine taps of a 3x3 kernel, row-major
_TAPS = torch.tensor([(x, y) for y in (-1.0, 0.0, 1.0) for x in (-1.0, 0.0, 1.0)])


def rotation_resampling(theta: Tensor) -> Tensor:
    """[B] angles (radians) -> [B, 9, 9] matrices R with rotated_taps = R @ taps.

    Output tap p reads the original kernel at R(-theta) p with bilinear weights over the 3x3 grid
    (zero outside it), so a rotation by 0 is the identity and the result is differentiable in theta.
    """
    taps = _TAPS.to(theta)
    cos, sin = theta.cos()[:, None], theta.sin()[:, None]
    src_x = taps[:, 0] * cos + taps[:, 1] * sin  # [B, 9]
    src_y = -taps[:, 0] * sin + taps[:, 1] * cos
    wx = (1 - (src_x[:, :, None] - taps[:, 0]).abs()).clamp(min=0)  # [B, 9 out, 9 in]
    wy = (1 - (src_y[:, :, None] - taps[:, 1]).abs()).clamp(min=0)
    return wx * wy


class AdaptiveRotatedConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, max_angle: float, dropout: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.max_angle = math.radians(max_angle)
        self.route = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            nn.GroupNorm(1, in_channels),  # LayerNorm over the routing features
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
        )
        self.gate = nn.Linear(in_channels, 1)
        self.angle = nn.Linear(in_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        routing = self.route(x)
        gate = torch.sigmoid(self.gate(routing))[:, 0]
        theta = F.softsign(self.angle(routing))[:, 0] * self.max_angle
        taps = self.weight.flatten(2)  # [O, I, 9]
        rotated = torch.einsum("bpq,oiq->boip", rotation_resampling(theta), taps)
        kernels = (rotated * gate[:, None, None, None]).reshape(-1, c, 3, 3)
        out = F.conv2d(x.reshape(1, b * c, h, w), kernels, padding=1, groups=b)
        return out.view(b, -1, h, w)
