"""Progressive cross-modal reasoning decoder (paper §3.4, Eqs. 14-20).

Three progressive stages fuse (V3, V4) -> F3 at stride 16, (V2, F3) -> F2 at stride 8 and
(V1, F2) -> F1 at stride 4 (top-down: each stage takes the previous stage's fused map as its
coarse input). In every stage an object-aware query interaction layer (OAQIL) updates M learnable
query tokens: cross-attention to the refined text (Eqs. 14-15), then the Gumbel normalised
attention assigns every pixel of the fused map to one token (Eqs. 16-19) and the assigned
features are aggregated into the tokens (Eq. 20). The tokens carry over from stage to stage.

Mask head: every stride-4 pixel receives the updated feature of the token it is assigned to
(S_mask^T Q_u), concatenated with its fused visual feature; a 3x3 conv-GN-ReLU follows and two
1x1 kernels generated from the sentence feature give the background/foreground logits (the
dynamic convolution of the paper's baseline, kept in every row so that each Table 6 switch adds
exactly one thing).

Table 6: ``multi_scale`` off uses V1 alone (one stage at stride 4), ``query_tokens`` off drops the
OAQILs and the token features, ``hard_assign`` off uses the plain softmax assignment.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffris.models.config import PCMRDConfig
from diffris.models.layers import MLP, DynamicMaskHead, TextFeatures, conv_gn_relu, resize


def gumbel_assign(similarity: Tensor, tau: Tensor, hard: bool, training: bool, noise: str = "paper") -> Tensor:
    """Assignment of pixels to tokens from similarities [B, M, N]; every column sums to 1 over M.

    Hard, training (Eqs. 17-19): S_gumbel = softmax((S + G)/tau) over tokens with G ~ Gumbel(0, 1)
    (``noise`` "paper", Eq. 17 as printed) or softmax(S/tau + G) (``noise`` "logits", the usual
    Gumbel-softmax parameterisation, where tau does not scale the noise);
    S_onehot = onehot(argmax_M S_gumbel), S_mask = S_onehot - sg(S_gumbel) + S_gumbel: one-hot in
    the forward pass, the soft Gumbel gradient in the backward pass.
    Hard, evaluation: onehot(argmax_M S), no noise. Soft (``hard`` False): softmax(S/tau).
    """
    if not hard:
        return (similarity / tau).softmax(dim=1)
    if not training:
        return F.one_hot(similarity.argmax(dim=1), similarity.shape[1]).transpose(1, 2).to(similarity.dtype)
    uniform_exp = torch.empty_like(similarity).exponential_().clamp_min(torch.finfo(similarity.dtype).tiny)
    gumbel = -uniform_exp.log()
    logits = (similarity + gumbel) / tau if noise == "paper" else similarity / tau + gumbel
    soft = logits.softmax(dim=1)
    onehot = torch.zeros_like(soft).scatter_(1, soft.argmax(dim=1, keepdim=True), 1.0)
    return onehot - soft.detach() + soft


@torch.no_grad()
def assignment_stats(similarity: Tensor, assignment: Tensor, tau: Tensor) -> dict[str, float]:
    """Diagnostics of one stage's assignment, means over the batch (docs/model.md):

    - ``tokens_used``: distinct tokens that win at least one pixel under the clean argmax, per image;
    - ``entropy``: entropy of softmax(S/tau) over the M tokens, per pixel, divided by log M
      (1: uniform, 0: one-hot);
    - ``agreement``: share of pixels whose assignment (with the training noise, if any) picks the
      clean argmax token;
    - ``tau``.
    """
    num_tokens = similarity.shape[1]
    clean = similarity.argmax(dim=1)  # [B, N]
    used = F.one_hot(clean, num_tokens).amax(dim=1).sum(dim=1).float().mean()
    probs = (similarity / tau).softmax(dim=1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1).mean() / math.log(max(num_tokens, 2))
    agreement = (assignment.argmax(dim=1) == clean).float().mean()
    return {"tokens_used": float(used), "entropy": float(entropy), "agreement": float(agreement), "tau": float(tau)}


class QueryTextAttention(nn.Module):
    """Eqs. 14-15: Q_l = softmax(W_q Q (W_k L)^T / sqrt(C_q)) W_v L W_c, single head, padded words
    masked; added to Q and layer-normalised so that the M tokens keep their identity."""

    def __init__(self, query_dim: int, text_dim: int):
        super().__init__()
        self.q = nn.Linear(query_dim, query_dim)
        self.k = nn.Linear(text_dim, query_dim)
        self.v = nn.Linear(text_dim, query_dim)
        self.out = nn.Linear(query_dim, query_dim)  # W_c
        self.norm = nn.LayerNorm(query_dim)

    def forward(self, queries: Tensor, text: TextFeatures) -> Tensor:
        scores = self.q(queries) @ self.k(text.tokens).transpose(1, 2) / math.sqrt(queries.shape[-1])
        scores = scores.masked_fill(~text.mask[:, None, :], float("-inf"))
        attended = self.out(scores.softmax(dim=-1) @ self.v(text.tokens))
        return self.norm(queries + attended)


class OAQIL(nn.Module):
    """Object-aware query interaction layer: query-text injection, then Gumbel normalised
    attention between the tokens and one fused visual map."""

    def __init__(self, config: PCMRDConfig, text_dim: int, visual_dim: int):
        super().__init__()
        dim = config.query_dim
        self.hard = config.hard_assign
        self.noise = config.gumbel_noise
        self.tau_min = config.tau_min
        self.record_stats = False  # set by the caller: keep assignment_stats of each forward in ``stats``
        self.stats: dict[str, float] = {}
        self.text_attention = QueryTextAttention(dim, text_dim)
        self.project_tokens = nn.Linear(dim, dim)  # W_t
        self.project_pixels = nn.Conv2d(visual_dim, dim, 1)  # W_d
        self.log_tau = nn.Parameter(torch.tensor(math.log(config.tau_init)), requires_grad=config.tau_learnable)
        # Before Eq. 16 (docs/model.md): pixel embeddings of post-ReLU maps share one direction, so
        # one token wins nearly every pixel; "centred" removes each image's mean pixel embedding,
        # then GroupViT's LayerNorms of tokens and pixels (Fig. 4's normalisation layers) follow.
        self.centre_pixels = config.assign_norm == "centred"
        self.norm_tokens = nn.LayerNorm(dim) if config.assign_norm != "none" else nn.Identity()
        self.norm_pixels = nn.LayerNorm(dim) if config.assign_norm != "none" else nn.Identity()
        self.norm = nn.LayerNorm(dim)
        self.mlp = MLP(dim, round(config.mlp_ratio * dim))

    @property
    def tau(self) -> Tensor:
        return self.log_tau.exp().clamp(min=self.tau_min)

    def forward(self, queries: Tensor, text: TextFeatures, visual: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the updated tokens Q_u [B, M, C_q] and the assignment S_mask [B, M, N]."""
        tokens = self.project_tokens(self.text_attention(queries, text))  # W_t Q_l
        pixels = self.project_pixels(visual).flatten(2).transpose(1, 2)  # flatten(W_d V) [B, N, C_q]
        centred = pixels - pixels.mean(dim=1, keepdim=True) if self.centre_pixels else pixels
        keys, values = self.norm_tokens(tokens), self.norm_pixels(centred)
        similarity = F.normalize(keys, dim=-1) @ F.normalize(values, dim=-1).transpose(1, 2)  # Eq. 16
        assignment = gumbel_assign(similarity, self.tau, self.hard, self.training, self.noise)
        if self.record_stats:
            self.stats = assignment_stats(similarity, assignment, self.tau)
        # Eq. 20 with the assigned sum divided by (count + 1): a per-token mean, independent of
        # the stage's resolution (GroupViT's normalisation).
        pooled = (assignment @ pixels) / (assignment.sum(dim=-1, keepdim=True) + 1.0)
        return self.mlp(self.norm(pooled)) + tokens, assignment


class Fuse(nn.Module):
    """Upsample the coarse map to the fine one, concatenate, 3x3 conv-GN-ReLU."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = conv_gn_relu(2 * dim, dim)

    def forward(self, fine: Tensor, coarse: Tensor) -> Tensor:
        return self.conv(torch.cat([fine, resize(coarse, fine.shape[-2:])], dim=1))


class PCMRD(nn.Module):
    def __init__(self, config: PCMRDConfig, feature_dim: int, text_dim: int):
        super().__init__()
        self.config = config
        self.levels = (0, 1, 2, 3) if config.multi_scale else (0,)  # which of V1..V4 are read
        stages = 3 if config.multi_scale else 1
        if config.multi_scale:
            self.fusions = nn.ModuleList(Fuse(feature_dim) for _ in range(stages))
        else:
            self.stem = conv_gn_relu(feature_dim, feature_dim)
        head_in = feature_dim
        if config.query_tokens:
            self.queries = nn.Parameter(torch.randn(config.num_queries, config.query_dim))
            self.layers = nn.ModuleList(OAQIL(config, text_dim, feature_dim) for _ in range(stages))
            head_in += config.query_dim
        self.head = conv_gn_relu(head_in, feature_dim)
        self.classify = DynamicMaskHead(text_dim, feature_dim)

    def stage_maps(self, feats: list[Tensor]) -> list[Tensor]:
        """Fused maps, coarse to fine; the last is at stride 4."""
        if not self.config.multi_scale:
            return [self.stem(feats[0])]
        v1, v2, v3, v4 = feats
        maps = [self.fusions[0](v3, v4)]
        maps.append(self.fusions[1](v2, maps[-1]))
        maps.append(self.fusions[2](v1, maps[-1]))
        return maps

    def forward(self, feats: list[Tensor], text: TextFeatures) -> Tensor:
        """V1..V4 -> two logits at stride 4."""
        maps = self.stage_maps(feats)
        x = maps[-1]
        if self.config.query_tokens:
            tokens = self.queries.expand(x.shape[0], -1, -1)
            for layer, visual in zip(self.layers, maps):
                tokens, assignment = layer(tokens, text, visual)
            per_pixel = (assignment.transpose(1, 2) @ tokens).transpose(1, 2)  # S_mask^T Q_u
            x = torch.cat([x, per_pixel.reshape(x.shape[0], -1, *x.shape[-2:])], dim=1)
        return self.classify(self.head(x), text.sentence)


class AssignmentMonitor:
    """Averages ``assignment_stats`` of a model's OAQILs (stage 1 = coarsest) over the forward
    passes since the last ``read``: what training logs per epoch and evaluation per split."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, OAQIL)]
        for layer in self.layers:
            layer.record_stats = True
        self._sums: list[dict[str, float]] = [{} for _ in self.layers]
        self._count = 0

    def update(self) -> None:
        if not self.layers:
            return
        for sums, layer in zip(self._sums, self.layers):
            for key, value in layer.stats.items():
                sums[key] = sums.get(key, 0.0) + value
        self._count += 1

    def state_dict(self) -> dict:
        """The running sums, for a checkpoint taken mid-epoch (``load_state_dict`` restores them)."""
        return {"sums": [dict(s) for s in self._sums], "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        self._sums, self._count = [dict(s) for s in state["sums"]], state["count"]

    def read(self, digits: int = 4) -> dict[str, dict[str, float]]:
        """{"stage1": {tokens_used, entropy, agreement, tau}, ...}; empty without query tokens."""
        count, self._count = max(self._count, 1), 0
        out = {
            f"stage{i + 1}": {key: round(value / count, digits) for key, value in sorted(sums.items())}
            for i, sums in enumerate(self._sums)
            if sums
        }
        self._sums = [{} for _ in self.layers]
        return out
