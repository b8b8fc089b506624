"""Context perception adapter (paper §3.3, Eqs. 7-13): refines CLIP's token features L into L^,
which conditions the UNet and feeds the decoder.

    H       = TransformerEncoder(L)                         (7)   global context modeling
    H'      = softmax(W_q L (W_k L)^T / sqrt(D)) W_v H + L  (8-10) object-aware reasoning
    H_enh   = Projection(H') + H'                           (11)
    H_LLM   = W_LLM H_enh                                   (12)  domain-specific adjustment
    L^      = alpha H_LLM + (1 - alpha) L                   (13)

A disabled component passes its input through. With all three off (Table 4, row 1) the adapter is
the identity and has no parameters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffris.models.config import CPAdapterConfig


class ObjectAwareReasoning(nn.Module):
    """Eqs. 8-11: queries and keys from L, values from H (single head), residual on L, then a
    residual two-layer projection with ReLU."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.projection = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, words: Tensor, context: Tensor, mask: Tensor) -> Tensor:
        scores = self.q(words) @ self.k(words).transpose(1, 2) / math.sqrt(words.shape[-1])
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))  # padded keys carry nothing
        attended = scores.softmax(dim=-1) @ self.v(context)
        h = attended + words
        return self.projection(h) + h


class LowRankAdjustment(nn.Module):
    """Eq. 12 as a LoRA update of the identity: H_LLM = (I + B A) H_enh with B zero-initialised,
    so the adjustment starts as an exact no-op (the paper: "initial weights set to zero to prevent
    excessive perturbation")."""

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.down(x))


class CPAdapter(nn.Module):
    def __init__(self, config: CPAdapterConfig, dim: int):
        super().__init__()
        self.context = self.reasoning = self.adjustment = self.alpha = None
        if config.global_context:
            layer = nn.TransformerEncoderLayer(
                dim,
                config.num_heads,
                dim_feedforward=round(config.ffn_ratio * dim),
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.context = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        if config.object_aware:
            self.reasoning = ObjectAwareReasoning(dim, max(1, round(config.projection_ratio * dim)))
        if config.domain_adjust:
            self.adjustment = LowRankAdjustment(dim, config.lora_rank)
        if config.enabled:
            self.alpha = nn.Parameter(torch.tensor(float(config.alpha_init)))

    def forward(self, words: Tensor, mask: Tensor) -> Tensor:
        """words: CLIP features L [B, T, D]; mask: bool [B, T], True for real tokens."""
        if self.alpha is None:
            return words
        h = words
        if self.context is not None:
            h = self.context(h, src_key_padding_mask=~mask)
        if self.reasoning is not None:
            h = self.reasoning(words, h, mask)
        if self.adjustment is not None:
            h = self.adjustment(h)
        return self.alpha * h + (1 - self.alpha) * words
