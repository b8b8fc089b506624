"""Feature caches on bad input: a torn cache.json or array, or an array swapped in from other
data with the same shape, is refused in one line naming the file (diffris.features)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from diffris.features.checks import CACHE_FILE, FeatureCacheError, read_cache_info
from diffris.features.datasets import FeatureSplit

from conftest import run_cli
from test_features import cache  # noqa: F401  (the session's cache of the shared assets)
from test_train import ENV, shared_assets


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


@pytest.fixture
def cache_copy(cache, tmp_path):  # noqa: F811
    target = tmp_path / "features"
    shutil.copytree(cache, target)
    return target


def test_cache_json_records_every_array(cache):  # noqa: F811
    info = read_cache_info(cache)
    for split, arrays in info["arrays"].items():
        assert set(arrays) == {p.stem for p in (cache / split).glob("*.npy")}
        assert all(len(record["sha256"]) == 64 and record["shape"] for record in arrays.values())


def test_torn_cache_json_is_named(cache_copy, assets):
    path = cache_copy / CACHE_FILE
    path.write_text(path.read_text()[:100])
    with pytest.raises(FeatureCacheError, match=r"cache\.json: not valid JSON .*torn, rebuild it"):
        read_cache_info(cache_copy)
    args = [
        "train", "--experiment", "full", "--dataset", "refsegrs", "--data", assets.data, "--backbone-dir",
        assets.backbone, "--features", cache_copy, "--out", cache_copy.parent / "run", "--params", assets.params,
    ]  # fmt: skip
    proc = run_cli(*args, check=False, env=ENV)
    assert proc.returncode == 2 and "cache.json: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert not (cache_copy.parent / "run").exists()


def test_torn_array_is_named(cache_copy, assets):
    path = cache_copy / "val" / "latents.npy"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FeatureCacheError, match=r"val/latents\.npy: not a readable \.npy file"):
        FeatureSplit(cache_copy, "val", assets.data, taps=False)


def test_array_of_other_data_with_the_same_shape_is_refused(cache_copy, assets):
    path = cache_copy / "val" / "text.npy"
    other = np.load(cache_copy / "test" / "text.npy")  # another split's features: same shape here
    assert other.shape == np.load(path).shape
    np.save(path, other)
    with pytest.raises(FeatureCacheError, match=r"val/text\.npy: not the array .*cache\.json records"):
        FeatureSplit(cache_copy, "val", assets.data, taps=False)
    FeatureSplit(cache_copy, "test", assets.data, taps=False)  # the untouched split still opens


def test_cache_without_array_records_is_refused(cache_copy, assets):
    info = json.loads((cache_copy / CACHE_FILE).read_text())
    info["format"] = 1
    (cache_copy / CACHE_FILE).write_text(json.dumps(info))
    with pytest.raises(FeatureCacheError, match="format 1 / dtype float32, expected 2 / float32; rebuild it"):
        read_cache_info(cache_copy)
