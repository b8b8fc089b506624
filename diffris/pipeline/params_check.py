"""The checks the Snakefile runs on its config when it is parsed (they need the model configs,
which build on ``diffris.config``)."""

from __future__ import annotations

import sys

from diffris.config import check_references, read_yaml
from diffris.errors import ConfigError
from diffris.models.config import config_from_params


def check_workflow_config(config: dict, configfiles: list[str]) -> None:
    """The Snakefile's check, when it is parsed: duplicate keys in its config files, then the
    cross-references, by the same code as the CLI. Exits with one line naming the key path."""
    try:
        for path in configfiles:
            read_yaml(path)
        check_references(config, " + ".join(map(str, configfiles)) or "config")
        check_experiments(config, config["scale"])
    except ConfigError as err:
        sys.exit(f"diffris: error: {err}")


def check_experiments(params: dict, scale: str) -> None:
    """Build every experiment's model config at ``scale`` as the CLI does, so that no Snakemake
    input function meets a config error later (Snakemake would plan around it, not stop)."""
    for name in params["experiments"]:
        try:
            config_from_params(params, name, scale)
        except ConfigError as err:
            raise ConfigError(f"experiments.{name} at scale {scale}: {err}") from None
