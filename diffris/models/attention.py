"""Recording a UNet's cross-attention: ``record_cross_attention(unet)`` yields, for every
cross-attention layer (``attn2`` of the transformer blocks), softmax(QK^T/sqrt(d)) over the text
tokens averaged over heads, [B, N, T], in call order. It wraps each layer's attention processor,
which still computes the layer's output (bit-identical); the wrapper recomputes the probabilities
from the layer's own projections on the side. The attention study and ``measure-grounding`` use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


@dataclass
class CrossAttention:
    """One cross-attention layer of one forward pass: probabilities [B, N, T], mean over heads."""

    layer: str
    probs: np.ndarray


class RecordingProcessor:
    """Calls the layer's own processor for its output, then recomputes softmax(QK^T) on the side
    from the same projections (``Attention.get_attention_scores``) and records its head mean."""

    def __init__(self, inner, layer: str, sink: list[CrossAttention]):
        self.inner, self.layer, self.sink = inner, layer, sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        import torch

        output = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)
        if encoder_hidden_states is None:  # self-attention through a cross-attention module: nothing to record
            return output
        with torch.no_grad():
            states = hidden_states
            if states.ndim == 4:
                states = states.flatten(2).transpose(1, 2)
            if attn.group_norm is not None:
                states = attn.group_norm(states.transpose(1, 2)).transpose(1, 2)
            context = encoder_hidden_states
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
            query = attn.head_to_batch_dim(attn.to_q(states))
            key = attn.head_to_batch_dim(attn.to_k(context))
            probs = attn.get_attention_scores(query, key, None).float()  # [B*H, N, T]
            batch = states.shape[0]
            probs = probs.view(batch, attn.heads, *probs.shape[1:]).mean(dim=1)
        self.sink.append(CrossAttention(self.layer, probs.cpu().numpy()))
        return output


def cross_attention_layers(unet) -> dict[str, object]:
    """The UNet's cross-attention modules (diffusers ``Attention`` with a text context), by name."""
    from diffusers.models.attention_processor import Attention

    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and getattr(module, "is_cross_attention", False)
    }


@contextmanager
def record_cross_attention(unet) -> Iterator[list[CrossAttention]]:
    """Wraps every cross-attention processor in a ``RecordingProcessor``; yields the list they
    fill, in call order (clear it between passes). The original processors come back on exit."""
    records: list[CrossAttention] = []
    layers = cross_attention_layers(unet)
    originals = {name: module.processor for name, module in layers.items()}
    try:
        for name, module in layers.items():
            module.set_processor(RecordingProcessor(originals[name], name, records))
        yield records
    finally:
        for name, module in layers.items():
            module.set_processor(originals[name])
