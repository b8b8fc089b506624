"""`diffris plan`: the suite's training runs at a scale and their estimated device-hours.

The estimate comes from measured throughput: a results file of ``benchmarks/throughput.py``
(samples/s of a training step, an evaluation step and the feature-cache build on one device), or
numbers given with ``--throughput``. Per run it adds

- training: ``epochs x (train samples // batch) x batch`` samples at the training rate;
- validation: the val split every ``val_every_epochs`` epochs, at the evaluation rate;
- evaluation: each split a table reads, at the evaluation rate (twice for the shuffled-expression
  control, which evaluates both ways);

all of it once per seed (``scales.<scale>.seeds``); and once per (dataset, backbone), when the
scale caches features, the cache build of all splits.
Hours are device-seconds / 3600 on the measured device: N devices finish N times sooner
(accelerate keeps the global batch), communication not counted. A run that several tables use is
trained once: each table lists all its runs, but the ``new`` column and the total count a run
only under the first table (in params.yaml order) that lists it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from diffris.errors import ConfigError

RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
UNIT = {"cuda": "GPU-hours", "cpu": "CPU-hours"}


@dataclass(frozen=True)
class Throughput:
    """Samples per second on one device; ``by_experiment`` overrides ``train``/``eval`` per experiment."""

    source: str
    device_kind: str  # cuda | cpu | given
    device: str
    train: float
    eval: float
    cache: float | None
    by_experiment: dict

    def rates(self, experiment: str) -> tuple[float, float, bool]:
        """(train, eval, measured on this experiment itself)."""
        if experiment in self.by_experiment:
            train, evaluation = self.by_experiment[experiment]
            return train, evaluation, True
        return self.train, self.eval, False

    @property
    def unit(self) -> str:
        return UNIT.get(self.device_kind, "device-hours")


def read_benchmark(path: Path) -> Throughput:
    """The optimised path of a ``benchmarks/throughput.py`` results file. On a CPU the rates per
    CPU-second are used (a shared machine slows the wall clock, not the work)."""
    try:
        results = json.loads(Path(path).read_text())
        experiments = {e: v["optimised"] for e, v in results["experiments"].items()}
        reference = experiments.get("full") or next(iter(experiments.values()))
        cpu = results["device_kind"] == "cpu" and "train_samples_per_cpu_s" in reference
        train_key, eval_key = ("train_samples_per_cpu_s", "eval_samples_per_cpu_s") if cpu else (
            "train_samples_per_s", "eval_samples_per_s")  # fmt: skip
        rates = {e: (v[train_key], v[eval_key]) for e, v in experiments.items()}
        device = results["device"] + (f", {results['threads']} thread(s)" if results.get("threads") else "")
    except (OSError, json.JSONDecodeError, KeyError, StopIteration, TypeError) as err:
        raise ConfigError(f"{path}: not a benchmarks/throughput.py results file ({err})") from None
    return Throughput(
        source=str(path),
        device_kind=results["device_kind"],
        device=device + (", rates per CPU-second" if cpu else ""),
        train=rates[next(e for e in experiments if experiments[e] is reference)][0],
        eval=rates[next(e for e in experiments if experiments[e] is reference)][1],
        cache=reference.get("cache_samples_per_s"),
        by_experiment=rates,
    )


def default_benchmark(scale: str, folder: Path = RESULTS_DIR) -> Path | None:
    """A committed results file of ``scale``: a GPU one if there is one, else a CPU one."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if results.get("scale") == scale:
            found.append((results.get("device_kind") != "cuda", path.name, path))
    return min(found)[2] if found else None


def split_sizes(params: dict, scale: str, dataset: str) -> dict[str, int]:
    from diffris.config import scale_params

    settings = scale_params(params, scale)
    if settings["data_source"] == "real":
        return params["datasets"][dataset]["paper_splits"]
    return settings["synthetic"]["splits"]


def run_hours(params: dict, scale: str, run, throughput: Throughput) -> dict:
    """Device-hours of one run, all its seeds: training, validation and its evaluations."""
    from diffris.config import scale_params
    from diffris.pipeline.jobs import evaluations, seeds

    train = scale_params(params, scale)["train"]
    sizes = split_sizes(params, scale, run.dataset)
    train_rate, eval_rate, own = throughput.rates(run.experiment)
    samples = train["epochs"] * (sizes["train"] // train["batch_size"]) * train["batch_size"]
    every = train["val_every_epochs"]
    validations = len({e for e in range(1, train["epochs"] + 1) if e % every == 0 or e == train["epochs"]}) if every else 0
    passes = [(e.split, 2 if e.shuffled else 1) for e in evaluations(params) if e.run == run]
    eval_samples = validations * sizes["val"] + sum(sizes[split] * n for split, n in passes)
    count = len(seeds(params, scale, run.experiment))
    return {
        "train": count * samples / train_rate / 3600,
        "eval": count * eval_samples / eval_rate / 3600,
        "samples": samples,
        "seeds": count,
        "measured": own,
    }


def cache_hours(params: dict, scale: str, throughput: Throughput) -> dict[str, float] | None:
    """Device-hours of each feature cache (once per dataset and backbone); None without a rate."""
    from diffris.pipeline.jobs import feature_caches

    caches = feature_caches(params, scale)
    if caches and not throughput.cache:
        return None
    return {
        f"{c.dataset}/{c.backbone}": sum(split_sizes(params, scale, c.dataset).values()) / throughput.cache / 3600
        for c in caches
    }


def plan(params: dict, scale: str, throughput: Throughput) -> str:
    from tabulate import tabulate

    from diffris.pipeline.jobs import Run, backbone_of, runs

    hours = {run: run_hours(params, scale, run, throughput) for run in runs(params)}
    unit = throughput.unit
    run_rows = [
        [r.experiment, r.dataset, backbone_of(params, scale, r.experiment), h["samples"], h["train"], h["eval"],
         h["train"] + h["eval"], h["seeds"], "" if h["measured"] or not throughput.by_experiment else "rate of `full`"]
        for r, h in hours.items()
    ]  # fmt: skip
    counted: set[Run] = set()
    table_rows = []
    groups = {**params["tables"], **{name: {"dataset": f["dataset"], "rows": [f]} for name, f in params["figures"].items()}}
    for name, table in groups.items():
        members = {Run(row["experiment"], table["dataset"]) for row in table["rows"]}
        new = members - counted
        counted |= members
        total = sum(hours[r]["train"] + hours[r]["eval"] for r in members)
        fresh = sum(hours[r]["train"] + hours[r]["eval"] for r in new)
        table_rows.append([name, len(members), total, len(new), fresh])
    caches = cache_hours(params, scale, throughput)
    run_total = sum(h["train"] + h["eval"] for h in hours.values())
    trainings = sum(h["seeds"] for h in hours.values())
    lines = [_banner(throughput, scale)]
    lines.append(tabulate(
        run_rows,
        headers=["experiment", "dataset", "backbone", "train samples (per seed)", f"train {unit}", f"eval {unit}",
                 f"{unit}", "seeds", "note"],
        floatfmt=".2f",
    ))  # fmt: skip
    lines.append("")
    lines.append(tabulate(
        table_rows, headers=["table/figure", "runs", f"{unit} (all its runs)", "new runs", f"{unit} (new runs)"],
        floatfmt=".2f",
    ))  # fmt: skip
    lines.append("")
    if caches is None:
        lines.append(f"{trainings} training runs: {run_total:.2f} {unit}; feature caches: not estimated (no rate given)")
    else:
        lines.append(
            f"{trainings} training runs: {run_total:.2f} {unit}; feature caches ({len(caches)}): "
            f"{sum(caches.values()):.2f} {unit}; total: {run_total + sum(caches.values()):.2f} {unit}"
        )
    if throughput.device_kind == "cpu":
        lines.append(_cpu_warning(throughput))
    return "\n".join(lines)


def _banner(throughput: Throughput, scale: str) -> str:
    text = (
        f"scale {scale}; throughput from {throughput.source}: train {throughput.train:.3g}, eval "
        f"{throughput.eval:.3g} samples/s on {throughput.device_kind} ({throughput.device})"
    )
    return (_cpu_warning(throughput) + "\n" + text) if throughput.device_kind == "cpu" else text


def _cpu_warning(throughput: Throughput) -> str:
    bar = "!" * 100
    return (
        f"{bar}\n!! MEASURED ON A CPU ({throughput.device}): these are CPU-hours, NOT GPU-hours.\n"
        "!! Run benchmarks/throughput.py on a GPU (docs/benchmarks.md), or pass --throughput.\n"
        f"{bar}"
    )


def throughput_from_args(args: argparse.Namespace, scale: str) -> Throughput:
    if args.throughput:
        train, evaluation = args.throughput
        return Throughput(
            source="--throughput", device_kind="given", device="as given on the command line",
            train=train, eval=evaluation, cache=args.cache_throughput, by_experiment={},
        )  # fmt: skip
    path = args.benchmark or default_benchmark(scale)
    if path is None:
        raise ConfigError(
            f"no throughput measurement of scale {scale} in {RESULTS_DIR}: run benchmarks/throughput.py "
            "or pass --throughput TRAIN EVAL (samples/s)"
        )
    return read_benchmark(path)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "plan",
        help="the suite's training runs and estimated GPU-hours per table, from measured throughput",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--scale", default="paper", help="scale to plan (default: paper)")
    parser.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    parser.add_argument("--benchmark", type=Path, help="a benchmarks/throughput.py results file (default: a committed one of the scale, GPU preferred)")
    parser.add_argument(
        "--throughput", type=float, nargs=2, metavar=("TRAIN", "EVAL"),
        help="samples/s of a training and an evaluation step on one device, instead of a results file",
    )  # fmt: skip
    parser.add_argument("--cache-throughput", type=float, help="samples/s of the feature-cache build (with --throughput)")
    parser.set_defaults(handler=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from diffris.config import load_params

    params = load_params(args.params)
    throughput = throughput_from_args(args, args.scale)
    print(plan(params, args.scale, throughput))
    return 0
