"""Multi-scale deformable attention in plain PyTorch (no compiled op): every query samples a few
points per head and level around its reference point with ``grid_sample`` and mixes them with
learned weights (Deformable DETR's formulation)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiScaleDeformableAttention(nn.Module):
    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.levels, self.points = heads, levels, points
        self.offsets = nn.Linear(dim, heads * levels * points * 2)
        self.weights = nn.Linear(dim, heads * levels * points)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self._init_sampling()

    def _init_sampling(self) -> None:
        """Start with each head looking in its own direction, point k at distance k+1 (in pixels
        of each level), and with uniform weights."""
        nn.init.zeros_(self.offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        distance = torch.arange(1, self.points + 1, dtype=torch.float32)
        grid = directions[:, None, None, :] * distance[None, None, :, None]
        with torch.no_grad():
            self.offsets.bias.copy_(grid.expand(-1, self.levels, -1, -1).reshape(-1))
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)

    def forward(self, query: Tensor, reference: Tensor, value: Tensor, shapes: list[tuple[int, int]]) -> Tensor:
        """query [B, Nq, C]; reference [Nq, 2] as (x, y) in [0, 1]; value [B, sum(h*w), C] holding
        the levels in ``shapes`` order."""
        b, nq, c = query.shape
        h, lv, p = self.heads, self.levels, self.points
        v = self.value(value).view(b, -1, h, c // h)
        offsets = self.offsets(query).view(b, nq, h, lv, p, 2)
        weights = self.weights(query).view(b, nq, h, lv * p).softmax(-1).view(b, nq, h, lv, p)
        size = torch.tensor([[w, hh] for hh, w in shapes], dtype=torch.float32, device=query.device)
        locations = reference[None, :, None, None, None, :] + offsets / size[None, None, None, :, None, :]
        grids = 2 * locations.float() - 1  # grid_sample coordinates in [-1, 1], float32
        sampled = []
        for level, (lh, lw) in enumerate(shapes):
            start = sum(hh * ww for hh, ww in shapes[:level])
            level_value = v[:, start : start + lh * lw].permute(0, 2, 3, 1).reshape(b * h, c // h, lh, lw)
            grid = grids[:, :, :, level].permute(0, 2, 1, 3, 4).reshape(b * h, nq, p, 2)
            sampled.append(F.grid_sample(level_value.float(), grid, padding_mode="zeros", align_corners=False))
        stacked = torch.stack(sampled, dim=-2)  # [B*h, C/h, Nq, levels, points]
        mix = weights.permute(0, 2, 1, 3, 4).reshape(b * h, 1, nq, lv, p)
        out = (stacked * mix).sum(dim=(-1, -2)).view(b, h, c // h, nq)
        return self.out(out.permute(0, 3, 1, 2).reshape(b, nq, c))


def reference_points(shapes: list[tuple[int, int]], device: torch.device) -> Tensor:
    """Pixel centres of every level, normalised to [0, 1], as (x, y): [sum(h*w), 2] (float32)."""
    points = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h,
            (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w,
            indexing="ij",
        )
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))
    return torch.cat(points)
