"""`diffris train`."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffris.config import DATASETS


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="train one experiment on one prepared dataset (resumes if --out holds a checkpoint)",
        description="Train with the scale's budget (params.yaml scales.<scale>.train). Runs under "
        "`accelerate launch --num_processes N -m diffris train ...` unchanged; the global batch "
        "stays train.batch_size. Started again with the same command, it resumes.",
    )
    train.add_argument("--experiment", required=True, help="an entry of params.yaml `experiments`")
    train.add_argument("--dataset", required=True, choices=DATASETS)
    train.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    train.add_argument("--backbone-dir", required=True, type=Path, help="backbone folder (fetch-weights)")
    train.add_argument("--out", required=True, type=Path, help="run folder")
    train.add_argument(
        "--features", type=Path,
        help="feature cache of this dataset and backbone (cache-features); default: compute on the fly",
    )  # fmt: skip
    train.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    train.add_argument("--scale", help="scale whose budget to use (default: params.yaml's `scale`)")
    train.add_argument(
        "--seed", type=int,
        help="training seed (default: params.yaml's `seed`; the pipeline passes seed + 0..N-1, N = scales.<scale>.seeds)",
    )  # fmt: skip
    train.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from diffris.config import load_params
    from diffris.determinism import set_cpu_threads
    from diffris.training.run_spec import run_spec_from_params
    from diffris.training.trainer import Trainer

    params = load_params(args.params)
    spec = run_spec_from_params(
        params, args.scale, args.experiment, args.dataset, args.data, args.backbone_dir, args.features
    )
    if args.seed is not None:
        spec = replace(spec, seed=args.seed)
    set_cpu_threads(spec.train.cpu_threads)
    Trainer(spec, args.out).run()
    return 0
