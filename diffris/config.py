"""params.yaml -> validated configuration.

The same JSON schema (``workflow/schemas/params.schema.yaml``) validates params.yaml here and in
Snakemake's ``validate()``, and the same ``check_references`` checks the names that point from one
section to another (the Snakefile calls it when it is parsed). Errors name the offending key path,
e.g. ``scales.mini.image_size``. A key given twice in one mapping is an error, not "the last wins".

It also names the jobs that params.yaml's tables and figures ask for (``Run``, ``Evaluation``,
``runs``, ``evaluations``, ``seeds``): every stage from training on names its jobs with them, so
they sit here, below all of them, rather than in the pipeline that uses them last.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from diffris.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = REPO_ROOT / "params.yaml"
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "params.schema.yaml"
DATASETS = ("rrsisd", "refsegrs", "risbench")
SPLITS = ("train", "val", "test")


@lru_cache(maxsize=1)
def _schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def validate_params(params: Any, source: str = "params.yaml") -> None:
    """Raise ConfigError naming the key path and the problem of the first schema violation."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        lines.append(f"{source}: {where}: {_describe(err)}")
    raise ConfigError("\n".join(lines))


def _describe(err) -> str:
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "none"
        return f"unknown key(s) {', '.join(map(repr, extra))} (allowed: {allowed})"
    return err.message


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML file read safely, with duplicate keys refused; errors name the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=UniqueKeyLoader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None


def load_params(path: str | Path | None = None) -> dict:
    """Read and validate params.yaml: schema, ``scale`` and every cross-reference."""
    path = Path(path) if path else DEFAULT_PARAMS
    params = read_yaml(path)
    validate_params(params, str(path))
    check_references(params, str(path))
    return params


def check_references(params: dict, source: str = "params.yaml") -> None:
    """Raise ConfigError, naming the key path, for the first name that points nowhere: the scale,
    the experiments that tables and figures name, each experiment's SD version in every scale,
    each scale's backbones and the pretraining runs behind backbones. The CLI (``load_params``)
    and the Snakefile both call this, before anything is planned."""
    for where, problem in reference_errors(params):
        raise ConfigError(f"{source}: {where}: {problem}")


def reference_errors(params: dict):
    """(key path, problem) of every broken cross-reference, in a fixed order."""
    scales, experiments, backbones = params["scales"], params["experiments"], params["backbones"]
    pretraining = params.get("pretraining") or {}
    if params["scale"] not in scales:
        yield "scale", f"{params['scale']!r} is not one of the scales ({', '.join(scales)})"
    for name, table in params["tables"].items():
        for k, row in enumerate(table["rows"]):
            if row["experiment"] not in experiments:
                yield f"tables.{name}.rows.{k}.experiment", _unknown(row["experiment"], "experiments", experiments)
    for name, figure in params["figures"].items():
        if figure["experiment"] not in experiments:
            yield f"figures.{name}.experiment", _unknown(figure["experiment"], "experiments", experiments)
    for scale_name, scale in scales.items():
        for k, experiment in enumerate(scale.get("seeded_experiments") or []):
            if experiment not in experiments:
                yield f"scales.{scale_name}.seeded_experiments.{k}", _unknown(experiment, "experiments", experiments)
        for version, backbone in scale["backbones"].items():
            if backbone not in backbones:
                yield f"scales.{scale_name}.backbones.{version}", _unknown(backbone, "backbones", backbones)
    versions = [("model.backbone", params["model"]["backbone"])]
    versions += [(f"experiments.{e}.backbone", o["backbone"]) for e, o in experiments.items() if "backbone" in o]
    for where, version in versions:
        for scale_name, scale in scales.items():
            if version not in scale["backbones"]:
                yield where, _unknown(version, f"scales.{scale_name}.backbones", scale["backbones"], "an SD version of")
    for name, entry in backbones.items():
        run = entry.get("pretrained")
        if run is not None and run not in pretraining:
            yield f"backbones.{name}.pretrained", _unknown(run, "pretraining", pretraining)
        elif run is not None and name not in pretraining[run]["unet"]["checkpoints"]:
            yield f"backbones.{name}.pretrained", f"pretraining.{run}.unet.checkpoints has no {name!r}"
    for run, entry in pretraining.items():
        if entry["architecture"] not in backbones:
            yield f"pretraining.{run}.architecture", _unknown(entry["architecture"], "backbones", backbones)
    yield from study_reference_errors(params.get("studies") or {}, experiments)


def study_reference_errors(studies: dict, experiments: dict):
    """(key path, problem) of every experiment a study names that `experiments` lacks."""
    for name, study in studies.items():
        named = [("reference", study.get("reference")), ("hard", study.get("hard")), ("soft", study.get("soft"))]
        named += [("baseline", study.get("baseline"))]
        named += [(f"rows.{k}.experiment", row["experiment"]) for k, row in enumerate(study.get("rows") or [])]
        named += [(f"experiments.{k}", e) for k, e in enumerate(study.get("experiments") or [])]
        for where, experiment in named:
            if experiment is not None and experiment not in experiments:
                yield f"studies.{name}.{where}", _unknown(experiment, "experiments", experiments)


def _unknown(name: Any, section: str, known, kind: str = "a key of") -> str:
    return f"{name!r} is not {kind} `{section}` (has: {', '.join(map(str, known)) or 'none'})"


def scale_params(params: dict, scale: str | None = None) -> dict:
    """The settings of one scale (the configured one by default)."""
    scale = scale or params["scale"]
    try:
        return params["scales"][scale]
    except KeyError:
        raise ConfigError(f"scale {scale!r} is not one of {', '.join(params['scales'])}") from None


# --- the runs and evaluations that the tables and figures name ---------------------------------
# Every later stage (training, evaluation, report, studies, the pipeline) names its jobs with these.

BOTH_SPLITS = ("val", "test")
SHUFFLED = "shuffled"  # a table row's `evaluation`: the shuffled-expression control of its run


@dataclass(frozen=True, order=True)
class Run:
    """A trained configuration: one experiment on one dataset (trained once per seed)."""

    experiment: str
    dataset: str

    def folder(self, scale: str, seed: int) -> str:
        return f"runs/{scale}/{self.experiment}/{self.dataset}/seed{seed}"


@dataclass(frozen=True, order=True)
class Evaluation:
    """A (run, split) a table or figure reads; ``shuffled``: with ``--shuffle-expressions``."""

    experiment: str
    dataset: str
    split: str
    shuffled: bool = False

    @property
    def run(self) -> Run:
        return Run(self.experiment, self.dataset)

    def base(self, scale: str, seed: int) -> str:
        """The metrics path without its suffix: ``<base>.json``, ``<base>.csv``, ``<base>-predictions``."""
        name = f"{self.split}-{SHUFFLED}" if self.shuffled else self.split
        return f"results/{scale}/metrics/{self.experiment}/{self.dataset}/seed{seed}/{name}"


def seeds(params: dict, scale: str, experiment: str | None = None) -> list[int]:
    """The training seeds of ``experiment`` at ``scale``: params.yaml ``seed`` + 0..N-1 with
    N = ``scales.<scale>.seeds``, or the first seed alone for an experiment left out of
    ``scales.<scale>.seeded_experiments`` where that list is given (None: the most any has)."""
    settings = scale_params(params, scale)
    count = settings.get("seeds", 1)
    chosen = settings.get("seeded_experiments")
    if experiment is not None and chosen is not None and experiment not in chosen:
        count = 1
    return [params["seed"] + k for k in range(count)]


def runs(params: dict) -> list[Run]:
    """Every training run the tables and figures need, once each, sorted (each has every seed)."""
    wanted = {Run(row["experiment"], t["dataset"]) for t in params["tables"].values() for row in t["rows"]}
    wanted |= {Run(f["experiment"], f["dataset"]) for f in params["figures"].values()}
    return sorted(wanted)


def evaluations(params: dict) -> list[Evaluation]:
    """Every (run, split) a table or figure reads, sorted; a table without `split` shows val and
    test; a row with ``evaluation: shuffled`` reads the shuffled-expression evaluation."""
    wanted = set()
    for table in params["tables"].values():
        splits = [table["split"]] if "split" in table else BOTH_SPLITS
        wanted |= {
            Evaluation(r["experiment"], table["dataset"], s, r.get("evaluation") == SHUFFLED)
            for r in table["rows"]
            for s in splits
        }
    wanted |= {Evaluation(f["experiment"], f["dataset"], f["split"]) for f in params["figures"].values()}
    return sorted(wanted)
