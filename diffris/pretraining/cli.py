"""Sub-commands ``pretrain-backbone``, ``pack-zoo``, ``measure-grounding`` and ``sample-backbone``
(docs/pretraining.md)."""

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

    pack = sub.add_parser("pack-zoo", help="pack a pretraining's checkpoints as zoo files (float16 safetensors, sha256)")
    pack.add_argument("--pretrained", required=True, type=Path, help="a pretrain-backbone output folder")
    pack.add_argument("--out", required=True, type=Path, help="folder to write: <backbone>.safetensors and zoo.json")
    pack.set_defaults(handler=run_pack_zoo)

    ground = sub.add_parser(
        "measure-grounding", help="how much backbones ground their text: caption gaps, ranking, attention IoU, feature shift (CSV)"
    )
    ground.add_argument("--backbone-dir", required=True, type=Path, nargs="+", help="backbone folders, one CSV row each")
    ground.add_argument("--out", required=True, type=Path, help="CSV file to write")
    ground.add_argument("--scenes", type=int, default=128, help="held-out scenes (default: 128)")
    ground.add_argument("--draws", type=int, default=4, help="noise draws per timestep bucket (default: 4)")
    ground.add_argument("--seed", type=int, default=0)
    ground.add_argument("--timestep", type=int, default=1, help="the timestep DiffRIS reads the UNet at (default: 1)")
    ground.add_argument("--image-size", type=int, default=64, help="image side the backbone sees (default: 64)")
    ground.add_argument("--raw-image-size", type=int, default=128, help="side the scenes are drawn at (default: 128)")
    ground.set_defaults(handler=run_grounding)

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


def run_pack_zoo(args: argparse.Namespace) -> int:
    from diffris.pretraining.zoo import pack_zoo, pin_lines

    out = pack_zoo(args.pretrained, args.out)
    print(f"pack-zoo: {args.pretrained} -> {out}; to ship it, copy the files to zoo/ and set in params.yaml `backbones`:")
    print("\n".join(pin_lines(out)))
    return 0


def run_grounding(args: argparse.Namespace) -> int:
    import torch

    from diffris.fileio import check_inputs
    from diffris.pretraining.grounding import held_out_scenes, measure, write_rows

    for flag in ("scenes", "draws", "image_size", "raw_image_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')}: must be at least 1, got {getattr(args, flag)}")
    if args.scenes < 2:
        raise ConfigError(f"--scenes: the shuffled captions need at least 2 scenes, got {args.scenes}")
    check_inputs(args.out, args.backbone_dir)
    torch.set_num_threads(1)  # the same bits on any machine
    scenes = held_out_scenes(args.scenes, args.seed, args.raw_image_size, args.image_size)
    rows = [measure(folder, scenes, args.seed, args.draws, args.timestep) for folder in args.backbone_dir]
    print(f"measure-grounding: {len(rows)} backbone(s), {args.scenes} scenes -> {write_rows(rows, args.out)}")
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
