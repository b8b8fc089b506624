"""`diffris report-tables`, `report-figures`, `report-comparison`, `report-curves`
and `check-results`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    tables = sub.add_parser(
        "report-tables",
        help="the paper's tables with the regenerated rows beside them (CSV)",
        description="Writes OUT/<name>.csv for table1-6 and fig8: every row of REFERENCE/<name>.csv "
        "(source=paper) followed, where params.yaml `tables` names one, by its regenerated row "
        "(source=regenerated): the mean over the scale's seeds of "
        "METRICS/<experiment>/<dataset>/seed<k>/<split>[-shuffled].json. Beside each, "
        "OUT/<name>-intervals.csv: every regenerated cell's mean, std over seeds and 95 % bootstrap "
        "interval over samples (from the per-sample CSVs), and each row's paired delta against the "
        "full model's row.",
    )
    tables.add_argument(
        "--reference", required=True, type=Path, help="folder of the paper's tables (results/reference)"
    )
    tables.add_argument(
        "--metrics", required=True, type=Path, help="folder of metrics JSON (results/<scale>/metrics)"
    )
    tables.add_argument("--out", required=True, type=Path, help="folder to write the tables to")
    tables.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    tables.add_argument("--scale", help="scale whose seeds to read (default: params.yaml's `scale`)")
    tables.add_argument("--quiet", action="store_true", help="do not print the tables")
    tables.set_defaults(handler=run_tables)

    figures = sub.add_parser(
        "report-figures",
        help="Fig. 8 from the tables; Figs. 5-7 from predictions and prepared data (PNG)",
        description="Writes OUT/fig5.png ... fig7.png (params.yaml `figures`) from "
        "METRICS/<experiment>/<dataset>/<split>.csv and <split>-predictions/*.png and "
        "DATA/<dataset>/<split>/, and OUT/fig8.png from TABLES/fig8.csv.",
    )
    figures.add_argument("--tables", required=True, type=Path, help="folder written by report-tables")
    figures.add_argument(
        "--metrics", required=True, type=Path, help="folder of metrics (results/<scale>/metrics)"
    )
    figures.add_argument(
        "--data", required=True, type=Path, help="prepared data of the scale (data/prepared/<scale>)"
    )
    figures.add_argument("--out", required=True, type=Path, help="folder to write the PNGs to")
    figures.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    figures.set_defaults(handler=run_figures)

    comparison = sub.add_parser(
        "report-comparison",
        help="regenerated against paper, cell by cell with deltas (Markdown)",
        description="Reads TABLES/<name>.csv (written by report-tables) and writes OUT. When the "
        "scale's data are synthetic or its backbones tiny, the page says that the numbers are "
        "not comparable to the paper.",
    )
    comparison.add_argument("--tables", required=True, type=Path, help="folder written by report-tables")
    comparison.add_argument("--out", required=True, type=Path, help="Markdown file to write (comparison.md)")
    comparison.add_argument("--scale", help="scale the tables come from (default: params.yaml's `scale`)")
    comparison.add_argument("--grounding", type=Path, help="measure-grounding's CSV: Fig. 8's rows with their grounding")
    comparison.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    comparison.set_defaults(handler=run_comparison)

    curves = sub.add_parser(
        "report-curves",
        help="every run's training curves as CSV (for `dvc plots`), from its log.jsonl",
        description="Reads RUNS/<experiment>/<dataset>/seed<k>/log.jsonl of every run and seed of the "
        "scale and writes OUT/<experiment>/<dataset>/seed<k>-steps.csv (step, epoch, loss, lr) and "
        "seed<k>.csv (epoch, step, train_loss, val_oIoU, val_mIoU): deterministic fields only.",
    )
    curves.add_argument("--runs", required=True, type=Path, help="folder of the scale's runs (runs/<scale>)")
    curves.add_argument("--out", required=True, type=Path, help="folder to write to (results/<scale>/curves)")
    curves.add_argument("--scale", help="scale of the runs (default: params.yaml's `scale`)")
    curves.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    curves.set_defaults(handler=run_curves)

    check = sub.add_parser(
        "check-results",
        help="a rerun against the committed results: is every cell within its committed 95 %% interval?",
        description="Compares every regenerated cell of RESULTS/tables/<name>.csv with the committed "
        "table and its committed interval (tables/<name>-intervals.csv), and prints one line per "
        "cell: within the interval, and identical text. Committed = RESULTS as in git revision REV "
        "(default HEAD), or --reference DIR. Exit 0 when every cell is within, 1 otherwise.",
    )
    check.add_argument("--results", required=True, type=Path, help="the rerun's results folder (results/<scale>)")
    check.add_argument(
        "--reference", type=Path,
        help="the committed results folder to compare with (default: RESULTS as committed in git, see --rev)",
    )  # fmt: skip
    check.add_argument("--rev", default="HEAD", help="git revision of the committed results (default: HEAD)")
    check.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    check.set_defaults(handler=run_check)


def run_tables(args: argparse.Namespace) -> int:
    from diffris.config import load_params
    from diffris.report.tables import build_report, format_console, write_tables

    tables, intervals = build_report(load_params(args.params), args.reference, args.metrics, args.scale)
    paths = write_tables(tables, args.out)
    write_tables(intervals, args.out)
    if not args.quiet:
        for name, table in tables.items():
            print(format_console(name, table))
    print(f"wrote {len(paths)} tables and their intervals to {args.out}")
    return 0


def run_figures(args: argparse.Namespace) -> int:
    from diffris.config import load_params
    from diffris.report.figures import write_figures

    paths = write_figures(load_params(args.params), args.tables, args.metrics, args.data, args.out)
    print(f"wrote {', '.join(path.name for path in paths)} to {args.out}")
    return 0


def run_comparison(args: argparse.Namespace) -> int:
    from diffris.config import load_params
    from diffris.report.comparison import write_comparison

    params = load_params(args.params)
    write_comparison(args.tables, params, args.scale or params["scale"], args.out, args.grounding)
    print(f"wrote {args.out}")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from diffris.config import load_params
    from diffris.report.curves import write_curves

    params = load_params(args.params)
    paths = write_curves(params, args.scale or params["scale"], args.runs, args.out)
    print(f"wrote {len(paths)} curve files to {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from diffris.config import load_params
    from diffris.report.check import Committed, check_results, format_outcome

    committed = Committed(args.results, args.reference, args.rev)
    outcome = check_results(load_params(args.params), args.results, committed)
    print(format_outcome(outcome, committed, args.results))
    return 0 if outcome.agrees else 1
