"""Getting a backbone's weights: the folders ``diffris fetch-weights`` writes and ``backbone.json``.

A backbone folder holds the diffusers layout (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``) plus ``backbone.json`` naming it. It is written from a Hub snapshot at a pinned
revision, from a seeded generator with no network (the tiny backbones, SD 1.x's architecture with
random weights) or copied from a ``diffris pretrain-backbone`` checkpoint; all of them load
through the same ``from_pretrained(local_folder)`` calls (``diffris.models.backbone``).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from diffris.errors import ConfigError, DiffrisError, FetchError
from diffris.fileio import atomic_folder, sha256sum
from diffris.models.architecture import sd1_random_architecture, tiny_architecture, tiny_spec
from diffris.models.config import from_dict
from diffris.models.tokenizer import write_tokenizer

INFO_FILE = "backbone.json"
COMMIT = re.compile(r"[0-9a-f]{40}")
WEIGHT_FILES = {  # preferred first; fp16/EMA variants are never picked
    "unet": ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"),
    "vae": ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
    "text_encoder": ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
}


@dataclass(frozen=True)
class RandomSD1Spec:
    seed: int


def write_tiny_backbone(name: str, entry: dict, out: Path) -> Path:
    """Generate a tiny backbone with seeded random weights; no network."""
    spec = tiny_spec(entry, name)
    torch.manual_seed(spec.seed)
    unet, vae, text_encoder = tiny_architecture(spec).instantiate()
    info = {"name": name, "source": "generated", "revision": f"generated (seed {spec.seed})", "tiny": asdict(spec)}

    def write(tmp: Path) -> None:
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp / "text_encoder")
        write_tokenizer(tmp / "tokenizer", spec.max_length)
        write_info(tmp, info)

    return atomic_folder(out, write, "fetch-weights")


def write_sd1_random_backbone(name: str, entry: dict, out: Path) -> Path:
    """SD 1.x's architecture with seeded random weights (about 4 GB in fp32); no network."""
    seed = from_dict(RandomSD1Spec, entry["sd1_random"], f"backbones.{name}.sd1_random").seed
    torch.manual_seed(seed)
    unet, vae, text_encoder = sd1_random_architecture().instantiate()
    info = {"name": name, "source": "generated", "revision": f"generated SD 1.x architecture (seed {seed})"}

    def write(tmp: Path) -> None:
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp / "text_encoder")
        write_tokenizer(tmp / "tokenizer", text_encoder.config.max_position_embeddings)
        write_info(tmp, info)

    return atomic_folder(out, write, "fetch-weights")


def copy_pretrained_backbone(name: str, entry: dict, pretrained_dir: Path, out: Path) -> Path:
    """The checkpoint ``name`` of a ``diffris pretrain-backbone`` output folder, copied to ``out``."""
    source = Path(pretrained_dir) / name
    info = read_info(source)
    if info["name"] != name or info.get("pretraining", {}).get("run") != entry["pretrained"]:
        raise ConfigError(
            f"{source / INFO_FILE}: holds {info['name']!r} of run {info.get('pretraining', {}).get('run')!r}, "
            f"expected {name!r} of run {entry['pretrained']!r}; rerun `diffris pretrain-backbone`"
        )

    def copy(tmp: Path) -> None:
        shutil.copytree(source, tmp, dirs_exist_ok=True)

    return atomic_folder(out, copy, "fetch-weights", [pretrained_dir])


def select_hub_files(files: list[str]) -> list[str]:
    """The files of a diffusers SD repo that the backbone needs: configs, one full-precision
    weight file per network (safetensors preferred) and the tokenizer."""
    present = set(files)
    chosen = [f"{c}/config.json" for c in WEIGHT_FILES]
    for component, candidates in WEIGHT_FILES.items():
        found = [f for f in candidates if f in present]
        if not found:
            raise FetchError(f"the repository has none of {', '.join(candidates)}")
        chosen.append(found[0])
    chosen += sorted(f for f in present if f.startswith("tokenizer/"))
    missing = [f for f in chosen if f not in present]
    if missing or not any(f.startswith("tokenizer/") for f in chosen):
        raise FetchError(f"the repository lacks {', '.join(missing) or 'tokenizer/'}")
    return chosen


@dataclass(frozen=True)
class HubSnapshot:
    """A Hub repository at one commit, and the files it holds there."""

    repo_id: str
    requested: str  # the revision asked for: a commit, or a branch or tag that resolved to `commit`
    commit: str
    files: list[str]
    cached: Path | None = None  # its snapshot folder in the local Hugging Face cache (offline); None: download


def resolve_hub_revision(repo_id: str, revision: str) -> HubSnapshot:
    """Resolve ``revision`` once to a commit and list the files there: on the Hub, or, offline
    (``HF_HUB_OFFLINE=1``), in the local Hugging Face cache, whose ``refs/<branch>`` names the commit."""
    from huggingface_hub import HfApi, constants, snapshot_download

    try:
        if constants.HF_HUB_OFFLINE:
            folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
            files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
            snapshot = HubSnapshot(repo_id, revision, folder.name, files, folder)
        else:
            info = HfApi().model_info(repo_id, revision=revision)
            snapshot = HubSnapshot(repo_id, revision, info.sha or "", [s.rfilename for s in info.siblings or []])
    except Exception as err:  # huggingface_hub raises HTTP, OS and offline errors alike
        where = "in the local Hugging Face cache" if constants.HF_HUB_OFFLINE else "on the Hub"
        raise FetchError(f"{repo_id}: cannot resolve revision {revision!r} {where} ({type(err).__name__}: {_one_line(err)})") from None
    if not COMMIT.fullmatch(snapshot.commit):
        raise FetchError(f"{repo_id}: revision {revision!r} resolved to {snapshot.commit!r}, not a 40-hex commit")
    return snapshot


def download_snapshot(snapshot: HubSnapshot, files: list[str], folder: Path) -> None:
    """Put ``files`` of the snapshot's commit into ``folder``: downloaded, or copied from the cache."""
    from huggingface_hub import snapshot_download

    if snapshot.cached is None:
        snapshot_download(snapshot.repo_id, revision=snapshot.commit, allow_patterns=files, local_dir=folder)
        return
    for file in files:
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(snapshot.cached / file, folder / file)


def fetch_hub_backbone(name: str, entry: dict, out: Path, revision: str | None = None) -> Path:
    """Download the needed folders of a Hub repository at its pinned revision, or at ``revision``
    (a commit, or a branch resolved once to a commit; ``backbone.json`` records both)."""
    repo_id, requested = entry["repo_id"], revision or entry.get("revision")
    if not requested:
        raise ConfigError(
            f"backbones.{name}: no pinned revision for {repo_id}; run `diffris fetch-weights --backbone {name} "
            "--revision main --out DIR` to resolve the branch to a commit, then pin that commit in params.yaml"
        )
    snapshot = resolve_hub_revision(repo_id, requested)
    where = f"{repo_id}@{snapshot.commit}"

    def write(tmp: Path) -> None:
        try:
            files = select_hub_files(snapshot.files)
            download_snapshot(snapshot, files, tmp)
        except FetchError as err:
            raise FetchError(f"{where}: {err}") from None
        except Exception as err:  # huggingface_hub raises HTTP, OS and offline errors alike
            raise FetchError(
                f"{where}: download failed ({type(err).__name__}: {_one_line(err)}). On a machine "
                f"with Hub access run `diffris fetch-weights --backbone {name} --out DIR` and copy DIR here"
            ) from None
        info = {"name": name, "source": "hub", "repo_id": repo_id, "revision": snapshot.commit}
        if requested != snapshot.commit:
            info["requested_revision"] = requested
        write_info(tmp, {**info, "files": {f: sha256sum(tmp / f) for f in files}})

    return atomic_folder(out, write, "fetch-weights")


def hub_record(info: dict) -> dict | None:
    """What results record of a Hub backbone (its ``backbone.json``): repository and commit, and
    the branch it was resolved from; None for a generated or pretrained backbone."""
    if info.get("source") != "hub":
        return None
    return {key: info[key] for key in ("repo_id", "revision", "requested_revision") if key in info}


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def write_info(folder: Path, info: dict) -> None:
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_info(path: Path) -> dict:
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise DiffrisError(f"{info_path}: missing; is {path} a folder written by `diffris fetch-weights`?")
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as err:
        raise DiffrisError(f"{info_path}: not valid JSON ({err})") from None
    for key in ("name", "revision"):
        if key not in info:
            raise DiffrisError(f"{info_path}: no {key!r} field")
    for component in ("unet", "vae", "text_encoder", "tokenizer"):
        if not (path / component).is_dir():
            raise DiffrisError(f"{path / component}: missing (expected the diffusers layout)")
    return info

