"""`diffris train` and `diffris evaluate`."""

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

    evaluate = sub.add_parser(
        "evaluate",
        help="evaluate a trained run on a prepared split (LAVT/RMSIN metrics)",
        description="Writes FILE (metrics JSON), FILE with .csv (per-sample I, U, IoU) and "
        "FILE-stem-predictions/*.png (a few predicted masks, picked by position).",
    )
    evaluate.add_argument("--run", required=True, type=Path, help="run folder written by `diffris train`")
    evaluate.add_argument("--split", required=True, choices=("val", "test"))
    evaluate.add_argument("--out", required=True, type=Path, help="metrics JSON to write")
    evaluate.add_argument("--data", type=Path, help="prepared dataset folder (default: the run's)")
    evaluate.add_argument("--backbone-dir", type=Path, help="backbone folder (default: the run's)")
    evaluate.add_argument(
        "--features", type=Path, help="feature cache of this dataset and backbone; default: compute on the fly"
    )
    evaluate.add_argument(
        "--shuffle-expressions",
        action="store_true",
        help="text-dependence control: pair each sample with another's expression (seeded); "
        "the JSON then holds both the shuffled and the unshuffled metrics",
    )
    evaluate.add_argument("--batch-size", type=int, help="default: the run's train.eval_batch_size")
    evaluate.add_argument("--num-figures", type=int, default=4, help="prediction PNGs to write")
    evaluate.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from diffris.config import load_params
    from diffris.run_folder import set_cpu_threads
    from diffris.run_spec import run_spec_from_params
    from diffris.train import Trainer

    params = load_params(args.params)
    spec = run_spec_from_params(
        params, args.scale, args.experiment, args.dataset, args.data, args.backbone_dir, args.features
    )
    if args.seed is not None:
        spec = replace(spec, seed=args.seed)
    set_cpu_threads(spec.train.cpu_threads)
    Trainer(spec, args.out).run()
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from diffris.evaluate import evaluate_run

    report = evaluate_run(
        args.run,
        args.split,
        args.out,
        data=args.data,
        backbone_dir=args.backbone_dir,
        features=args.features,
        shuffle_expressions=args.shuffle_expressions,
        batch_size=args.batch_size,
        num_figures=args.num_figures,
    )
    rows = [["metrics", *report["metrics"].values()]]
    if "unshuffled_metrics" in report:
        rows = [["unshuffled", *report["unshuffled_metrics"].values()], ["shuffled", *rows[0][1:]]]
    samples = report["num_samples"]
    print(f"{report['experiment']} / {report['dataset']} / {report['split']} ({samples} samples)")
    print(tabulate(rows, headers=["", *report["metrics"]], floatfmt=".2f"))
    print(f"written: {args.out}")
    return 0

