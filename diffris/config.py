"""params.yaml -> validated configuration.

The same JSON schema (``workflow/schemas/params.schema.yaml``) validates params.yaml here and in
Snakemake's ``validate()``. Errors name the offending key path, e.g. ``scales.mini.image_size``.
"""

from __future__ import annotations

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


def load_params(path: str | Path | None = None) -> dict:
    """Read and validate params.yaml; ``scale`` must name an entry of ``scales``."""
    path = Path(path) if path else DEFAULT_PARAMS
    try:
        with open(path) as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    validate_params(params, str(path))
    if params["scale"] not in params["scales"]:
        raise ConfigError(
            f"{path}: scale: {params['scale']!r} is not one of the scales "
            f"({', '.join(params['scales'])})"
        )
    return params


def scale_params(params: dict, scale: str | None = None) -> dict:
    """The settings of one scale (the configured one by default)."""
    scale = scale or params["scale"]
    try:
        return params["scales"][scale]
    except KeyError:
        raise ConfigError(f"scale {scale!r} is not one of {', '.join(params['scales'])}") from None
