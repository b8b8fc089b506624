"""The frozen Stable Diffusion backbone: VAE encoder, CLIP text encoder and a UNet with feature taps.

It loads a backbone folder written by ``fetch-weights`` (``diffris.models.weights``) through
``from_pretrained(local_folder)``, or builds an ``Architecture`` with random weights
(``diffris.models.architecture``).

Feature taps follow VPD (research notes §1.2, §6.1): the outputs of ``up_blocks[3]`` (= LDM
output block 11), ``up_blocks[2].attentions[1]`` (block 7), ``up_blocks[1].attentions[1]``
(block 4) and ``up_blocks[0].resnets[1]`` (block 1), i.e. the middle of each decoder level
before its upsampler, at image strides 8/16/32/64 with SD 1.x channels 320/640/1280/1280.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor, nn

from diffris.errors import ConfigError, DiffrisError
from diffris.fileio import sha256sum
from diffris.models.architecture import CROSS_ATTN_UP, UP, Architecture
from diffris.models.weights import INFO_FILE, hub_record, read_info


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
        self.hub: dict | None = None  # set by from_folder for a Hub snapshot: repository and commit
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
        backbone.hub = hub_record(info)
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


def state_dict_sha256(modules: dict[str, nn.Module]) -> str:
    digest = hashlib.sha256()
    for prefix, module in modules.items():
        for key, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{prefix}.{key}:{flat.dtype}:{tuple(tensor.shape)}\n".encode())
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()
