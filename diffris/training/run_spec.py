"""What defines a training run before its model is built: the scale's budget and the run spec.

``run_spec_from_params`` resolves params.yaml for one (experiment, dataset, scale); the spec is
what ``diffris train`` writes to its run folder's ``config.json`` (``diffris.training.run_folder``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from diffris.errors import ConfigError

SELECT_CHOICES = ("last", "best-val")


@dataclass(frozen=True)
class TrainConfig:
    """The training budget of one scale (``scales.<scale>.train`` in params.yaml)."""

    epochs: int
    batch_size: int  # global: summed over processes and accumulation steps
    micro_batch_size: int  # most samples one process puts through one forward
    lr: float
    weight_decay: float
    poly_power: float
    checkpoint_every_steps: int  # 0: at epoch ends only
    val_every_epochs: int  # 0: never (then select must be "last")
    select: str  # "last" | "best-val"
    eval_batch_size: int
    num_workers: int
    mixed_precision: str  # "auto" (bf16 where the GPU supports it, else fp32) | "bf16" | "fp32"
    cpu_threads: int = 0  # torch CPU threads; 0: torch's default. Results are bit-identical only for equal counts
    # Fast paths (docs/benchmarks.md): the same maths, other kernels or memory layouts.
    channels_last: bool = False  # NHWC convolutions in the VAE and UNet (faster on GPUs with tensor cores)
    gradient_checkpointing: bool = False  # recompute UNet activations in the backward: less memory, more compute
    compile: bool = False  # torch.compile the UNet (first steps slower; needs a C++ compiler on CPU)
    prefetch_factor: int = 2  # batches each data-loader worker keeps ready (with num_workers > 0)

    def __post_init__(self) -> None:
        if self.select not in SELECT_CHOICES:
            raise ConfigError(f"train.select: {self.select!r} is not one of {SELECT_CHOICES}")
        if self.select == "best-val" and self.val_every_epochs == 0:
            raise ConfigError("train.select is best-val but train.val_every_epochs is 0")


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a training run, before the model is built."""

    experiment: str
    dataset: str
    scale: str
    seed: int
    image_size: int
    model: dict  # the experiment's model config, JSON-serialisable
    train: TrainConfig
    data: Path
    backbone_dir: Path
    features: Path | None = None  # a feature cache (diffris.features); None: frozen passes on the fly

    def to_json(self, backbone: dict) -> dict:
        record = asdict(self)
        features = None if self.features is None else str(self.features)
        record.update(data=str(self.data), backbone_dir=str(self.backbone_dir), features=features, backbone=backbone)
        return json.loads(json.dumps(record))  # as it reads back from config.json



def run_spec_from_params(
    params: dict,
    scale: str | None,
    experiment: str,
    dataset: str,
    data: Path,
    backbone_dir: Path,
    features: Path | None = None,
) -> RunSpec:
    """The run of ``experiment`` on ``dataset`` with the budget of ``scale`` (default: params')."""
    from diffris.config import scale_params
    from diffris.models import config_from_params

    scale = scale or params["scale"]
    settings = scale_params(params, scale)
    return RunSpec(
        experiment=experiment,
        dataset=dataset,
        scale=scale,
        seed=params["seed"],
        image_size=settings["image_size"],
        model=asdict(config_from_params(params, experiment, scale)),
        train=TrainConfig(**settings["train"]),
        data=Path(data),
        backbone_dir=Path(backbone_dir),
        features=None if features is None else Path(features),
    )

