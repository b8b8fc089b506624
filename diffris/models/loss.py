"""Two-class weighted cross-entropy (LAVT/VPD/CARIS, weights [0.9, 1.1]) and a Dice term, each with a weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffris.models.config import LossConfig
from diffris.models.layers import resize


def dice_loss(logits: Tensor, target: Tensor, smooth: float = 1.0) -> Tensor:
    """1 - Dice of the softmax probabilities against the one-hot target, per sample and class,
    averaged (a mean rather than RMSIN's sum, so the weight does not depend on the batch size)."""
    probs = logits.softmax(dim=1).flatten(2)
    onehot = F.one_hot(target, 2).permute(0, 3, 1, 2).flatten(2).to(probs.dtype)
    overlap = (probs * onehot).sum(-1)
    total = probs.sum(-1) + onehot.sum(-1)
    return (1 - (2 * overlap + smooth) / (total + smooth)).mean()


class SegmentationLoss(nn.Module):
    def __init__(self, config: LossConfig):
        super().__init__()
        self.register_buffer("class_weights", torch.tensor(config.class_weights), persistent=False)
        self.ce_weight = config.ce_weight
        self.dice_weight = config.dice_weight

    def forward(self, logits: Tensor, masks: Tensor) -> Tensor:
        """logits [B, 2, h, w], upsampled bilinearly to the masks' size; masks bool [B, H, W]."""
        logits = resize(logits.float(), masks.shape[-2:])
        target = masks.long()
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits, target, weight=self.class_weights.to(logits.device))
        if self.dice_weight:
            loss = loss + self.dice_weight * dice_loss(logits, target)
        return loss
