"""CAMD: CARIS's context-aware mask decoder (Table 5, row 3), in plain PyTorch.

V2..V4 (strides 8/16/32) become one sequence of visual tokens with sine positions and level
embeddings; the refined text, projected to the decoder width, is extended by learnable visual
prompts. Each layer (post-norm): language+prompts attend to the visual tokens, language
self-attention and FFN, visual tokens attend to language+prompts, multi-scale deformable
self-attention over the three levels, visual FFN. An FPN step brings the stride-8 output to V1
(stride 4). Logits are dot products of per-pixel mask features with two class embeddings: the mean
of the prompts (background) and the sentence token (foreground; CLIP's end-of-text position,
since CLIP's causal encoder keeps nothing about the sentence at index 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffris.models.config import CAMDConfig
from diffris.models.decoders.deformable import MultiScaleDeformableAttention, reference_points
from diffris.models.layers import TextFeatures, conv_gn_relu, group_norm, resize


def sine_positions(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """2-D sine/cosine position encoding [h*w, dim] (float32): half the channels for y, half for x."""
    quarter = dim // 4
    freqs = 10000 ** (-torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    ey = torch.cat([(ys[:, None] * freqs).sin(), (ys[:, None] * freqs).cos()], dim=-1)  # [h, dim/2]
    ex = torch.cat([(xs[:, None] * freqs).sin(), (xs[:, None] * freqs).cos()], dim=-1)
    grid = torch.cat([ey[:, None, :].expand(h, w, -1), ex[None, :, :].expand(h, w, -1)], dim=-1)
    pad = dim - grid.shape[-1]
    return nn.functional.pad(grid, (0, pad)).reshape(h * w, dim)


def feed_forward(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


class VisionLanguageLayer(nn.Module):
    def __init__(self, config: CAMDConfig, levels: int):
        super().__init__()
        d, heads = config.dim, config.num_heads
        self.vision_to_language = nn.MultiheadAttention(d, heads, batch_first=True)
        self.language_self = nn.MultiheadAttention(d, heads, batch_first=True)
        self.language_ffn = feed_forward(d, config.ffn_dim)
        self.language_to_vision = nn.MultiheadAttention(d, heads, batch_first=True)
        self.deformable = MultiScaleDeformableAttention(d, heads, levels, config.num_points)
        self.vision_ffn = feed_forward(d, config.ffn_dim)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(6))
        self.gamma_language = nn.Parameter(torch.ones(d))
        self.gamma_vision = nn.Parameter(torch.ones(d))

    def forward(
        self, vis: Tensor, pos: Tensor, lang: Tensor, pad: Tensor, ref: Tensor, shapes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        """vis [B, Nv, d] with positions pos; lang [B, Nl, d] with key padding ``pad`` (True = pad)."""
        n = self.norms
        attended = self.vision_to_language(lang, vis + pos, vis, need_weights=False)[0]
        lang = n[0](lang + self.gamma_language * attended)
        lang = n[1](lang + self.language_self(lang, lang, lang, key_padding_mask=pad, need_weights=False)[0])
        lang = n[2](lang + self.language_ffn(lang))
        attended = self.language_to_vision(vis + pos, lang, lang, key_padding_mask=pad, need_weights=False)[0]
        vis = n[3](vis + self.gamma_vision * attended)
        vis = n[4](vis + self.deformable(vis + pos, ref, vis, shapes))
        vis = n[5](vis + self.vision_ffn(vis))
        return vis, lang


def pointwise_mlp(dim: int) -> nn.Sequential:
    """Three 1x1 convolutions with ReLU in between."""
    layers: list[nn.Module] = []
    for _ in range(2):
        layers += [nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Conv2d(dim, dim, 1))


class CAMD(nn.Module):
    levels = (0, 1, 2, 3)  # V1..V4 are read
    scales = 3  # V2, V3, V4 enter the transformer

    def __init__(self, config: CAMDConfig, feature_dim: int, text_dim: int):
        super().__init__()
        d = config.dim
        self.inputs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(feature_dim, d, 1), group_norm(d)) for _ in range(self.scales)
        )
        self.level_embed = nn.Parameter(torch.randn(self.scales, d))
        self.language = nn.Sequential(nn.Linear(text_dim, d), nn.LayerNorm(d))
        self.prompts = nn.Parameter(torch.randn(config.num_prompts, d))
        self.layers = nn.ModuleList(VisionLanguageLayer(config, self.scales) for _ in range(config.num_layers))
        self.lateral = nn.Sequential(nn.Conv2d(feature_dim, d, 1), group_norm(d))
        self.output = conv_gn_relu(d, d)
        self.mask_features = pointwise_mlp(d)
        self.class_embed = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, d)
        )

    def forward(self, feats: list[Tensor], text: TextFeatures) -> Tensor:
        v1, *coarse = feats
        maps = [proj(v) for proj, v in zip(self.inputs, coarse)]
        shapes = [tuple(m.shape[-2:]) for m in maps]
        vis = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
        pos = torch.cat(
            [sine_positions(h, w, vis.shape[-1], vis.device) + self.level_embed[i] for i, (h, w) in enumerate(shapes)]
        )[None]
        ref = reference_points(shapes, vis.device)
        b, prompts = vis.shape[0], self.prompts.shape[0]
        lang = torch.cat([self.language(text.tokens), self.prompts.expand(b, -1, -1)], dim=1)
        pad = torch.cat([~text.mask, text.mask.new_zeros(b, prompts)], dim=1)
        for layer in self.layers:
            vis, lang = layer(vis, pos, lang, pad, ref, shapes)
        h8, w8 = shapes[0]
        stride8 = vis[:, : h8 * w8].transpose(1, 2).reshape(b, -1, h8, w8)
        x = self.output(self.lateral(v1) + resize(stride8, v1.shape[-2:]))
        sentence = text.at_end_of_text(lang)
        classes = self.class_embed(torch.stack([lang[:, -prompts:].mean(dim=1), sentence], dim=1))
        return torch.einsum("bkc,bchw->bkhw", classes, self.mask_features(x)) / math.sqrt(x.shape[1])
