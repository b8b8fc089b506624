"""The paper-size model: SD 1.x architecture at 512x512, built and run on PyTorch's meta device.

The checks are of shapes and of where gradients flow, which the meta device computes exactly
without the minute of CPU arithmetic that real random weights take at this size (the numbers
themselves are tested at the tiny sizes; the cost study counts this model's FLOPs the same way)."""

from __future__ import annotations

import pytest
import torch

from diffris.config import load_params
from diffris.models import config_from_params
from diffris.models.architecture import sd1_architecture
from diffris.models.backbone import FrozenBackbone
from diffris.models.model import DiffRIS

SIZE = 512
BOS, EOS = 49406, 49407


META = torch.device("meta")


@pytest.fixture(scope="module")
def model() -> DiffRIS:
    config = config_from_params(load_params(), "full", scale="paper")
    with META:
        return DiffRIS(config, FrozenBackbone.from_architecture(sd1_architecture(), config.backbone)).train()


def test_paper_size_taps_and_one_training_step(model):
    length = model.config.text_max_length
    input_ids = torch.full((1, length), EOS)
    input_ids[0, :6] = torch.tensor([BOS, 320, 1205, 4381, 530, EOS])
    attention_mask = (torch.arange(length) < 6).long()[None]
    pixels = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    input_ids, attention_mask, pixels = (x.to(META) for x in (input_ids, attention_mask, pixels))

    seen = {}
    model.neck.register_forward_hook(lambda module, args, out: seen.update(taps=args[0], feats=out))
    logits = model(pixels, input_ids, attention_mask)
    assert logits.shape == (1, 2, SIZE, SIZE)
    assert [t.shape[1] for t in reversed(seen["taps"])] == [1280, 1280, 640, 320]  # V4..V1 before projection
    assert [t.shape[-1] for t in seen["taps"]] == [SIZE // s for s in (8, 16, 32, 64)]
    assert [tuple(v.shape[1:]) for v in seen["feats"]] == [(256, SIZE // s, SIZE // s) for s in (4, 8, 16, 32)]

    model.loss(logits, torch.zeros(1, SIZE, SIZE, dtype=torch.bool, device=META)).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.cp_adapter.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())
