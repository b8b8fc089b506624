"""Typed model configuration, merged from params.yaml.

``params.yaml`` holds the full DiffRIS model under ``model``, per-scale size overrides under
``scales.<scale>.model`` and one override set per experiment under ``experiments.<name>``. The
experiment names a Stable Diffusion release (``backbone: sd-1-4``); the scale maps it to a concrete
backbone (``tiny-sd-1-4`` or ``sd-1-4``) listed under ``backbones``. Nothing here branches on a
scale's name.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Literal

from diffris.config import scale_params
from diffris.errors import ConfigError

DECODERS = ("lmp", "oad", "camd", "pcmrd")


@dataclass(frozen=True)
class CPAdapterConfig:
    """Context perception adapter (Eqs. 7-13); the three switches give Table 4's rows."""

    global_context: bool
    object_aware: bool
    domain_adjust: bool
    num_layers: int  # Transformer encoder layers (Eq. 7)
    num_heads: int
    ffn_ratio: float  # encoder feed-forward width / D_l
    projection_ratio: float  # hidden width of Eq. 11's two-layer projection / D_l
    lora_rank: int  # rank of W_LLM (Eq. 12)
    alpha_init: float  # initial fusion weight alpha (Eq. 13)

    @property
    def enabled(self) -> bool:
        return self.global_context or self.object_aware or self.domain_adjust


@dataclass(frozen=True)
class PCMRDConfig:
    """Progressive cross-modal reasoning decoder (Eqs. 14-20); switches give Table 6's rows."""

    multi_scale: bool
    query_tokens: bool
    hard_assign: bool
    num_queries: int  # M
    query_dim: int  # C_q
    mlp_ratio: float
    tau_init: float  # initial temperature of the Gumbel normalised attention
    tau_learnable: bool  # false: tau stays at tau_init (the temperature study, docs/studies.md)
    tau_min: float
    assign_norm: Literal["none", "layer", "centred"]  # before Eq. 16 (docs/model.md): as printed; LayerNorm of
    # tokens and pixels (GroupViT); or the pixels centred on their image's mean first, then LayerNorm
    gumbel_noise: Literal["paper", "logits"]  # Eq. 17 as printed, softmax((S+G)/tau), or softmax(S/tau+G)


@dataclass(frozen=True)
class LMPConfig:
    hidden_dim: int


@dataclass(frozen=True)
class OADConfig:
    hidden_dim: int
    max_angle: float  # degrees; the routing function predicts angles in [-max_angle, max_angle]
    route_dropout: float


@dataclass(frozen=True)
class CAMDConfig:
    dim: int
    num_layers: int
    num_heads: int
    num_points: int  # deformable sampling points per head and level
    num_prompts: int  # learnable visual prompts appended to the language tokens
    ffn_dim: int


@dataclass(frozen=True)
class LossConfig:
    class_weights: tuple[float, float]  # background, foreground
    ce_weight: float  # weight of the weighted cross-entropy (0: Dice alone)
    dice_weight: float


@dataclass(frozen=True)
class ModelConfig:
    """Everything ``build_model`` needs besides the backbone folder."""

    backbone: str  # concrete backbone (a key of params.yaml `backbones`)
    sd_version: str  # the Stable Diffusion release the experiment asked for
    text_max_length: int
    latent_scaling: bool  # multiply the VAE posterior mode by the VAE's scaling factor
    timestep: int
    feature_dim: int  # width of V1..V4 after the 2x lift
    cp_adapter: CPAdapterConfig
    decoder: Literal["lmp", "oad", "camd", "pcmrd"]
    pcmrd: PCMRDConfig
    lmp: LMPConfig
    oad: OADConfig
    camd: CAMDConfig
    loss: LossConfig


def config_from_params(params: dict, experiment: str, scale: str | None = None) -> ModelConfig:
    """Merge ``model`` <- ``scales.<scale>.model`` <- ``experiments.<experiment>`` and validate.

    An override key that the full model does not have is a ConfigError naming it.
    """
    for section in ("model", "experiments", "backbones"):
        if section not in params:
            raise ConfigError(f"params.yaml: no `{section}` section")
    experiments = params["experiments"]
    if experiment not in experiments:
        raise ConfigError(f"experiments.{experiment}: no such experiment (has: {', '.join(experiments)})")
    scale_name = scale or params["scale"]
    scale_cfg = scale_params(params, scale_name)
    merged = merge_overrides(params["model"], scale_cfg.get("model") or {}, f"scales.{scale_name}.model")
    merged = merge_overrides(merged, experiments[experiment] or {}, f"experiments.{experiment}")
    sd_version = merged.pop("backbone")
    merged["sd_version"] = sd_version
    merged["backbone"] = resolve_backbone(params, scale_name, sd_version)
    config = from_dict(ModelConfig, merged, "model")
    check_consistency(config)
    return config


# Keys added to `model` after run folders were first written, with the value that gives the
# behaviour those runs were trained with: a saved config without them still loads.
ADDED_KEYS = {("pcmrd", "tau_learnable"): True, ("loss", "ce_weight"): 1.0}


def saved_model_config(model: dict, where: str = "model") -> ModelConfig:
    """The ModelConfig of a run's saved ``model`` section (config.json), older ones included."""
    model = copy.deepcopy(model)
    for (section, key), value in ADDED_KEYS.items():
        if isinstance(model.get(section), dict):
            model[section].setdefault(key, value)
    return from_dict(ModelConfig, model, where)


def resolve_backbone(params: dict, scale: str, sd_version: str) -> str:
    """The concrete backbone that ``scale`` uses for the release ``sd_version``."""
    mapping = scale_params(params, scale).get("backbones") or {}
    if sd_version not in mapping:
        raise ConfigError(
            f"scales.{scale}.backbones: no backbone for {sd_version!r} (has: {', '.join(mapping) or 'none'})"
        )
    name = mapping[sd_version]
    if name not in params["backbones"]:
        raise ConfigError(f"scales.{scale}.backbones.{sd_version}: {name!r} is not listed under `backbones`")
    return name


def backbone_spec(params: dict, name: str) -> dict:
    """The params.yaml entry of one backbone: ``{repo_id, revision}`` or ``{tiny: {...}}``."""
    backbones = params.get("backbones") or {}
    if name not in backbones:
        raise ConfigError(f"backbone {name!r} is not one of: {', '.join(backbones) or 'none'}")
    return backbones[name]


def merge_overrides(base: dict, overrides: dict, where: str) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base``; unknown keys raise ConfigError."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        path = f"{where}.{key}"
        if key not in merged:
            raise ConfigError(f"{path}: unknown key (allowed: {', '.join(sorted(merged))})")
        if isinstance(merged[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping, got {value!r}")
            merged[key] = merge_overrides(merged[key], value, path)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking keys and value types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(names))})")
    missing = [n for n in names if n not in data]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r}")
    return cls(**{n: _coerce(hints[n], data[n], f"{where}.{n}") for n in names})


def _coerce(kind: Any, value: Any, where: str) -> Any:
    if is_dataclass(kind):
        return from_dict(kind, value, where)
    origin = typing.get_origin(kind)
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(typing.get_args(kind))}")
        return value
    if origin is tuple:
        args = typing.get_args(kind)
        if args[-1] is Ellipsis:  # tuple[int, ...]: any length
            args = (args[0],) * (len(value) if isinstance(value, (list, tuple)) else 0)
        if not isinstance(value, (list, tuple)) or len(value) != len(args) or not args:
            raise ConfigError(f"{where}: expected a list of {len(args) or 'some'} values, got {value!r}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"{where}: union types are not supported in model configs")
    return _scalar(kind, value, where)


def _scalar(kind: type, value: Any, where: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[kind]
    if not ok:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return kind(value)


def check_consistency(config: ModelConfig) -> None:
    """Combinations the types cannot express."""
    p = config.pcmrd
    if p.hard_assign and not p.query_tokens:
        raise ConfigError("pcmrd.hard_assign needs pcmrd.query_tokens (pixels are assigned to the tokens)")
    positive = {
        "text_max_length": config.text_max_length,
        "feature_dim": config.feature_dim,
        "pcmrd.num_queries": p.num_queries,
        "pcmrd.query_dim": p.query_dim,
        "cp_adapter.lora_rank": config.cp_adapter.lora_rank,
        "camd.num_layers": config.camd.num_layers,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
    if not 0 < p.tau_min <= p.tau_init:
        raise ConfigError(f"pcmrd: need 0 < tau_min <= tau_init, got {p.tau_min} and {p.tau_init}")
    if config.loss.ce_weight == 0 and config.loss.dice_weight == 0:
        raise ConfigError("loss: ce_weight and dice_weight are both 0; the model would learn nothing")
    if config.timestep < 0:
        raise ConfigError(f"timestep: must be >= 0, got {config.timestep}")
