"""The frozen Stable Diffusion backbone: VAE encoder, CLIP text encoder and a UNet with feature taps.

A backbone is a folder in the diffusers layout (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``) plus ``backbone.json`` naming it. ``fetch-weights`` writes it either from a Hub
snapshot at a pinned revision or, for the tiny backbones, from a seeded generator with no network;
both load through the same ``from_pretrained(local_folder)`` calls.

Feature taps follow VPD (research notes §1.2, §6.1): the outputs of ``up_blocks[3]`` (= LDM
output block 11), ``up_blocks[2].attentions[1]`` (block 7), ``up_blocks[1].attentions[1]``
(block 4) and ``up_blocks[0].resnets[1]`` (block 1), i.e. the middle of each decoder level
before its upsampler, at image strides 8/16/32/64 with SD 1.x channels 320/640/1280/1280.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from diffris.errors import ConfigError, DiffrisError, FetchError
from diffris.fileio import atomic_folder, sha256sum
from diffris.models.config import from_dict
from diffris.models.tokenizer import BOS, EOS, build_vocab, write_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # only fetch-weights (via the CLI) turns the Hub on

INFO_FILE = "backbone.json"
WEIGHT_FILES = {  # preferred first; fp16/EMA variants are never picked
    "unet": ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"),
    "vae": ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
    "text_encoder": ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
}
CROSS_ATTN_DOWN, DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
CROSS_ATTN_UP, UP = "CrossAttnUpBlock2D", "UpBlock2D"


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a generated tiny backbone (``backbones.<name>.tiny`` in params.yaml)."""

    seed: int
    unet_channels: tuple[int, ...]  # four levels, SD's block types
    unet_layers_per_block: int
    unet_heads: int
    vae_channels: tuple[int, ...]  # four levels -> factor-8 latent
    vae_layers_per_block: int
    norm_groups: int
    text_width: int
    text_layers: int
    text_heads: int
    text_ffn: int
    max_length: int  # CLIP position embeddings and tokenizer model_max_length


@dataclass(frozen=True)
class Architecture:
    """Constructor arguments of the three networks; enough to build them with random weights."""

    unet: dict
    vae: dict
    text: dict

    def instantiate(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        return UNet2DConditionModel(**self.unet), AutoencoderKL(**self.vae), CLIPTextModel(CLIPTextConfig(**self.text))

    @classmethod
    def from_folder(cls, path: Path) -> Architecture:
        """The architecture recorded in a backbone folder's config files."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig

        text = CLIPTextConfig.from_pretrained(path / "text_encoder").to_dict()
        return cls(
            unet=dict(UNet2DConditionModel.load_config(path / "unet")),
            vae=dict(AutoencoderKL.load_config(path / "vae")),
            text={k: v for k, v in text.items() if not k.startswith("_")},
        )


def unet_arguments(channels: tuple[int, ...], layers: int, heads: int, context: int, groups: int) -> dict:
    """UNet2DConditionModel arguments with SD 1.x block types (four levels)."""
    return {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": tuple(channels),
        "layers_per_block": layers,
        "down_block_types": (CROSS_ATTN_DOWN,) * 3 + (DOWN,),
        "up_block_types": (UP,) + (CROSS_ATTN_UP,) * 3,
        "cross_attention_dim": context,
        "attention_head_dim": heads,  # in SD 1.x configs this field is the number of heads
        "norm_num_groups": groups,
    }


def vae_arguments(channels: tuple[int, ...], layers: int, groups: int) -> dict:
    """AutoencoderKL arguments: len(channels) levels, downsampling 2^(levels-1)."""
    levels = len(channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": tuple(channels),
        "layers_per_block": layers,
        "latent_channels": 4,
        "norm_num_groups": groups,
        "scaling_factor": 0.18215,
    }


def sd1_architecture() -> Architecture:
    """Stable Diffusion 1.x (v1-1 ... v1-5 share it) with CLIP ViT-L/14's text encoder."""
    return Architecture(
        unet={**unet_arguments((320, 640, 1280, 1280), 2, 8, 768, 32), "sample_size": 64},
        vae={**vae_arguments((128, 256, 512, 512), 2, 32), "sample_size": 512},
        text={
            "vocab_size": 49408,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "hidden_act": "quick_gelu",
            "projection_dim": 768,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        },
    )


def tiny_architecture(spec: TinySpec) -> Architecture:
    vocab, _ = build_vocab()
    if len(spec.unet_channels) != 4 or len(spec.vae_channels) != 4:
        raise ConfigError("tiny backbones keep SD's four UNet and four VAE levels")
    return Architecture(
        unet=unet_arguments(
            spec.unet_channels, spec.unet_layers_per_block, spec.unet_heads, spec.text_width, spec.norm_groups
        ),
        vae=vae_arguments(spec.vae_channels, spec.vae_layers_per_block, spec.norm_groups),
        text={
            "vocab_size": len(vocab),
            "hidden_size": spec.text_width,
            "intermediate_size": spec.text_ffn,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "max_position_embeddings": spec.max_length,
            "hidden_act": "quick_gelu",
            "projection_dim": spec.text_width,
            "bos_token_id": vocab[BOS],
            "eos_token_id": vocab[EOS],
            "pad_token_id": vocab[EOS],
        },
    )


@dataclass(frozen=True)
class RandomSD1Spec:
    seed: int


def tiny_spec(entry: dict, name: str) -> TinySpec:
    return from_dict(TinySpec, entry["tiny"], f"backbones.{name}.tiny")


def sd1_random_architecture() -> Architecture:
    """SD 1.x's architecture with the tiny backbones' tokenizer vocabulary (77 positions): the
    random-weight control at the paper scale, generated without any download."""
    vocab, _ = build_vocab()
    sd1 = sd1_architecture()
    ids = {"vocab_size": len(vocab), "bos_token_id": vocab[BOS], "eos_token_id": vocab[EOS], "pad_token_id": vocab[EOS]}
    return Architecture(sd1.unet, sd1.vae, {**sd1.text, **ids})


def architecture_of(entry: dict, name: str, params: dict | None = None) -> Architecture:
    """The architecture a params.yaml backbone entry stands for (no weights needed); a
    ``pretrained`` entry needs ``backbones`` and ``pretraining`` (i.e. params) to find its sizes."""
    if "tiny" in entry:
        return tiny_architecture(tiny_spec(entry, name))
    if "sd1_random" in entry:
        return sd1_random_architecture()
    if "pretrained" in entry:
        if params is None:
            raise ConfigError(f"backbones.{name}: a pretrained backbone's architecture needs params.yaml")
        from diffris.models.pretrain import pretrain_run

        return tiny_architecture(pretrain_run(params, entry["pretrained"]).tiny)
    return sd1_architecture()


# --- writing backbone folders ---------------------------------------------------------------


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
        _write_info(tmp, info)

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
        _write_info(tmp, info)

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


def fetch_hub_backbone(name: str, entry: dict, out: Path, revision: str | None = None) -> Path:
    """Download the needed folders of a Hub repository at its pinned revision."""
    from huggingface_hub import HfApi, snapshot_download

    repo_id, revision = entry["repo_id"], revision or entry.get("revision")
    if not revision:
        raise ConfigError(
            f"backbones.{name}: no pinned revision for {repo_id}; add its 40-hex commit "
            f"(huggingface.co/{repo_id}/commits/main) to params.yaml or pass --revision"
        )

    def write(tmp: Path) -> None:
        try:
            files = select_hub_files(HfApi().list_repo_files(repo_id, revision=revision))
            snapshot_download(repo_id, revision=revision, allow_patterns=files, local_dir=tmp)
        except FetchError as err:
            raise FetchError(f"{repo_id}@{revision}: {err}") from None
        except Exception as err:  # huggingface_hub raises HTTP, OS and offline errors alike
            raise FetchError(
                f"{repo_id}@{revision}: download failed ({type(err).__name__}: {err}). On a machine "
                f"with Hub access run `diffris fetch-weights --backbone {name} --out DIR` and copy DIR here"
            ) from None
        digests = {f: sha256sum(tmp / f) for f in files}
        _write_info(tmp, {"name": name, "source": "hub", "repo_id": repo_id, "revision": revision, "files": digests})

    return atomic_folder(out, write, "fetch-weights")


def _write_info(folder: Path, info: dict) -> None:
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


# --- the frozen backbone module -------------------------------------------------------------


class FrozenBackbone(nn.Module):
    """VAE, CLIP text encoder and UNet, frozen and always in eval mode.

    Gradients still flow *through* the UNet into its ``encoder_hidden_states`` (the CP-adapter's
    output); no backbone parameter ever receives one.
    """

    def __init__(self, unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, tokenizer, name: str, revision: str):
        super().__init__()
        self.unet, self.vae, self.text_encoder = unet, vae, text_encoder
        self.tokenizer = tokenizer
        self.name, self.revision = name, revision
        self.requires_grad_(False)
        self.eval()
        self._taps: dict[int, Tensor] = {}
        for level, module in enumerate(tap_modules(unet)):
            module.register_forward_hook(self._make_hook(level))
        self._sha256: str | None = None
        self._component_sha256: dict[str, str] = {}
        self.tokenizer_dir: Path | None = None  # set by from_folder; its files are part of text_sha256
        self.memory_format = torch.contiguous_format  # of the latents; use_fast_paths may switch it

    @classmethod
    def from_folder(cls, path: str | Path, expected_name: str | None = None) -> FrozenBackbone:
        """Load a folder written by ``fetch-weights``; ``expected_name`` guards against mix-ups."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        path = Path(path)
        info = read_info(path)
        if expected_name and info.get("name") != expected_name:
            raise ConfigError(f"{path / INFO_FILE}: holds backbone {info.get('name')!r}, expected {expected_name!r}")
        backbone = cls(
            UNet2DConditionModel.from_pretrained(path / "unet"),
            AutoencoderKL.from_pretrained(path / "vae"),
            CLIPTextModel.from_pretrained(path / "text_encoder"),
            CLIPTokenizer.from_pretrained(path / "tokenizer"),
            name=info["name"],
            revision=info["revision"],
        )
        backbone.tokenizer_dir = path / "tokenizer"
        return backbone

    @classmethod
    def from_architecture(cls, arch: Architecture, name: str, tokenizer=None) -> FrozenBackbone:
        """Random weights (on torch's current default device; use ``torch.device('meta')`` to count)."""
        unet, vae, text_encoder = arch.instantiate()
        return cls(unet, vae, text_encoder, tokenizer, name=name, revision="random")

    def train(self, mode: bool = True) -> FrozenBackbone:
        return super().train(False)

    @property
    def text_dim(self) -> int:
        return self.text_encoder.config.hidden_size

    @property
    def max_text_length(self) -> int:
        return self.text_encoder.config.max_position_embeddings

    @property
    def tap_channels(self) -> tuple[int, int, int, int]:
        """Channels of the taps c1..c4 (SD 1.x: 320, 640, 1280, 1280)."""
        return tuple(self.unet.config.block_out_channels)

    @torch.no_grad()
    def encode_text(self, input_ids: Tensor) -> Tensor:
        """CLIP ``last_hidden_state`` [B, T, D]; like SD, the pad tokens are not masked out."""
        return self.text_encoder(input_ids).last_hidden_state

    @torch.no_grad()
    def encode_image(self, pixel_values: Tensor, scaled: bool) -> Tensor:
        """Posterior mode of the VAE (no sampling), times the scaling factor if ``scaled``.

        The mode is a view into the VAE's moments; it is laid out densely in ``memory_format``
        so that the UNet sees the same strides as for latents read from a feature cache."""
        latents = self.vae.encode(pixel_values).latent_dist.mode().contiguous(memory_format=self.memory_format)
        return latents * self.vae.config.scaling_factor if scaled else latents

    def unet_features(self, latents: Tensor, timestep: int, text: Tensor) -> list[Tensor]:
        """One noise-free UNet pass conditioned on ``text``; returns the taps c1..c4 (high-res first)."""
        steps = torch.full((latents.shape[0],), timestep, dtype=torch.long, device=latents.device)
        self._taps.clear()
        self.unet(latents, steps, encoder_hidden_states=text, return_dict=False)
        return [self._taps.pop(level) for level in range(4)]

    def weights_sha256(self) -> str:
        """sha256 over the three networks' state dicts (names, dtypes, shapes and bytes); cached."""
        if self._sha256 is None:
            self._sha256 = state_dict_sha256(
                {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}
            )
        return self._sha256

    def component_sha256(self, component: str) -> str:
        """sha256 of one network's state dict (``vae``, ``text_encoder`` or ``unet``); cached."""
        if component not in self._component_sha256:
            self._component_sha256[component] = state_dict_sha256({component: getattr(self, component)})
        return self._component_sha256[component]

    def text_sha256(self) -> str:
        """What CLIP features depend on: the text encoder's weights and the tokenizer's files."""
        if self.tokenizer_dir is None:
            raise DiffrisError(f"backbone {self.name}: no tokenizer folder, so its text features cannot be identified")
        digest = hashlib.sha256(self.component_sha256("text_encoder").encode())
        for file in sorted(p for p in self.tokenizer_dir.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(self.tokenizer_dir)}:{sha256sum(file)}\n".encode())
        return digest.hexdigest()

    def use_fast_paths(self, channels_last: bool, gradient_checkpointing: bool, compile_unet: bool) -> None:
        """Speed and memory options that leave the maths unchanged (``scales.<scale>.train``):
        channels-last convolutions, activation checkpointing inside the UNet (its backward,
        which the CP-adapter's gradient needs, then recomputes activations) and ``torch.compile``
        of the UNet. Attention already runs through PyTorch SDPA (diffusers' AttnProcessor2_0,
        transformers' ``sdpa``)."""
        if channels_last:
            self.memory_format = torch.channels_last
            self.unet.to(memory_format=torch.channels_last)
            self.vae.to(memory_format=torch.channels_last)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if compile_unet:
            self.unet.compile()

    def _make_hook(self, level: int):
        def hook(module: nn.Module, inputs, output) -> None:
            self._taps[level] = output[0] if isinstance(output, tuple) else output

        return hook


def tap_modules(unet: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are c1..c4 (VPD's output blocks 11, 7, 4, 1)."""
    types = tuple(type(b).__name__ for b in unet.up_blocks)
    if types != (UP, CROSS_ATTN_UP, CROSS_ATTN_UP, CROSS_ATTN_UP) or len(unet.up_blocks[0].resnets) < 2:
        raise DiffrisError(f"the UNet's up blocks {types} are not Stable Diffusion 1.x-shaped")
    up = unet.up_blocks
    return [up[3], up[2].attentions[1], up[1].attentions[1], up[0].resnets[1]]


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


def state_dict_sha256(modules: dict[str, nn.Module]) -> str:
    digest = hashlib.sha256()
    for prefix, module in modules.items():
        for key, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{prefix}.{key}:{flat.dtype}:{tuple(tensor.shape)}\n".encode())
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()
