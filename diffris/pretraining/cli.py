"""Sub-commands ``pretrain-backbone`` and ``sample-backbone`` (docs/pretraining.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffris.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
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


def run_pretrain(args: argparse.Namespace) -> int:
    import time

    import torch

    from diffris.config import load_params
    from diffris.pretraining.pretrain import pretrain, pretrain_run

    torch.set_num_threads(1)  # the same bits on any machine; the stage is small
    run = pretrain_run(load_params(args.params), args.run)
    start = time.perf_counter()
    out = pretrain(run, args.out)
    print(f"pretrain-backbone: run {run.name} -> {out} ({', '.join(run.checkpoints)}) in {time.perf_counter() - start:.0f} s")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from diffris.pretraining.sampling import DEFAULT_CAPTIONS, plot_loss_curve, sample_grid

    if args.steps < 1:
        raise ConfigError(f"--steps: must be at least 1, got {args.steps}")
    out = sample_grid(
        args.backbone_dir, args.caption or list(DEFAULT_CAPTIONS), args.out, args.steps, args.guidance, args.seed, args.image_size
    )
    print(f"sample-backbone: {len(args.backbone_dir)} backbone(s) -> {out}")
    if args.loss_curve:
        print(f"sample-backbone: loss curve -> {plot_loss_curve(args.loss_curve, out.with_name(out.stem + '-loss.png'))}")
    return 0
