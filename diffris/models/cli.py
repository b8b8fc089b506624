"""Sub-commands: ``fetch-weights`` (the only Hub access for models), ``describe-model``,
``pretrain-backbone`` and ``sample-backbone`` (docs/pretraining.md)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from diffris.errors import ConfigError, DiffrisError


def register(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser(
        "fetch-weights",
        help="write a backbone folder: a Hub snapshot at its pinned revision, a generated one or a pretraining checkpoint",
    )
    fetch.add_argument("--backbone", required=True, help="a key of params.yaml `backbones`")
    fetch.add_argument("--out", required=True, type=Path, help="folder to write (diffusers layout)")
    fetch.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    fetch.add_argument("--revision", help="40-hex commit, for a Hub backbone without a pinned one")
    fetch.add_argument("--pretrained", type=Path, help="for a `pretrained` backbone: the pretrain-backbone output folder")
    fetch.set_defaults(handler=run_fetch_weights, needs_network=_downloads)

    describe = sub.add_parser("describe-model", help="trainable and frozen parameter counts per component")
    describe.add_argument("--experiment", required=True, help="a key of params.yaml `experiments`")
    describe.add_argument("--scale", help="default: params.yaml's `scale`")
    describe.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    describe.add_argument("--backbone-dir", type=Path, help="take the architecture from this backbone folder")
    describe.set_defaults(handler=run_describe)

    pretrain = sub.add_parser(
        "pretrain-backbone", help="pretrain a tiny backbone as a latent text-to-image diffusion model (its checkpoints)"
    )
    pretrain.add_argument("--run", required=True, help="a key of params.yaml `pretraining`")
    pretrain.add_argument("--out", required=True, type=Path, help="folder to write: one backbone folder per checkpoint")
    pretrain.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    pretrain.set_defaults(handler=run_pretrain)

    sample = sub.add_parser("sample-backbone", help="a grid of images sampled from backbones for a few captions (PNG)")
    sample.add_argument("--backbone-dir", required=True, type=Path, nargs="+", help="backbone folders, one grid row each")
    sample.add_argument("--out", required=True, type=Path, help="PNG file to write")
    sample.add_argument("--caption", action="append", help="a caption (repeatable; default: four scene captions)")
    sample.add_argument("--steps", type=int, default=25, help="DDIM steps (default: 25)")
    sample.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default: 3)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--image-size", type=int, default=64, help="image side in pixels (default: 64)")
    sample.add_argument("--loss-curve", type=Path, help="a pretraining's loss.csv: also plot it as <out>-loss.png")
    sample.set_defaults(handler=run_sample)


def _downloads(args: argparse.Namespace) -> bool:
    """Only a Hub backbone needs the network; a broken params.yaml is reported by the handler."""
    from diffris.config import load_params
    from diffris.models.config import backbone_spec

    try:
        return "repo_id" in backbone_spec(load_params(args.params), args.backbone)
    except DiffrisError:
        return False


def run_fetch_weights(args: argparse.Namespace) -> int:
    from diffris.config import load_params
    from diffris.models import backbone as bb
    from diffris.models.config import backbone_spec

    entry = backbone_spec(load_params(args.params), args.backbone)
    if args.revision and not re.fullmatch(r"[0-9a-f]{40}", args.revision):
        raise ConfigError(f"--revision: expected a 40-hex commit, got {args.revision!r}")
    if "pretrained" in entry:
        if args.pretrained is None:
            raise ConfigError(
                f"fetch-weights --backbone {args.backbone}: a checkpoint of pretraining run {entry['pretrained']!r};"
                f" pass --pretrained DIR (the output of `diffris pretrain-backbone --run {entry['pretrained']}`)"
            )
        out = bb.copy_pretrained_backbone(args.backbone, entry, args.pretrained, args.out)
    elif "tiny" in entry:
        out = bb.write_tiny_backbone(args.backbone, entry, args.out)
    elif "sd1_random" in entry:
        out = bb.write_sd1_random_backbone(args.backbone, entry, args.out)
    else:
        out = bb.fetch_hub_backbone(args.backbone, entry, args.out, args.revision)
    print(f"fetch-weights: {args.backbone} -> {out}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from diffris.config import load_params
    from diffris.models.config import config_from_params

    params = load_params(args.params)
    config = config_from_params(params, args.experiment, args.scale)
    counts = count_parameters(params, config, args.backbone_dir)
    rows = [(name, f"{t:,}", f"{f:,}") for name, (t, f) in counts.items()]
    rows.append(("total", f"{sum(t for t, _ in counts.values()):,}", f"{sum(f for _, f in counts.values()):,}"))
    print(f"experiment {args.experiment}: backbone {config.backbone}, decoder {config.decoder}")
    print(tabulate(rows, headers=("component", "trainable", "frozen"), colalign=("left", "right", "right")))
    return 0


def count_parameters(params: dict, config, backbone_dir: Path | None) -> dict[str, tuple[int, int]]:
    """Counts per component of the model built on the meta device (no weights, no memory)."""
    import torch

    from diffris.models.backbone import Architecture, FrozenBackbone, architecture_of
    from diffris.models.config import backbone_spec
    from diffris.models.model import DiffRIS

    if backbone_dir is not None:
        arch = Architecture.from_folder(backbone_dir)
    else:
        arch = architecture_of(backbone_spec(params, config.backbone), config.backbone, params)
    with torch.device("meta"):
        model = DiffRIS(config, FrozenBackbone.from_architecture(arch, config.backbone))
    return model.parameter_counts()


def run_pretrain(args: argparse.Namespace) -> int:
    import time

    import torch

    from diffris.config import load_params
    from diffris.models.pretrain import pretrain, pretrain_run

    torch.set_num_threads(1)  # the same bits on any machine; the stage is small
    run = pretrain_run(load_params(args.params), args.run)
    start = time.perf_counter()
    out = pretrain(run, args.out)
    print(f"pretrain-backbone: run {run.name} -> {out} ({', '.join(run.checkpoints)}) in {time.perf_counter() - start:.0f} s")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from diffris.models.sampling import DEFAULT_CAPTIONS, plot_loss_curve, sample_grid

    if args.steps < 1:
        raise ConfigError(f"--steps: must be at least 1, got {args.steps}")
    out = sample_grid(
        args.backbone_dir, args.caption or list(DEFAULT_CAPTIONS), args.out, args.steps, args.guidance, args.seed, args.image_size
    )
    print(f"sample-backbone: {len(args.backbone_dir)} backbone(s) -> {out}")
    if args.loss_curve:
        print(f"sample-backbone: loss curve -> {plot_loss_curve(args.loss_curve, out.with_name(out.stem + '-loss.png'))}")
    return 0
