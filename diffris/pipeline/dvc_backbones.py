"""The backbone stages of ``dvc.yaml``: pretraining, fetch-weights and measure-grounding, and the
zoo's regeneration (``zoo/dvc.yaml``); the same commands as their Snakemake rules."""

from __future__ import annotations

from diffris.pipeline.jobs import (
    CODE,
    WEIGHTS_CODE,
    backbones,
    fetch_weights_cmd,
    grounding_backbones,
    grounding_cmd,
    pretrained_from,
    pretraining_runs,
    zoo_file,
    zoo_runs,
)


def backbone_stages(params: dict, scale: str) -> dict:
    """The pretrainings the scale runs, its backbones' fetch-weights and its grounding measure."""
    stages = {f"pretrain-{run}": pretrain_stage(params, run) for run in pretraining_runs(params, scale)}
    for name in backbones(params, scale):
        run = pretrained_from(params, name)
        stages[f"fetch-weights-{name}"] = {
            "cmd": fetch_weights_cmd(params, name),
            "deps": [*([f"models/pretrained/{run}"] if run else []), *filter(None, [zoo_file(params, name)]), CODE["models"]]
            + WEIGHTS_CODE,
            "params": [f"backbones.{name}"],
            "outs": [f"models/backbones/{name}"],
        }
    if (cmd := grounding_cmd(params, scale)) is not None:
        stages["measure-grounding"] = {
            "cmd": cmd,
            "deps": [f"models/backbones/{b}" for b in grounding_backbones(params, scale)]
            + [CODE["models"], CODE["data"], CODE["pretraining"]],
            "params": [f"scales.{scale}.{key}" for key in ("grounding", "image_size", "synthetic.raw_image_size")]
            + ["model.timestep"],
            "outs": [{f"results/{scale}/grounding.csv": {"cache": False}}],
        }
    return stages


def pretrain_stage(params: dict, run: str) -> dict:
    return {
        "cmd": f"python -m diffris pretrain-backbone --run {run} --out models/pretrained/{run}",
        "deps": [CODE["models"], CODE["data"], CODE["pretraining"]],
        "params": [f"pretraining.{run}", f"backbones.{params['pretraining'][run]['architecture']}"],
        "outs": [f"models/pretrained/{run}"],
    }


def zoo_stages(params: dict) -> dict:
    """``zoo/dvc.yaml`` (run from the repository root): regenerating the zoo's pretraining runs and
    packing their checkpoints into ``models/zoo/<run>/``, as `snakemake zoo` does."""
    stages: dict[str, dict] = {}
    for run in zoo_runs(params):
        stages[f"pretrain-{run}"] = pretrain_stage(params, run)
        stages[f"pack-zoo-{run}"] = {
            "cmd": f"python -m diffris pack-zoo --pretrained models/pretrained/{run} --out models/zoo/{run}",
            "deps": [f"models/pretrained/{run}", "diffris/pretraining/zoo.py"],
            "outs": [f"models/zoo/{run}"],
        }
    return {name: {**stage, "wdir": ".."} for name, stage in stages.items()}
