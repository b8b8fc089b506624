"""params.yaml validation: a typo is an error naming the key."""

from __future__ import annotations

import pytest
import yaml

from diffris.config import load_params, scale_params
from diffris.errors import ConfigError

from conftest import run_cli


def _write(tmp_path, mutate):
    params = yaml.safe_load(open("params.yaml"))
    mutate(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_repository_params_are_valid():
    params = load_params()
    assert scale_params(params)["data_source"] in ("synthetic", "real")
    assert params["datasets"]["rrsisd"]["paper_splits"] == {"train": 12181, "val": 1740, "test": 3481}
    assert params["datasets"]["refsegrs"]["paper_splits"] == {"train": 2172, "val": 431, "test": 1817}
    assert params["datasets"]["risbench"]["paper_splits"] == {"train": 26300, "val": 10013, "test": 16159}


def test_typo_in_a_key_is_named(tmp_path):
    path = _write(tmp_path, lambda p: p["scales"]["mini"].update(imag_size=64))
    with pytest.raises(ConfigError, match=r"scales\.mini: unknown key\(s\) 'imag_size'"):
        load_params(path)


def test_wrong_value_is_named(tmp_path):
    path = _write(tmp_path, lambda p: p["scales"]["mini"].update(data_source="synthetc"))
    with pytest.raises(ConfigError, match=r"scales\.mini\.data_source: 'synthetc' is not one of"):
        load_params(path)


def test_unknown_scale_and_bad_checksum_are_named(tmp_path):
    with pytest.raises(ConfigError, match="scale: 'huge' is not one of the scales"):
        load_params(_write(tmp_path, lambda p: p.update(scale="huge")))
    bad = _write(tmp_path, lambda p: p["datasets"]["refsegrs"]["obtain"].update(sha256="abc"))
    with pytest.raises(ConfigError, match=r"datasets\.refsegrs\.obtain\.sha256"):
        load_params(bad)


def test_cli_reports_config_errors_in_one_line(tmp_path):
    path = _write(tmp_path, lambda p: p.pop("seed"))
    proc = run_cli("fetch", "--dataset", "rrsisd", "--out", tmp_path / "x", "--params", path, check=False)
    assert proc.returncode == 2 and "'seed' is a required property" in proc.stderr
    assert "Traceback" not in proc.stderr
