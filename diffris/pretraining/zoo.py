"""The model zoo: pretrained tiny backbones shipped in the repository, verified like a Hub download.

``diffris pack-zoo`` turns each checkpoint of a ``pretrain-backbone`` output folder into one
safetensors file, ``<backbone>.safetensors``: the UNet, VAE and text encoder weights in float16
(keys prefixed ``unet.``, ``vae.``, ``text_encoder.``) and, in the file's metadata, the three
networks' diffusers configs, the scheduler's and the checkpoint's ``backbone.json``. It writes
``zoo.json`` beside them (each file's sha256 and size, the command, the CPU) and prints the
params.yaml lines that pin them.

A params.yaml backbone ``{pretrained: RUN, zoo: {file: F, sha256: H}}`` is that checkpoint shipped
as ``F`` (relative to params.yaml's folder): ``fetch-weights`` checks the file's sha256 against
``H``, refuses a mismatch in one line, and writes the diffusers folder (float32) from it, so every
machine starts from the same weights without pretraining.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffris.errors import ConfigError, FetchError
from diffris.determinism import cpu_model
from diffris.fileio import atomic_folder, read_json, sha256sum

COMPONENTS = ("unet", "vae", "text_encoder")
DTYPE = torch.float16
META_KEY = "diffris"


def pack_checkpoint(folder: Path, out_file: Path) -> None:
    """One ``pretrain-backbone`` checkpoint folder as one float16 safetensors file."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    from diffris.models.weights import read_info

    loaders = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}
    tensors, configs = {}, {}
    for component in COMPONENTS:
        model = loaders[component].from_pretrained(folder / component)
        configs[component] = json.loads((folder / component / "config.json").read_text())
        for key, value in model.state_dict().items():
            tensors[f"{component}.{key}"] = (value.to(DTYPE) if value.is_floating_point() else value).contiguous()
    configs["scheduler"] = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    configs["backbone"] = read_info(folder)
    save_file(tensors, out_file, metadata={META_KEY: json.dumps(configs, sort_keys=True)})


def pack_zoo(pretrained_dir: Path, out: Path) -> Path:
    """Every checkpoint of a pretraining output folder into ``out``, with ``zoo.json``."""
    summary = read_json(Path(pretrained_dir) / "summary.json", "the summary of a `diffris pretrain-backbone` run")
    names = sorted(summary["checkpoints"], key=lambda n: summary["checkpoints"][n]["unet_steps"])

    def write(tmp: Path) -> None:
        files = {}
        for name in names:
            pack_checkpoint(Path(pretrained_dir) / name, tmp / f"{name}.safetensors")
            file = tmp / f"{name}.safetensors"
            files[name] = {"sha256": sha256sum(file), "bytes": file.stat().st_size}
        manifest = {
            "run": summary["run"],
            "dtype": "float16",
            "files": files,
            "made_by": f"diffris pretrain-backbone --run {summary['run']}; diffris pack-zoo",
            "cpu": cpu_model(),
        }
        (tmp / "zoo.json").write_text(json.dumps(manifest, indent=2) + "\n")

    return atomic_folder(Path(out), write, "pack-zoo", [pretrained_dir])


def pin_lines(out: Path) -> list[str]:
    """The params.yaml ``backbones`` lines that ship a packed zoo from ``zoo/``."""
    manifest = read_json(Path(out) / "zoo.json", "the manifest `diffris pack-zoo` writes")
    return [
        f"  {name}: {{pretrained: {manifest['run']}, zoo: {{file: zoo/{name}.safetensors, sha256: {f['sha256']}}}}}"
        for name, f in manifest["files"].items()
    ]


# --- fetch-weights from the zoo -----------------------------------------------------------------


def zoo_file(name: str, entry: dict, root: Path) -> Path:
    """The zoo file of backbone ``name``, checked against its params.yaml sha256."""
    zoo = entry["zoo"]
    path = Path(root) / zoo["file"]
    if not path.is_file():
        raise FetchError(f"{path}: missing; backbones.{name}.zoo.file names no file (is the checkout complete?)")
    got = sha256sum(path)
    if got != zoo["sha256"]:
        raise FetchError(
            f"{path}: sha256 {got} does not match backbones.{name}.zoo.sha256 {zoo['sha256']}; "
            "the file is damaged or not the one params.yaml pins"
        )
    return path


def write_zoo_backbone(name: str, entry: dict, root: Path, out: Path) -> Path:
    """The diffusers folder of a zoo backbone (float32 weights), after its checksum is checked."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors import safe_open
    from safetensors.torch import load_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffris.models.tokenizer import write_tokenizer
    from diffris.models.weights import write_info

    path = zoo_file(name, entry, root)
    with safe_open(path, framework="pt") as f:
        configs = json.loads((f.metadata() or {})[META_KEY])
    info = configs["backbone"]
    if info.get("name") != name or info.get("pretraining", {}).get("run") != entry["pretrained"]:
        raise ConfigError(
            f"{path}: holds {info.get('name')!r} of run {info.get('pretraining', {}).get('run')!r}, "
            f"expected {name!r} of run {entry['pretrained']!r}"
        )
    tensors = load_file(path)
    models = {
        "unet": UNet2DConditionModel.from_config(configs["unet"]),
        "vae": AutoencoderKL.from_config(configs["vae"]),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_dict(configs["text_encoder"])),
    }
    for component, model in models.items():
        prefix = f"{component}."
        state = {k[len(prefix) :]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith(prefix)}
        model.load_state_dict(state, strict=True)

    def write(tmp: Path) -> None:
        for component, model in models.items():
            model.save_pretrained(tmp / component)
        DDPMScheduler.from_config(configs["scheduler"]).save_pretrained(tmp / "scheduler")
        write_tokenizer(tmp / "tokenizer", models["text_encoder"].config.max_position_embeddings)
        write_info(tmp, {**info, "source": "zoo", "zoo": {"file": entry["zoo"]["file"], "sha256": entry["zoo"]["sha256"]}})

    return atomic_folder(Path(out), write, "fetch-weights")
