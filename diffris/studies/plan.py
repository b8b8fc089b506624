"""The studies' job lists, derived from params.yaml ``studies`` (docs/studies.md).

Like ``diffris.pipeline.jobs`` for the tables, this names what to train, evaluate and report, and
both Snakemake (``workflow/rules/studies.smk``) and ``studies/dvc.yaml`` read it. A study names
experiments; an experiment whose model at the scale equals a table experiment's (or an earlier
study experiment's) reuses that run, seeds included, so nothing is trained twice.

Paths::

    runs/<scale>/<experiment>/<dataset>/seed<k>/                      train (as for the tables)
    results/<scale>/metrics/<experiment>/<dataset>/seed<k>/<split>.*  evaluate (as for the tables)
    data/prepared/<scale>/rrsisd-touching/                            make-touching (+ bins.csv)
    results/<scale>/studies/touching/<experiment>/seed<k>/test.*      evaluate on that split
    results/<scale>/studies/corruptions/<experiment>/<dataset>/seed<k>/   evaluate-corrupted
    results/<scale>/studies/<study>.csv, <study>.png                  the study's table and figure
"""

from __future__ import annotations

from dataclasses import dataclass

from diffris.config import scale_params
from diffris.errors import ConfigError
from diffris.models.config import config_from_params, merge_overrides
from diffris.config import Evaluation, Run, runs, seeds

VARIANT_STUDIES = ("gumbel-tau", "loss", "order")  # rows of experiments: diffris.studies.variants
STUDY_NAMES = (*VARIANT_STUDIES, "touching", "corruptions", "cost", "attention")
TOUCHING_DATA = "rrsisd-touching"  # data/prepared/<scale>/<this>: the touching-objects test split
# The modules each kind of study job runs (Snakemake inputs, DVC deps): a change to one study's
# report reruns nothing else. (A job's command, which this plan writes, is tracked by both tools.)
_CODE = {
    "variants": ["variants"],
    "touching_data": ["touching"],
    "touching_report": ["touching_report"],
    "corrupted": ["corruptions", "corrupted_eval", "corruption_cli"],
    "corruption_report": ["corruption_report", "corruption_cli"],
    "cost": ["cost", "cost_build"],
    "attention": ["attention", "attention_capture"],
}
STUDY_CODE = {job: [f"diffris/studies/{m}.py" for m in modules] for job, modules in _CODE.items()}


def study_settings(params: dict, scale: str) -> dict[str, dict]:
    """Each configured study's settings at ``scale``: ``studies.<study>`` with
    ``scales.<scale>.studies.<study>`` merged in, in ``STUDY_NAMES`` order."""
    studies = params.get("studies") or {}
    overrides = scale_params(params, scale).get("studies") or {}
    for name in overrides:
        if name not in studies:
            raise ConfigError(f"scales.{scale}.studies.{name}: no study {name!r} under `studies`")
    return {
        name: merge_overrides(studies[name], overrides.get(name) or {}, f"scales.{scale}.studies.{name}")
        for name in STUDY_NAMES
        if name in studies
    }


def study_experiments(params: dict) -> list[str]:
    """Every experiment a study names, in the order the studies name them."""
    named = []
    for name, study in (params.get("studies") or {}).items():
        if name in VARIANT_STUDIES:
            named += [study["reference"], *(row["experiment"] for row in study["rows"])]
        elif name == "touching":
            named += [study["hard"], study["soft"]]
        elif name in ("corruptions", "cost"):
            named += [*study["experiments"], *([study["baseline"]] if "baseline" in study else [])]
    return list(dict.fromkeys(named))


def trained_as(params: dict, scale: str, experiment: str) -> str:
    """The experiment whose runs ``experiment`` uses at ``scale``: itself if a table names it,
    else the first table experiment, then the first study experiment (params.yaml order), with
    the same model config."""
    tables = {run.experiment for run in runs(params)}
    if experiment in tables:
        return experiment
    config = config_from_params(params, experiment, scale)
    candidates = [e for e in params["experiments"] if e in tables]
    candidates += [e for e in params["experiments"] if e not in tables and e in study_experiments(params)]
    return next(e for e in candidates if e == experiment or config_from_params(params, e, scale) == config)


def variant_evaluations(study: dict) -> list[tuple[str, str]]:
    """(dataset, split) pairs a rows-of-experiments study is evaluated on."""
    if "evaluations" in study:
        return [(e["dataset"], e["split"]) for e in study["evaluations"]]
    if "dataset" not in study or "splits" not in study:
        raise ConfigError("a study of rows needs `evaluations`, or `dataset` and `splits`")
    return [(study["dataset"], split) for split in study["splits"]]


def study_evaluations(params: dict, scale: str) -> list[Evaluation]:
    """The ordinary evaluations (``results/<scale>/metrics``) the variant studies read, each of
    the run it is trained as; sorted (the tables read some of them too)."""
    wanted = set()
    for name, study in study_settings(params, scale).items():
        if name in VARIANT_STUDIES:
            experiments = [study["reference"], *(row["experiment"] for row in study["rows"])]
            wanted |= {
                Evaluation(trained_as(params, scale, e), ds, split)
                for e in experiments
                for ds, split in variant_evaluations(study)
            }
    return sorted(wanted)


@dataclass(frozen=True, order=True)
class StudyRun:
    """A trained run (one seed) that a study-specific job reads."""

    experiment: str
    dataset: str
    seed: int

    def folder(self, scale: str) -> str:
        return Run(self.experiment, self.dataset).folder(scale, self.seed)


def _seeded(params: dict, scale: str, experiment: str, dataset: str) -> list[StudyRun]:
    trained = trained_as(params, scale, experiment)
    return [StudyRun(trained, dataset, s) for s in seeds(params, scale, trained)]


def touching_runs(params: dict, scale: str) -> dict[str, list[StudyRun]]:
    """{"hard": runs, "soft": runs} of the touching study (empty without it)."""
    study = study_settings(params, scale).get("touching")
    if not study:
        return {}
    return {kind: _seeded(params, scale, study[kind], study["dataset"]) for kind in ("hard", "soft")}


def touching_base(scale: str, run: StudyRun) -> str:
    """The evaluation on the touching split, without suffix (``.json``, ``.csv``)."""
    return f"results/{scale}/studies/touching/{run.experiment}/seed{run.seed}/test"


def corruption_runs(params: dict, scale: str) -> list[StudyRun]:
    study = study_settings(params, scale).get("corruptions")
    if not study:
        return []
    experiments = list(dict.fromkeys([*study["experiments"], study["baseline"]]))
    return sorted({r for e in experiments for ds in study["datasets"] for r in _seeded(params, scale, e, ds)})


def corruption_folder(scale: str, run: StudyRun) -> str:
    return f"results/{scale}/studies/corruptions/{run.experiment}/{run.dataset}/seed{run.seed}"


def study_runs(params: dict, scale: str) -> list[Run]:
    """Every run any study trains or reads, sorted (a run of the tables appears too)."""
    wanted = {ev.run for ev in study_evaluations(params, scale)}
    wanted |= {Run(r.experiment, r.dataset) for group in touching_runs(params, scale).values() for r in group}
    wanted |= {Run(r.experiment, r.dataset) for r in corruption_runs(params, scale)}
    return sorted(wanted)


def new_runs(params: dict, scale: str) -> list[Run]:
    """The study runs that no table trains."""
    tables = set(runs(params))
    return [run for run in study_runs(params, scale) if run not in tables]


def study_outputs(params: dict, scale: str) -> list[str]:
    """What `snakemake studies` builds: each study's CSV and figure."""
    out = f"results/{scale}/studies"
    files = []
    for name, study in study_settings(params, scale).items():
        parts = {"cost": study.get("architectures"), "attention": study.get("figures")}.get(name) or [None]
        for part in parts:
            stem = f"{out}/{name}-{part}" if part else f"{out}/{name}"
            files += [f"{stem}.csv", f"{stem}.png"]
    return files


# --------------------------------------------------------------------------- commands
# Each study job's command, shared by workflow/rules/studies.smk and studies/dvc.yaml.


def _backbone_dir(params: dict, scale: str, experiment: str) -> str:
    return f"models/backbones/{config_from_params(params, experiment, scale).backbone}"


def touching_data(scale: str) -> str:
    return f"data/prepared/{scale}/{TOUCHING_DATA}"


def touching_data_cmd(params: dict, scale: str) -> str:
    study, settings = study_settings(params, scale)["touching"], scale_params(params, scale)
    return (
        f"python -m diffris make-touching --out {touching_data(scale)} --image-size {settings['image_size']}"
        f" --raw-image-size {settings['synthetic']['raw_image_size']} --per-bin {study['per_bin']} --seed {study['seed']}"
    )


def touching_evaluate_cmd(params: dict, scale: str, run: StudyRun) -> str:
    return (
        f"python -m diffris evaluate --run {run.folder(scale)} --split test --data {touching_data(scale)}"
        f" --backbone-dir {_backbone_dir(params, scale, run.experiment)} --out {touching_base(scale, run)}.json"
    )


def touching_report_cmd(params: dict, scale: str) -> str:
    groups = touching_runs(params, scale)
    files = {kind: " ".join(f"{touching_base(scale, r)}.csv" for r in group) for kind, group in groups.items()}
    out = f"results/{scale}/studies"
    return (
        f"python -m diffris report-touching --hard {files['hard']} --soft {files['soft']}"
        f" --bins {touching_data(scale)}/bins.csv --out {out}/touching.csv --figure {out}/touching.png"
    )


def corruption_cmd(params: dict, scale: str, run: StudyRun) -> str:
    study = study_settings(params, scale)["corruptions"]
    return (
        f"python -m diffris evaluate-corrupted --run {run.folder(scale)} --split test --data data/prepared/{scale}/{run.dataset}"
        f" --backbone-dir {_backbone_dir(params, scale, run.experiment)} --corruptions {','.join(study['corruptions'])}"
        f" --severities {','.join(map(str, study['severities']))} --out {corruption_folder(scale, run)}"
    )


def corruption_report_cmd(params: dict, scale: str) -> str:
    study, out = study_settings(params, scale)["corruptions"], f"results/{scale}/studies"
    folders = " ".join(corruption_folder(scale, r) for r in corruption_runs(params, scale))
    baseline = trained_as(params, scale, study["baseline"])
    return (
        f"python -m diffris report-corruptions --evaluations {folders} --baseline {baseline}"
        f" --out {out}/corruptions.csv --figure {out}/corruptions.png"
    )


def cost_timings(scale: str, architecture: str) -> str:
    """The machine-dependent half of the cost study (latency, measured memory): not in results/."""
    return f"benchmarks/results/studies-cost-{scale}-{architecture}.csv"


def cost_timed(params: dict, scale: str, architecture: str) -> bool:
    return architecture in study_settings(params, scale)["cost"]["timing"]


def cost_cmd(params: dict, scale: str, architecture: str) -> str:
    """Counts always; latency (with the scale's training threads) where ``timing`` names the architecture."""
    study, out = study_settings(params, scale)["cost"], f"results/{scale}/studies/cost-{architecture}"
    timing = f" --timings {cost_timings(scale, architecture)}" if cost_timed(params, scale, architecture) else " --no-timing"
    threads = scale_params(params, scale)["train"].get("cpu_threads")
    return (
        f"python -m diffris measure-cost --scale {scale} --architecture {architecture}"
        f" --experiments {','.join(study['experiments'])} --out {out}.csv --figure {out}.png{timing}"
        + (f" --threads {threads}" if threads and cost_timed(params, scale, architecture) else "")
    )


def attention_source(params: dict, scale: str, figure: str) -> StudyRun:
    """The run whose samples a qualitative figure shows (its first seed), as the figure does."""
    spec = params["figures"][figure]
    return StudyRun(spec["experiment"], spec["dataset"], params["seed"])


def attention_cmd(params: dict, scale: str, figure: str) -> str:
    spec, run, out = params["figures"][figure], attention_source(params, scale, figure), f"results/{scale}/studies/attention-{figure}"
    return (
        f"python -m diffris attention-maps --run {run.folder(scale)} --split {spec['split']} --data data/prepared/{scale}/{run.dataset}"
        f" --backbone-dir {_backbone_dir(params, scale, run.experiment)} --samples {spec['samples']} --figure {out}.png --out {out}.csv"
    )


def report_study_cmd(scale: str, study: str) -> str:
    return (
        f"python -m diffris report-study --study {study} --scale {scale} --metrics results/{scale}/metrics"
        f" --out results/{scale}/studies"
    )
