"""``dvc.yaml``: the pipeline's jobs (``diffris.pipeline``) as DVC stages, and ``diffris export-dvc``.

DVC's templating cannot derive the run list from the tables, nor look a backbone up per scale
(no nested interpolation), so dvc.yaml is generated from params.yaml. Each stage runs the same
command as its Snakemake rule (less the rule's log redirection); tests/test_pipeline_sync.py
proves that it matches both params.yaml and `snakemake -n -p`.
"""

from __future__ import annotations

from diffris.pipeline.jobs import (
    CODE,
    EVAL_CODE,
    FEATURES_CODE,
    SHUFFLED,
    TRAIN_CODE,
    Evaluation,
    FeatureCache,
    Run,
    backbone_of,
    backbones,
    curve_files,
    datasets,
    evaluations,
    feature_cache_cmd,
    feature_cache_of,
    feature_caches,
    grounding_files,
    features_option,
    image_size,
    latent_donor,
    runs,
    seeds,
)
from diffris.pipeline.dvc_backbones import backbone_stages, zoo_stages


def dvc_stages(params: dict, scale: str) -> dict:
    """All stages of the configured scale, in pipeline order, as dvc.yaml mappings."""
    stages: dict[str, dict] = {}
    for ds in datasets(params):
        raw, prepared = f"data/raw/{scale}/{ds}", f"data/prepared/{scale}/{ds}"
        stages[f"fetch-{ds}"] = {
            "cmd": f"python -m diffris fetch --dataset {ds} --scale {scale} --out {raw}",
            "deps": [CODE["data"]],
            "params": ["seed", f"scales.{scale}.data_source", f"scales.{scale}.synthetic", f"datasets.{ds}"],
            "outs": [{raw: {"persist": True}}],  # a placed real dataset is never deleted
        }
        stages[f"prepare-{ds}"] = {
            "cmd": f"python -m diffris prepare --dataset {ds} --raw {raw} --out {prepared}"
            f" --image-size {image_size(params, scale)}",
            "deps": [raw, CODE["data"]],
            "params": [f"scales.{scale}.image_size"],
            "outs": [prepared],
        }
    stages.update(backbone_stages(params, scale))
    for cache in feature_caches(params, scale):
        stages[f"features-{cache.dataset}-{cache.backbone}"] = _feature_stage(params, scale, cache)
    for run in runs(params):
        for seed in seeds(params, scale, run.experiment):
            stages[f"train-{run.experiment}-{run.dataset}-seed{seed}"] = _train_stage(params, scale, run, seed)
    for ev in evaluations(params):
        for seed in seeds(params, scale, ev.experiment):
            name = f"evaluate-{ev.experiment}-{ev.dataset}-seed{seed}-{ev.split}" + (f"-{SHUFFLED}" if ev.shuffled else "")
            stages[name] = _evaluate_stage(params, scale, ev, seed)
    stages.update(_report_stages(params, scale))
    return stages


def _train_stage(params: dict, scale: str, run: Run, seed: int) -> dict:
    folder, backbone = run.folder(scale, seed), backbone_of(params, scale, run.experiment)
    return {
        "cmd": f"python -m diffris launch --gpus {params.get('train_gpus', {}).get(scale, 0)}"
        f" train --experiment {run.experiment} --dataset {run.dataset} --seed {seed}"
        f" --scale {scale} --data data/prepared/{scale}/{run.dataset}"
        f" --backbone-dir models/backbones/{backbone}{features_option(params, scale, run.experiment, run.dataset)} --out {folder}",
        "deps": [
            f"data/prepared/{scale}/{run.dataset}",
            f"models/backbones/{backbone}",
            *_feature_deps(params, scale, run.experiment, run.dataset),
            CODE["models"],
            *TRAIN_CODE,
        ],
        "params": [
            "seed",
            "model",
            f"experiments.{run.experiment}",
            f"scales.{scale}.image_size",
            f"scales.{scale}.model",
            f"scales.{scale}.backbones",
            f"scales.{scale}.train",
        ],
        "outs": [f"{folder}/model.safetensors", f"{folder}/trained.json"],  # trained.json: written last
    }


def _feature_stage(params: dict, scale: str, cache: FeatureCache) -> dict:
    donor = latent_donor(params, scale, cache)
    return {
        "cmd": feature_cache_cmd(params, scale, cache),
        "deps": [
            f"data/prepared/{scale}/{cache.dataset}",
            f"models/backbones/{cache.backbone}",
            *([donor.folder(scale)] if donor else []),
            CODE["models"],
            FEATURES_CODE,
        ],
        "params": [f"scales.{scale}.features"],
        "outs": [cache.folder(scale)],
    }


def _feature_deps(params: dict, scale: str, experiment: str, dataset: str) -> list[str]:
    cache = feature_cache_of(params, scale, experiment, dataset)
    return [cache.folder(scale), FEATURES_CODE] if cache else []


def _evaluate_stage(params: dict, scale: str, ev: Evaluation, seed: int) -> dict:
    run, base = ev.run.folder(scale, seed), ev.base(scale, seed)
    backbone = backbone_of(params, scale, ev.experiment)
    return {
        "cmd": f"python -m diffris evaluate --run {run} --split {ev.split} --data data/prepared/{scale}/{ev.dataset}"
        f" --backbone-dir models/backbones/{backbone}{features_option(params, scale, ev.experiment, ev.dataset)}"
        f" --out {base}.json" + (" --shuffle-expressions" if ev.shuffled else ""),
        "deps": [
            f"{run}/model.safetensors",
            f"data/prepared/{scale}/{ev.dataset}",
            *_feature_deps(params, scale, ev.experiment, ev.dataset),
            *EVAL_CODE,
        ],
        "metrics": [{f"{base}.json": {"cache": False}}],
        "outs": [{f"{base}.csv": {"cache": False}}, {f"{base}-predictions": {"cache": False}}],
    }


def _report_stages(params: dict, scale: str) -> dict:
    results, tables = f"results/{scale}", [*params["tables"]]
    table_files = [f"{results}/tables/{name}" for t in tables for name in (f"{t}.csv", f"{t}-intervals.csv")]
    per_sample = [
        f"{e.base(scale, seed)}{suffix}" for e in evaluations(params) for seed in seeds(params, scale, e.experiment) for suffix in (".json", ".csv")
    ]
    first = params["seed"]  # the qualitative figures show the first seed's predictions
    figure_inputs = [
        Evaluation(f["experiment"], f["dataset"], f["split"]).base(scale, first) + kind
        for f in params["figures"].values()
        for kind in ("-predictions", ".json")
    ]
    trained = [f"{r.folder(scale, s)}/trained.json" for r in runs(params) for s in seeds(params, scale, r.experiment)]
    return {
        "report-curves": {  # reads log.jsonl beside each trained.json (train writes trained.json last)
            "cmd": f"python -m diffris report-curves --runs runs/{scale} --scale {scale} --out {results}/curves",
            "deps": [*trained, CODE["report"]],
            "outs": [{f"{results}/curves": {"cache": False}}],
        },
        "report-tables": {
            "cmd": f"python -m diffris report-tables --reference results/reference --metrics {results}/metrics"
            f" --scale {scale} --out {results}/tables --quiet",
            "deps": [*per_sample, "results/reference", CODE["report"]],
            "params": ["tables"],
            "outs": [{path: {"cache": False}} for path in table_files],
        },
        "environment": {
            "cmd": f"python -m diffris environment --scale {scale} --out {results}/ENVIRONMENT.json",
            "deps": [f"{results}/tables/{t}.csv" for t in tables],
            "outs": [{f"{results}/ENVIRONMENT.json": {"cache": False}}],
        },
        "report-figures": {
            "cmd": f"python -m diffris report-figures --tables {results}/tables --metrics {results}/metrics"
            f" --data data/prepared/{scale} --out {results}/figures",
            "deps": [f"{results}/tables/fig8.csv", f"{results}/tables/fig8-intervals.csv", *figure_inputs, CODE["report"]],
            "params": ["figures"],
            "outs": [{f"{results}/figures/{f}.png": {"cache": False}} for f in ("fig5", "fig6", "fig7", "fig8", "assignment")],
        },
        "report-comparison": {
            "cmd": f"python -m diffris report-comparison --tables {results}/tables --scale {scale}"
            + "".join(f" --grounding {g}" for g in grounding_files(params, scale))
            + f" --out {results}/comparison.md",
            "deps": [*table_files, *grounding_files(params, scale), CODE["report"]],
            "outs": [{f"{results}/comparison.md": {"cache": False}}],
        },
    }


def study_stages(params: dict, scale: str) -> dict:
    """The studies' stages (``studies/dvc.yaml``, run from the repository root: ``wdir: ..``):
    the runs and evaluations no table has, then each study's own jobs (diffris.studies.plan)."""
    from diffris.studies import plan

    stages: dict[str, dict] = {}
    for run in plan.new_runs(params, scale):
        for seed in seeds(params, scale, run.experiment):
            stages[f"train-{run.experiment}-{run.dataset}-seed{seed}"] = _train_stage(params, scale, run, seed)
    tables = set(evaluations(params))
    for ev in plan.study_evaluations(params, scale):
        if ev not in tables:
            for seed in seeds(params, scale, ev.experiment):
                stages[f"evaluate-{ev.experiment}-{ev.dataset}-seed{seed}-{ev.split}"] = _evaluate_stage(params, scale, ev, seed)
    studies = plan.study_settings(params, scale)
    for name in plan.VARIANT_STUDIES:
        if name in studies:
            stages[f"study-{name}"] = _variant_study_stage(params, scale, name)
    if "touching" in studies:
        stages.update(_touching_stages(params, scale))
    if "corruptions" in studies:
        stages.update(_corruption_stages(params, scale))
    for arch in studies.get("cost", {}).get("architectures", []):
        stages[f"study-cost-{arch}"] = _cost_stage(params, scale, arch)
    for figure in studies.get("attention", {}).get("figures", []):
        run, out = plan.attention_source(params, scale, figure), f"results/{scale}/studies/attention-{figure}"
        stages[f"study-attention-{figure}"] = {
            "cmd": plan.attention_cmd(params, scale, figure),
            "deps": [f"{run.folder(scale)}/model.safetensors", f"data/prepared/{scale}/{run.dataset}", *EVAL_CODE, *plan.STUDY_CODE["attention"]],
            "outs": [{f"{out}{suffix}": {"cache": False}} for suffix in (".csv", ".png")],
        }
    return {name: {**stage, "wdir": ".."} for name, stage in stages.items()}


def _variant_study_stage(params: dict, scale: str, name: str) -> dict:
    from diffris.studies import plan

    study = plan.study_settings(params, scale)[name]
    trained = [plan.trained_as(params, scale, e) for e in [study["reference"], *(r["experiment"] for r in study["rows"])]]
    inputs = {
        f"{Evaluation(e, ds, split).base(scale, s)}{suffix}"
        for e in trained
        for ds, split in plan.variant_evaluations(study)
        for s in seeds(params, scale, e)
        for suffix in (".json", ".csv")
    }
    cmd = plan.report_study_cmd(scale, name)
    return _study_report(cmd, sorted(inputs), scale, name, plan.STUDY_CODE["variants"], [f"studies.{name}"])


def _touching_stages(params: dict, scale: str) -> dict:
    from diffris.studies import plan

    data = plan.touching_data(scale)
    stages = {
        "touching-data": {
            "cmd": plan.touching_data_cmd(params, scale),
            "deps": [CODE["data"], *plan.STUDY_CODE["touching_data"]],
            "params": ["studies.touching", f"scales.{scale}.image_size", f"scales.{scale}.synthetic"],
            "outs": [data],
        }
    }
    evaluated = []
    for run in (r for group in plan.touching_runs(params, scale).values() for r in group):
        base = plan.touching_base(scale, run)
        stages[f"touching-{run.experiment}-seed{run.seed}"] = {
            "cmd": plan.touching_evaluate_cmd(params, scale, run),
            "deps": [f"{run.folder(scale)}/model.safetensors", data, *EVAL_CODE],
            "metrics": [{f"{base}.json": {"cache": False}}],
            "outs": [{f"{base}.csv": {"cache": False}}, {f"{base}-predictions": {"cache": False}}],
        }
        evaluated.append(f"{base}.csv")
    cmd = plan.touching_report_cmd(params, scale)
    stages["study-touching"] = _study_report(cmd, [*evaluated, data], scale, "touching", plan.STUDY_CODE["touching_report"])
    return stages


def _corruption_stages(params: dict, scale: str) -> dict:
    from diffris.studies import plan

    stages, folders = {}, []
    for run in plan.corruption_runs(params, scale):
        folders.append(plan.corruption_folder(scale, run))
        stages[f"corrupted-{run.experiment}-{run.dataset}-seed{run.seed}"] = {
            "cmd": plan.corruption_cmd(params, scale, run),
            "deps": [f"{run.folder(scale)}/model.safetensors", f"data/prepared/{scale}/{run.dataset}", *EVAL_CODE, *plan.STUDY_CODE["corrupted"]],
            "outs": [{folders[-1]: {"cache": False}}],
        }
    cmd = plan.corruption_report_cmd(params, scale)
    stages["study-corruptions"] = _study_report(cmd, folders, scale, "corruptions", plan.STUDY_CODE["corruption_report"])
    return stages


def _cost_stage(params: dict, scale: str, arch: str) -> dict:
    from diffris.studies import plan

    out = f"results/{scale}/studies/cost-{arch}"
    stage = {
        "cmd": plan.cost_cmd(params, scale, arch),
        "deps": [CODE["models"], *plan.STUDY_CODE["cost"]],
        "params": ["studies.cost", "model", "experiments", "scales"],
        "outs": [{f"{out}{suffix}": {"cache": False}} for suffix in (".csv", ".png")],
    }
    if plan.cost_timed(params, scale, arch):
        stage["outs"].append({plan.cost_timings(scale, arch): {"cache": False}})
    return stage


def _study_report(cmd: str, inputs: list[str], scale: str, name: str, code: list[str], params: list[str] | None = None) -> dict:
    """A stage that writes ``results/<scale>/studies/<name>.{csv,png}`` from ``inputs``."""
    stage = {"cmd": cmd, "deps": [*inputs, CODE["report"], *code]}
    if params:
        stage["params"] = params
    stage["outs"] = [{f"results/{scale}/studies/{name}{suffix}": {"cache": False}} for suffix in (".csv", ".png")]
    return stage


HEADER = (
    "# Generated from params.yaml by `diffris export-dvc`; do not edit by hand.\n"
    "# The same jobs and commands as the Snakefile (tests/test_pipeline_sync.py checks both).\n"
)


def dvc_yaml(params: dict, scale: str) -> str:
    import yaml

    document = {"stages": dvc_stages(params, scale), "plots": dvc_plots(params, scale)}
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=1000)


def studies_dvc_yaml(params: dict, scale: str) -> str:
    """``studies/dvc.yaml``: `dvc repro studies/dvc.yaml` builds the studies as `snakemake studies` does."""
    import yaml

    return HEADER + yaml.safe_dump({"stages": study_stages(params, scale)}, sort_keys=False, width=1000)


def zoo_dvc_yaml(params: dict) -> str:
    """``zoo/dvc.yaml``: `dvc repro zoo/dvc.yaml` regenerates the zoo as `snakemake zoo` does."""
    import yaml

    return HEADER + yaml.safe_dump({"stages": zoo_stages(params)}, sort_keys=False, width=1000)


def dvc_plots(params: dict, scale: str) -> list[dict]:
    """`dvc plots show`: every run's training loss per step, and train loss and val oIoU/mIoU per epoch."""
    files = curve_files(params, scale)
    steps = {f: "loss" for f in files if f.endswith("-steps.csv")}
    epochs = [f for f in files if not f.endswith("-steps.csv")]
    return [
        {"training loss per step": {"x": "step", "y": steps, "template": "linear", "y_label": "loss"}},
        {"training loss per epoch": {"x": "epoch", "y": {f: "train_loss" for f in epochs}, "template": "linear"}},
        {"validation per epoch": {"x": "epoch", "y": {f: ["val_oIoU", "val_mIoU"] for f in epochs}, "y_label": "%"}},
    ]


def register(sub) -> None:
    export = sub.add_parser(
        "export-dvc", help="write dvc.yaml, studies/dvc.yaml and zoo/dvc.yaml: the pipeline's stages for DVC, from params.yaml"
    )
    export.add_argument("--out", default="dvc.yaml", help="file to write (default: dvc.yaml)")
    export.add_argument("--studies-out", help="the studies' stages (default: studies/dvc.yaml beside --out)")
    export.add_argument("--zoo-out", help="the zoo's regeneration stages (default: zoo/dvc.yaml beside --out)")
    export.add_argument("--params", help="params.yaml (default: the repository's)")
    export.add_argument("--scale", help="default: params.yaml's `scale`")
    export.set_defaults(handler=_run_export)


def _run_export(args) -> int:
    from pathlib import Path

    from diffris.config import load_params

    params = load_params(args.params)
    scale = args.scale or params["scale"]
    root = Path(args.out).parent
    files = (
        (Path(args.out), dvc_yaml(params, scale), f"{len(dvc_stages(params, scale))} stages, scale {scale}"),
        (Path(args.studies_out or root / "studies" / "dvc.yaml"), studies_dvc_yaml(params, scale),
         f"{len(study_stages(params, scale))} stages, scale {scale}"),
        (Path(args.zoo_out or root / "zoo" / "dvc.yaml"), zoo_dvc_yaml(params), f"{len(zoo_stages(params))} stages"),
    )  # fmt: skip
    for path, text, what in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"written: {path} ({what})")
    return 0
