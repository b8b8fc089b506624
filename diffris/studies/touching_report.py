"""The touching study's report: IoU per relation bin of ``diffris make-touching``'s split, hard
against soft assignment (``diffris.studies.touching``).

``diffris report-touching`` reads the per-sample CSVs of the hard (experiment ``full``) and soft
(``pcmrd-queries``) runs and writes, per bin and over ``all``, each metric's mean over seeds, seed
std, 95 % bootstrap interval over the bin's samples and the paired delta hard − soft
(``diffris.report.intervals``), and a figure of mIoU per bin.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from diffris.errors import DataError
from diffris.fileio import atomic_write
from diffris.report.intervals import (
    PerSample,
    RowEvaluations,
    check_same_samples,
    read_per_sample,
    resample_indices,
    row_intervals,
)
from diffris.report.tables import interval_fields

TOUCHING_COLUMNS = (
    "bin", "assignment", "metric", "mean", "std", "seeds", "samples", "ci_low", "ci_high",
    "delta", "delta_ci_low", "delta_ci_high", "resolved",
)  # fmt: skip
REPORT_METRICS = ("oIoU", "mIoU")
ALL = "all"


def read_bins(path: Path) -> list[tuple[str, str]]:
    """(id, bin) per sample of a bins.csv, in index order."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing; run `diffris make-touching`")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("index", "id", "bin") if c not in (reader.fieldnames or ())]
        if missing:
            raise DataError(f"{path}: expected columns index, id, bin; lacks {', '.join(missing)}")
        rows = []
        for position, row in enumerate(reader):
            if row["index"] != str(position) or not row["bin"]:
                raise DataError(f"{path}:{reader.line_num}: expected sample {position} with a bin")
            rows.append((row["id"], row["bin"]))
    if not rows:
        raise DataError(f"{path}: no samples")
    return rows


def subset(samples: PerSample, keep: np.ndarray) -> PerSample:
    """The samples of a ``PerSample`` where ``keep`` is true, in order."""
    ids = tuple(i for i, k in zip(samples.ids, keep, strict=True) if k)
    return PerSample(samples.path, ids, samples.intersections[keep], samples.unions[keep])


def touching_report(hard: list[PerSample], soft: list[PerSample], bins: list[tuple[str, str]]) -> list[dict[str, str]]:
    """One line per (bin, assignment, metric), bins in their first appearance's order, then ``all``."""
    check_same_samples([*hard, *soft])
    if tuple(i for i, _ in bins) != hard[0].ids:
        raise DataError(
            f"the bins file's ids differ from those of {hard[0].path} ({len(bins)} and {len(hard[0])} samples, "
            "or another order): evaluate on the prepared folder that the bins file came with"
        )
    labels = np.array([b for _, b in bins])
    lines = []
    for name in [*dict.fromkeys(labels.tolist()), ALL]:
        keep = np.ones(len(labels), bool) if name == ALL else labels == name
        rows = {}
        for assignment, group in (("hard", hard), ("soft", soft)):
            parts = tuple(subset(s, keep) for s in group)
            rows[assignment] = RowEvaluations(tuple(p.metrics() for p in parts), parts)
        indices = resample_indices(int(keep.sum()))
        cells = {"hard": row_intervals(rows["hard"], indices, full=rows["soft"]), "soft": row_intervals(rows["soft"], indices)}
        for assignment in ("hard", "soft"):
            for metric in REPORT_METRICS:
                lines.append({"bin": name, "assignment": assignment, "metric": metric, **interval_fields(cells[assignment][metric])})
    return lines


def report_csv(lines: list[dict[str, str]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=TOUCHING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return text.getvalue()


def plot_touching(lines: list[dict[str, str]], title: str):
    """mIoU per bin, hard vs soft, with the 95 % bootstrap intervals as error bars."""
    import seaborn as sns
    from matplotlib.figure import Figure

    rows = [line for line in lines if line["metric"] == "mIoU"]
    order = list(dict.fromkeys(line["bin"] for line in rows))
    fig = Figure(figsize=(7, 3.4), layout="constrained")
    with sns.axes_style("whitegrid"):
        ax = fig.subplots()
    colours = dict(zip(("hard", "soft"), sns.color_palette("deep", 2), strict=True))
    for offset, assignment in ((-0.12, "hard"), (0.12, "soft")):
        points = [next(r for r in rows if r["bin"] == b and r["assignment"] == assignment) for b in order]
        x = np.arange(len(order)) + offset
        mean = np.array([float(p["mean"]) for p in points])
        bars = np.clip([mean - [float(p["ci_low"]) for p in points], [float(p["ci_high"]) for p in points] - mean], 0, None)
        label = f"{assignment} ({'Gumbel straight-through' if assignment == 'hard' else 'softmax'})"
        ax.errorbar(x, mean, yerr=bars, fmt="o", capsize=3, color=colours[assignment], label=label)
    ax.set_xticks(range(len(order)), order)
    ax.set(xlabel="relation of the neighbour to the target", ylabel="mIoU (%)", title=title)
    ax.legend(loc="best", fontsize=8)
    return fig


def write_report(hard: list[Path], soft: list[Path], bins: Path, out: Path, figure: Path) -> list[dict[str, str]]:
    from diffris.report.figures import save_figure
    lines = touching_report([read_per_sample(p) for p in hard], [read_per_sample(p) for p in soft], read_bins(bins))
    title = f"mIoU per relation to a neighbour (seeds: {len(hard)} hard, {len(soft)} soft; bars: 95 % bootstrap)"
    fig = plot_touching(lines, title)
    atomic_write(Path(out), lambda tmp: tmp.write_text(report_csv(lines), encoding="utf-8"))
    atomic_write(Path(figure), lambda tmp: save_figure(fig, tmp))
    return lines



def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser(
        "report-touching",
        help="study: IoU per touching/overlap bin, hard vs soft assignment, with bootstrap intervals",
    )
    report.add_argument("--hard", required=True, nargs="+", type=Path, help="per-sample CSVs of the hard runs, one per seed")
    report.add_argument("--soft", required=True, nargs="+", type=Path, help="per-sample CSVs of the soft runs, one per seed")
    report.add_argument("--bins", required=True, type=Path, help="bins.csv of the prepared folder evaluated")
    report.add_argument("--out", required=True, type=Path, help="CSV to write")
    report.add_argument("--figure", required=True, type=Path, help="PNG to write")
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    lines = write_report(args.hard, args.soft, args.bins, args.out, args.figure)
    for line in lines:
        if line["metric"] == "mIoU" and line["assignment"] == "hard":
            print(f"{line['bin']:>11}: mIoU hard − soft {line['delta']} [{line['delta_ci_low']}, {line['delta_ci_high']}]")
    print(f"wrote {args.out} and {args.figure}")
    return 0
