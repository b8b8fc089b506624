"""The pipeline's job list, derived from params.yaml: what to fetch, prepare, train, evaluate.

Snakemake (``workflow/rules/common.smk``) and the generator of ``dvc.yaml`` both read these
lists, so the two tools build the same jobs. A run used by several tables is trained once:
the runs are the distinct (experiment, dataset) pairs that the tables and figures name, each
trained with every seed of the scale (``scales.<scale>.seeds``: params.yaml ``seed`` + 0..N-1).
A table row with ``evaluation: shuffled`` adds the shuffled-expression evaluation of its run.
The runs and evaluations themselves (``Run``, ``Evaluation``, ``runs``, ``evaluations``, ``seeds``,
``SHUFFLED``) are defined in ``diffris.config``, where every stage can reach them; they are
imported here so that the workflow and ``dvc_stages`` read the whole job list from this module.

Paths::

    data/raw/<scale>/<dataset>/               fetch
    data/prepared/<scale>/<dataset>/          prepare
    models/pretrained/<run>/                  pretrain-backbone (tiny backbones' checkpoints not in the zoo)
    models/zoo/<run>/                         pack-zoo (`snakemake zoo`: regenerating the committed zoo/)
    models/backbones/<backbone>/              fetch-weights
    results/<scale>/grounding.csv             measure-grounding (scales.<scale>.grounding)
    features/<scale>/<dataset>/<backbone>/    cache-features (frozen VAE/CLIP/UNet outputs; scales.<scale>.features)
    runs/<scale>/<experiment>/<dataset>/seed<k>/     train (model.safetensors when complete)
    results/<scale>/metrics/<experiment>/<dataset>/seed<k>/<split>[-shuffled].json   evaluate (+ .csv, -predictions/)
    results/<scale>/{tables,figures,comparison.md}   report (tables/<table>.csv and <table>-intervals.csv)
    results/<scale>/curves/<experiment>/<dataset>/seed<k>[-steps].csv   report-curves (from each run's log.jsonl)

Snakemake only (DVC has neither ``log:`` nor ``benchmark:``; docs/pipeline.md)::

    logs/<scale>/<rule>/<job>.log                 every job's stdout and stderr (logs/<rule>/<job>.log: no scale)
    benchmarks/jobs/<scale>/<rule>/<job>.tsv      time and memory of the benchmarked rules (``BENCHMARKED``)
    benchmarks/results/jobs-<scale>.{csv,md}      report-costs: those gathered into one table (committed)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from diffris.config import DATASETS, SHUFFLED, Evaluation, Run, evaluations, runs, scale_params, seeds
from diffris.errors import ConfigError
from diffris.models.config import config_from_params


def backbone_of(params: dict, scale: str, experiment: str) -> str:
    """The concrete backbone (e.g. ``tiny-sd-1-5``) an experiment trains on at ``scale``."""
    return config_from_params(params, experiment, scale).backbone


def backbones(params: dict, scale: str) -> list[str]:
    return sorted({backbone_of(params, scale, r.experiment) for r in runs(params)})


def pretrained_from(params: dict, backbone: str) -> str | None:
    """The pretraining run the pipeline must run for ``backbone``, or None (a zoo backbone ships
    its checkpoint: docs/pretraining.md)."""
    entry = params["backbones"][backbone]
    return None if "zoo" in entry else entry.get("pretrained")


def zoo_file(params: dict, backbone: str) -> str | None:
    """The zoo file a backbone is fetched from (relative to the repository), or None."""
    return (params["backbones"][backbone].get("zoo") or {}).get("file")


def zoo_runs(params: dict) -> list[str]:
    """The pretraining runs whose checkpoints the zoo ships: `snakemake zoo` regenerates them."""
    return sorted({e["pretrained"] for e in params["backbones"].values() if "zoo" in e})


def pretraining_runs(params: dict, scale: str) -> list[str]:
    """The pretraining runs (``diffris pretrain-backbone``) whose checkpoints ``scale`` uses."""
    return sorted({run for b in backbones(params, scale) if (run := pretrained_from(params, b))})


def grounding_backbones(params: dict, scale: str) -> list[str]:
    """The scale's backbones in the order of its SD versions (Fig. 8's), each once."""
    return list(dict.fromkeys(params["scales"][scale]["backbones"].values()))


def grounding_cmd(params: dict, scale: str) -> str | None:
    """``measure-grounding`` over the scale's backbones, or None where the scale has no
    ``grounding`` settings (the paper scale: SD at 512 px wants a GPU; docs/pretraining.md)."""
    settings = params["scales"][scale].get("grounding")
    if settings is None:
        return None
    folders = " ".join(f"models/backbones/{b}" for b in grounding_backbones(params, scale))
    return (
        f"python -m diffris measure-grounding --backbone-dir {folders} --scenes {settings['scenes']}"
        f" --timestep {params['model']['timestep']} --image-size {image_size(params, scale)}"
        f" --raw-image-size {params['scales'][scale]['synthetic']['raw_image_size']} --out results/{scale}/grounding.csv"
    )


def grounding_files(params: dict, scale: str) -> list[str]:
    """``results/<scale>/grounding.csv`` where the scale measures grounding (comparison.md shows it)."""
    return [f"results/{scale}/grounding.csv"] if grounding_cmd(params, scale) else []


def fetch_weights_cmd(params: dict, backbone: str) -> str:
    cmd = f"python -m diffris fetch-weights --backbone {backbone} --out models/backbones/{backbone}"
    run = pretrained_from(params, backbone)
    return cmd + (f" --pretrained models/pretrained/{run}" if run else "")


# --------------------------------------------------------------------------- feature caches


@dataclass(frozen=True, order=True)
class FeatureCache:
    dataset: str
    backbone: str

    def folder(self, scale: str) -> str:
        return f"features/{scale}/{self.dataset}/{self.backbone}"


def features_enabled(params: dict, scale: str) -> bool:
    return scale_params(params, scale).get("features", {}).get("enabled", False)


def feature_caches(params: dict, scale: str) -> list[FeatureCache]:
    """One cache per (dataset, backbone) that a run trains on, when the scale enables caches."""
    if not features_enabled(params, scale):
        return []
    return sorted({FeatureCache(r.dataset, backbone_of(params, scale, r.experiment)) for r in runs(params)})


def feature_cache_of(params: dict, scale: str, experiment: str, dataset: str) -> FeatureCache | None:
    return FeatureCache(dataset, backbone_of(params, scale, experiment)) if features_enabled(params, scale) else None


def features_option(params: dict, scale: str, experiment: str, dataset: str) -> str:
    """`` --features DIR`` for a train or evaluate command, or nothing when caches are off."""
    cache = feature_cache_of(params, scale, experiment, dataset)
    return f" --features {cache.folder(scale)}" if cache else ""


def latent_donor(params: dict, scale: str, cache: FeatureCache) -> FeatureCache | None:
    """The cache of the same dataset whose latents ``cache`` offers to reuse (``--reuse-latents``;
    used only if the VAE sha256 turns out equal): the dataset's cache with the most runs."""
    ds_runs = [r for r in runs(params) if r.dataset == cache.dataset]
    counts = {}
    for r in ds_runs:
        name = backbone_of(params, scale, r.experiment)
        counts[name] = counts.get(name, 0) + 1
    donor = min(counts, key=lambda name: (-counts[name], name))
    return None if donor == cache.backbone else FeatureCache(cache.dataset, donor)


def _one(values: set, what: str, cache: FeatureCache):
    if len(values) != 1:
        raise ConfigError(
            f"the runs on {cache.dataset} with backbone {cache.backbone} disagree on {what} "
            f"({sorted(values)}); one feature cache serves them all"
        )
    return values.pop()


def feature_cache_options(params: dict, scale: str, cache: FeatureCache) -> str:
    """The flags of ``cache-features`` for one cache, from the runs that read it: the text length,
    UNet taps when a run's CP-adapter is off (and the scale caches taps), the latent donor, and
    the micro-batch size as batch size (on CPU the VAE's kernels depend on the batch size, so the
    cached latents then equal the on-the-fly ones bit for bit)."""
    configs = [
        config_from_params(params, r.experiment, scale)
        for r in runs(params)
        if r.dataset == cache.dataset and backbone_of(params, scale, r.experiment) == cache.backbone
    ]
    settings, train = scale_params(params, scale)["features"], scale_params(params, scale)["train"]
    options = f" --text-length {_one({c.text_max_length for c in configs}, 'text_max_length', cache)}"
    frozen = [c for c in configs if not c.cp_adapter.enabled]
    if settings.get("unet_taps") and frozen:
        options += f" --unet-taps --timestep {_one({c.timestep for c in frozen}, 'timestep', cache)}"
        if not _one({c.latent_scaling for c in frozen}, "latent_scaling", cache):
            options += " --no-latent-scaling"
    donor = latent_donor(params, scale, cache)
    if donor:
        options += f" --reuse-latents {donor.folder(scale)}"
    options += f" --batch-size {train['micro_batch_size']}"
    return options + (f" --cpu-threads {train['cpu_threads']}" if train.get("cpu_threads") else "")


def feature_cache_cmd(params: dict, scale: str, cache: FeatureCache) -> str:
    return (
        f"python -m diffris cache-features --data data/prepared/{scale}/{cache.dataset}"
        f" --backbone-dir models/backbones/{cache.backbone}{feature_cache_options(params, scale, cache)}"
        f" --out {cache.folder(scale)}"
    )


# --------------------------------------------------------------------------- logs and benchmarks
# <job> is the job's wildcards as a path, e.g. full/rrsisd/seed0/test; common.smk builds the same paths.

LOGS, BENCHMARKS = "logs", "benchmarks/jobs"
SCALE_FREE_RULES = ("pretrain_backbone", "fetch_weights", "pack_zoo")  # their outputs do not depend on the scale
BENCHMARKED = ("pretrain_backbone", "cache_features", "train", "evaluate", "evaluate_shuffled")


def job_file(root: str, scale: str, rule: str, job: str, suffix: str) -> str:
    """``<root>/<scale>/<rule>/<job><suffix>`` (``<root>/<rule>/<job><suffix>`` for a scale-free rule)."""
    return f"{root}/{rule}/{job}{suffix}" if rule in SCALE_FREE_RULES else f"{root}/{scale}/{rule}/{job}{suffix}"


def benchmarked_jobs(params: dict, scale: str) -> list[tuple[str, str]]:
    """(rule, job) of every benchmarked job of ``scale``, in pipeline order."""
    jobs = [("pretrain_backbone", run) for run in pretraining_runs(params, scale)]
    jobs += [("cache_features", f"{c.dataset}/{c.backbone}") for c in feature_caches(params, scale)]
    jobs += [("train", f"{r.experiment}/{r.dataset}/seed{s}") for r in runs(params) for s in seeds(params, scale, r.experiment)]
    for shuffled in (False, True):
        jobs += [
            ("evaluate_shuffled" if shuffled else "evaluate", f"{e.experiment}/{e.dataset}/seed{s}/{e.split}")
            for e in evaluations(params)
            if e.shuffled == shuffled
            for s in seeds(params, scale, e.experiment)
        ]
    return jobs


def curve_files(params: dict, scale: str) -> list[str]:
    """``report-curves``' outputs: per run and seed, the per-epoch and the per-step CSV."""
    from diffris.report.curves import curve_paths  # the CLI's parser and the Snakefile import this module

    files = []
    for r in runs(params):
        for s in seeds(params, scale, r.experiment):
            steps, epochs = curve_paths(f"results/{scale}/curves", r.experiment, r.dataset, s)
            files += [epochs, steps]
    return files


def datasets(params: dict) -> list[str]:
    return [d for d in DATASETS if any(r.dataset == d for r in runs(params))]


def image_size(params: dict, scale: str) -> int:
    return scale_params(params, scale)["image_size"]


def run_params(params: dict, scale: str, experiment: str, dataset: str, seed: int) -> str:
    """Everything in params.yaml that one training run (one seed) depends on, as canonical JSON."""
    relevant = {
        "seed": seed,
        "image_size": image_size(params, scale),
        "model": asdict(config_from_params(params, experiment, scale)),
        "train": scale_params(params, scale)["train"],
        "dataset": dataset,
    }
    return json.dumps(relevant, sort_keys=True)


# The code each kind of job depends on (Snakemake inputs, DVC deps), so that a change to a table
# formatter retrains nothing.
CODE = {"data": "diffris/data", "models": "diffris/models", "pretraining": "diffris/pretraining", "report": "diffris/report"}
TRAIN_MODULES = ("trainer", "run_spec", "run_folder", "run_log", "batches", "checkpoint", "validation", "metrics")
TRAIN_CODE = [f"diffris/training/{name}.py" for name in TRAIN_MODULES]
EVAL_CODE = [*TRAIN_CODE, "diffris/evaluation/evaluate.py"]  # evaluation loads runs and scores as validation does
FEATURES_CODE = "diffris/features"
WEIGHTS_CODE = ["diffris/pretraining/backbones.py", "diffris/pretraining/zoo.py"]  # fetch-weights
