"""The models that ``diffris measure-cost`` (``diffris.studies.cost``) measures, and its
machine-dependent numbers: latency per image and, on a GPU, the measured training peak.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diffris.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from diffris.models.config import ModelConfig
    from diffris.models.model import DiffRIS


TEXT_TOKENS = 8  # real tokens of the example expression; the rest is padding, as in training
MIB = 2**20


@dataclass(frozen=True)
class Target:
    """The sizes one measurement builds: those of ``scale`` at side ``image_size``."""

    architecture: str  # scale | paper
    scale: str
    image_size: int


def mib(nbytes: int) -> str:
    return f"{nbytes / MIB:.3f}"


# --- building ---------------------------------------------------------------------------------


def variant_configs(params: dict, target: Target, experiments: list[str]) -> list[ModelConfig]:
    from diffris.models import config_from_params

    return [config_from_params(params, name, target.scale) for name in experiments]


def build_variant(params: dict, config: ModelConfig, device: torch.device, backbones: dict) -> DiffRIS:
    """The variant's model with random weights on ``device`` (``meta``: shapes only); its frozen
    backbone is built once per backbone name and shared by the variants in ``backbones``."""
    import torch

    from diffris.pretraining.backbones import architecture_of
    from diffris.models.backbone import FrozenBackbone
    from diffris.models.config import backbone_spec
    from diffris.models.model import DiffRIS

    torch.manual_seed(0)
    with torch.device(device):
        if config.backbone not in backbones:
            arch = architecture_of(backbone_spec(params, config.backbone), config.backbone, params)
            backbones[config.backbone] = FrozenBackbone.from_architecture(arch, config.backbone)
        return DiffRIS(config, backbones[config.backbone])


def example_batch(model: DiffRIS, size: int, device: torch.device) -> tuple[dict, torch.Tensor]:
    """One sample: model inputs (pixels in [-1, 1], token ids, attention mask) and a target mask."""
    import torch

    g = torch.Generator().manual_seed(0)
    length, vocab = model.config.text_max_length, model.backbone.text_encoder.config.vocab_size
    inputs = {
        "pixel_values": torch.rand(1, 3, size, size, generator=g) * 2 - 1,
        "input_ids": torch.randint(0, vocab, (1, length), generator=g),
        "attention_mask": (torch.arange(length) < min(TEXT_TOKENS, length)).long()[None],
    }
    target = torch.rand(1, size, size, generator=g) < 0.1
    return {k: v.to(device) for k, v in inputs.items()}, target.to(device)


# --- machine-dependent numbers ------------------------------------------------------------------


def measure_timings(
    params: dict, target: Target, experiments: list[str], args: argparse.Namespace
) -> list[dict[str, str]]:
    """One formatted row of ``TIMING_COLUMNS`` per experiment, with random weights on the device."""
    import torch
    from tqdm.auto import tqdm

    from diffris.determinism import requested_isa

    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if on_gpu else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    kind, name = device_name(device)
    backbones, rows = {}, []
    configs = variant_configs(params, target, experiments)
    for experiment, config in zip(tqdm(experiments, desc="measure-cost: timings", unit="variant"), configs):
        model = build_variant(params, config, device, backbones)
        inputs, mask = example_batch(model, target.image_size, device)
        times = latencies(model, inputs, args.warmup, args.repeats, device)
        peak = training_peak(model, inputs, mask, device)
        rows.append(
            {
                "experiment": experiment,
                "architecture": target.architecture,
                "image_size": str(target.image_size),
                "device_kind": kind,
                "device": name,
                "torch": torch.__version__,
                "cpu_isa": requested_isa(),
                "threads": str(args.threads),
                "warmup": str(args.warmup),
                "repeats": str(args.repeats),
                "latency_ms_median": f"{statistics.median(times) * 1e3:.2f}",
                "latency_ms_min": f"{min(times) * 1e3:.2f}",
                "latency_ms_max": f"{max(times) * 1e3:.2f}",
                "train_peak_mib": "" if peak is None else mib(peak),
            }
        )
        del model, inputs, mask
        gc.collect()
    return rows


def latencies(model: DiffRIS, inputs: dict, warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Seconds per image of the inference forward and argmax, for each of the timed passes."""
    import torch

    model.eval()
    times = []
    with torch.inference_mode():
        for index in range(warmup + repeats):
            start = synchronized_clock(device)
            model(**inputs).argmax(dim=1)
            if index >= warmup:
                times.append(synchronized_clock(device) - start)
    return times


def training_peak(model: DiffRIS, inputs: dict, mask: torch.Tensor, device: torch.device) -> int | None:
    """Peak bytes allocated by one real training step on a GPU (weights included); None on a CPU."""
    import torch

    from diffris.training.trainer import param_groups

    if device.type != "cuda":
        return None
    model.train()
    optimizer = torch.optim.AdamW(param_groups(model, 0.01), lr=1e-5)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    model.loss(model(**inputs), mask).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def synchronized_clock(device: torch.device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def device_name(device: torch.device) -> tuple[str, str]:
    """(``cpu`` or ``cuda``, the GPU's name or the CPU's model string from /proc/cpuinfo)."""
    import torch

    from diffris.determinism import cpu_model

    if device.type == "cuda":
        return "cuda", torch.cuda.get_device_name(device)
    return "cpu", cpu_model()
