"""The cost of a scale's jobs: Snakemake's benchmark files gathered into one table.

``diffris report-costs``. Every benchmarked job (``diffris.pipeline.jobs.BENCHMARKED``:
pretraining, feature caches, trainings, evaluations) writes
``benchmarks/jobs/<scale>/<rule>/<job>.tsv`` when Snakemake runs it. This module reads them all
and writes::

    jobs-<scale>.csv   rule, job, runtime_s, max_rss_mb, cpu_time_s: one row per job, then `total`
    jobs-<scale>.md    the same per rule (jobs, runtime, largest RSS, CPU time) and in total

Times depend on the machine and its load, so these files live outside ``results/<scale>/`` (whose
bytes must match across machines). A job whose benchmark file is missing was not run by
Snakemake (e.g. built by ``dvc repro``): its cost is unknown, and the command says which file.
"""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

from diffris.errors import DataError
from diffris.fileio import atomic_write

COLUMNS = ("rule", "job", "runtime_s", "max_rss_mb", "cpu_time_s")
BENCHMARK_FIELDS = {"runtime_s": "s", "max_rss_mb": "max_rss", "cpu_time_s": "cpu_time"}


@dataclass(frozen=True)
class JobCost:
    rule: str
    job: str
    runtime_s: float
    max_rss_mb: float | None  # None: the job ended before Snakemake's first measurement ("NA")
    cpu_time_s: float | None


def _value(text: str, path: Path, column: str, optional: bool) -> float | None:
    if optional and text == "NA":
        return None
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}: column {column!r} is {text!r}, expected a number") from None


def read_benchmark(path: Path, rule: str, job: str) -> JobCost:
    """One job's cost from its Snakemake benchmark file (a header and one row)."""
    if not path.is_file():
        raise DataError(
            f"{path}: missing benchmark file of {rule} {job} (the job was not run by Snakemake "
            "with this workflow, e.g. built by `dvc repro`; its cost is unknown)"
        )
    rows = list(csv.DictReader(path.read_text().splitlines(), delimiter="\t"))
    if len(rows) != 1:
        raise DataError(f"{path}: expected a header and one row of measurements, found {len(rows)} rows")
    missing = [c for c in BENCHMARK_FIELDS.values() if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: no column {', '.join(map(repr, missing))}; not a Snakemake benchmark file")
    values = {
        name: _value(rows[0][column], path, column, optional=name != "runtime_s")
        for name, column in BENCHMARK_FIELDS.items()
    }
    return JobCost(rule, job, **values)


def gather(params: dict, scale: str, benchmarks: Path) -> list[JobCost]:
    """The cost of every benchmarked job of ``scale``, read from ``benchmarks`` (benchmarks/jobs)."""
    from diffris.pipeline import jobs  # only here: building the CLI's parser imports this module

    root = str(benchmarks)
    return [
        read_benchmark(Path(jobs.job_file(root, scale, rule, job, ".tsv")), rule, job)
        for rule, job in jobs.benchmarked_jobs(params, scale)
    ]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _total(costs: list[JobCost], name: str, label: str) -> list[str]:
    rss = [c.max_rss_mb for c in costs if c.max_rss_mb is not None]
    cpu = [c.cpu_time_s for c in costs if c.cpu_time_s is not None]
    return [
        name, label, _fmt(sum(c.runtime_s for c in costs)), _fmt(max(rss) if rss else None), _fmt(sum(cpu) if cpu else None)
    ]  # fmt: skip


def cost_csv(costs: list[JobCost]) -> str:
    """One row per job, then ``total``: summed runtime and CPU time, the largest RSS of any job."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([c.rule, c.job, _fmt(c.runtime_s), _fmt(c.max_rss_mb), _fmt(c.cpu_time_s)] for c in costs)
    writer.writerow(_total(costs, "total", f"{len(costs)} jobs"))
    return buffer.getvalue()


def cost_markdown(costs: list[JobCost], scale: str) -> str:
    rules = list(dict.fromkeys(c.rule for c in costs))
    rows = [_total([c for c in costs if c.rule == rule], rule, str(sum(c.rule == rule for c in costs))) for rule in rules]
    rows.append(_total(costs, "**total**", str(len(costs))))
    table = tabulate(rows, headers=["rule", "jobs", "runtime (s)", "largest max RSS (MB)", "CPU time (s)"], tablefmt="github", disable_numparse=True)
    return (
        f"# Job costs at scale `{scale}`\n\n"
        f"Gathered by `diffris report-costs` from Snakemake's benchmark files; one row per job in "
        f"`jobs-{scale}.csv`. Runtime is each job's wall time, summed (jobs running side by side "
        f"count in full, so this is not the wall time of the whole run); max RSS is the largest of "
        f"any job. Empty: the job ended before the first measurement.\n\n{table}\n"
    )


def write_costs(params: dict, scale: str, benchmarks: Path, out: Path) -> tuple[Path, Path]:
    """``out`` (CSV) and ``out`` with suffix ``.md``; returns both paths."""
    costs = gather(params, scale, benchmarks)
    markdown = out.with_suffix(".md")
    atomic_write(out, lambda tmp: tmp.write_text(cost_csv(costs)))
    atomic_write(markdown, lambda tmp: tmp.write_text(cost_markdown(costs, scale)))
    return out, markdown


def register(sub: argparse._SubParsersAction) -> None:
    costs = sub.add_parser(
        "report-costs",
        help="runtime and memory of every benchmarked job, from Snakemake's benchmark files (CSV + Markdown)",
        description="Reads BENCHMARKS/<scale>/<rule>/<job>.tsv of every pretraining, feature-cache, "
        "training and evaluation job of the scale (Snakemake's `benchmark:` files) and writes OUT "
        "(rule, job, runtime_s, max_rss_mb, cpu_time_s; one row per job and a total) and OUT with "
        "suffix .md (per rule and in total). A missing benchmark file is an error naming it.",
    )
    costs.add_argument("--benchmarks", required=True, type=Path, help="Snakemake's benchmark files (benchmarks/jobs)")
    costs.add_argument("--out", required=True, type=Path, help="CSV to write (benchmarks/results/jobs-<scale>.csv)")
    costs.add_argument("--scale", help="scale of the jobs (default: params.yaml's `scale`)")
    costs.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    costs.set_defaults(handler=run_costs)


def run_costs(args: argparse.Namespace) -> int:
    from diffris.config import load_params

    params = load_params(args.params)
    paths = write_costs(params, args.scale or params["scale"], args.benchmarks, args.out)
    print(f"wrote {' and '.join(map(str, paths))}")
    return 0
