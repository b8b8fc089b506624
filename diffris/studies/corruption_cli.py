"""``diffris evaluate-corrupted`` and ``diffris report-corruptions``: the adverse-conditions study."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffris.studies.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    CorruptionError,
    parse_corruptions,
    parse_severities,
)


def register(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "evaluate-corrupted",
        help="evaluate a trained run clean and under haze, clouds, noise, blur and JPEG",
        description="Loads RUN once and evaluates it live on SPLIT of DATA, clean and under every "
        "corruption at every severity. Writes OUT/clean.json and .csv and "
        "OUT/<corruption>-<severity>.json and .csv (the formats of `diffris evaluate`) and "
        "OUT/summary.json; OUT appears only when complete.",
    )
    evaluate.add_argument("--run", required=True, type=Path, help="a finished training run folder")
    evaluate.add_argument("--split", default="test", help="split to evaluate (default: test)")
    evaluate.add_argument("--data", type=Path, help="prepared dataset folder (default: the run's)")
    evaluate.add_argument("--backbone-dir", type=Path, help="backbone folder (default: the run's)")
    evaluate.add_argument(
        "--corruptions", default=",".join(CORRUPTIONS), help=f"comma-separated (default: {','.join(CORRUPTIONS)})"
    )
    evaluate.add_argument(
        "--severities", default=",".join(map(str, SEVERITIES)), help="comma-separated, each 1..3 (default: 1,2,3)"
    )
    evaluate.add_argument("--out", required=True, type=Path, help="folder to write the evaluations to")
    evaluate.add_argument("--batch-size", type=int, help="evaluation batch size (default: the run's eval_batch_size)")
    evaluate.set_defaults(handler=run_evaluate)

    report = sub.add_parser(
        "report-corruptions",
        help="oIoU/mIoU per corruption and severity with intervals, and the mean corruption error",
        description="Reads evaluate-corrupted folders <anything>/<experiment>/<dataset>/seed<k> and writes "
        "one CSV line per (experiment, dataset, condition, metric): mean over seeds, seed std, 95 % "
        "bootstrap interval, the paired delta against clean; per (experiment, dataset) the corruption "
        "errors CE and the mCE against BASELINE's run on the same dataset; and a figure of mIoU "
        "against severity.",
    )
    report.add_argument(
        "--evaluations", required=True, nargs="+", type=Path,
        help="evaluate-corrupted folders, .../<experiment>/<dataset>/seed<k>",  # fmt: skip
    )
    report.add_argument("--baseline", required=True, help="experiment whose corruption errors are 100 (e.g. random)")
    report.add_argument("--out", required=True, type=Path, help="CSV to write")
    report.add_argument("--figure", required=True, type=Path, help="PNG to write")
    report.set_defaults(handler=run_report)


def run_evaluate(args: argparse.Namespace) -> int:
    corruptions, severities = parse_corruptions(args.corruptions), parse_severities(args.severities)
    if args.batch_size is not None and args.batch_size < 1:
        raise CorruptionError(f"--batch-size: expected a positive number of samples, got {args.batch_size}")
    from tabulate import tabulate

    from diffris.studies.corrupted_eval import evaluate_corrupted

    summary = evaluate_corrupted(
        args.run, args.split, args.out, corruptions, severities, args.data, args.backbone_dir, args.batch_size
    )
    rows = [[name, f"{m['mIoU']:.2f}", f"{m['oIoU']:.2f}"] for name, m in summary.items()]
    print(tabulate(rows, headers=["condition", "mIoU", "oIoU"], tablefmt="simple", disable_numparse=True))
    print(f"wrote {args.out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from diffris.studies.corruption_report import write_report

    table = write_report(args.evaluations, args.baseline, args.out, args.figure)
    print(f"wrote {args.out} ({len(table.rows)} lines) and {args.figure}")
    return 0
