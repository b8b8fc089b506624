"""`diffris evaluate`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
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


def run_evaluate(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from diffris.evaluation.evaluate import evaluate_run

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

