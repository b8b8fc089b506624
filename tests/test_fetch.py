"""Real-source fetching without a network: refusals, instructions, checksum and extraction."""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from dataclasses import replace

import pytest

from diffris.config import load_params
from diffris.data.sources import DatasetSource, fetch_real
from diffris.errors import FetchError

from conftest import run_cli


def _zip_dir(folder, archive, top=""):
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, top + str(path.relative_to(folder)))


def test_network_failure_is_a_clear_message_not_a_traceback(tmp_path):
    env = dict(os.environ, HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="2", HF_HUB_DOWNLOAD_TIMEOUT="2")
    proc = run_cli("fetch", "--dataset", "refsegrs", "--source", "real", "--out", tmp_path / "r", check=False, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "could not download RefSegRS.zip from the Hugging Face Hub" in proc.stderr
    assert "huggingface.co/datasets/JessicaYuan/RefSegRS" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_manual_dataset_prints_where_to_get_it_and_where_to_put_it(tmp_path):
    proc = run_cli("fetch", "--dataset", "risbench", "--source", "real", "--out", tmp_path / "rb", check=False)
    assert proc.returncode == 2
    assert "pan.baidu.com/s/1TniZrKqa2BBGvZ5sJAnsAw" in proc.stderr
    assert str((tmp_path / "rb").resolve()) in proc.stderr


def test_manually_placed_layout_is_verified_and_accepted(raw_copy):
    root = raw_copy("rrsisd")
    proc = run_cli("fetch", "--dataset", "rrsisd", "--source", "real", "--out", root)
    assert "RRSIS-D (real) ready" in proc.stdout and "differ from the paper's" in proc.stdout
    assert (root / "FETCHED.json").exists()


def test_placed_archive_with_wrong_checksum_is_refused(tmp_path, raw_copy):
    out = tmp_path / "download"
    out.mkdir()
    _zip_dir(raw_copy("refsegrs"), out / "RefSegRS.zip")
    proc = run_cli("fetch", "--dataset", "refsegrs", "--source", "real", "--out", out, check=False)
    assert proc.returncode == 2
    assert "does not match the published 44d5e874" in proc.stderr
    assert not (out / "images").exists()


def test_archive_with_matching_checksum_is_extracted_and_flattened(tmp_path, raw_copy):
    out = tmp_path / "download"
    out.mkdir()
    archive = out / "RefSegRS.zip"
    _zip_dir(raw_copy("refsegrs"), archive, top="RefSegRS/")
    source = DatasetSource.from_params(load_params(), "refsegrs")
    pinned = replace(source, obtain=dict(source.obtain, sha256=hashlib.sha256(archive.read_bytes()).hexdigest()))
    info = fetch_real(pinned, out)
    assert (out / "images").is_dir() and (out / "output_phrase_train.txt").exists()
    assert info["splits"] == {"train": 8, "val": 4, "test": 4}


def test_archive_entries_may_not_escape_the_target(tmp_path):
    out = tmp_path / "download"
    out.mkdir()
    archive = out / "RefSegRS.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "x")
        zf.writestr("ok.txt", "x")
    source = DatasetSource.from_params(load_params(), "refsegrs")
    pinned = replace(source, obtain=dict(source.obtain, sha256=hashlib.sha256(archive.read_bytes()).hexdigest()))
    with pytest.raises(FetchError, match="would extract outside"):
        fetch_real(pinned, out)
    assert not (tmp_path / "evil.txt").exists()


def test_synthetic_fetch_refuses_to_overwrite_a_foreign_folder(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "thesis.tex").write_text("precious")
    proc = run_cli("fetch", "--dataset", "refsegrs", "--source", "synthetic", "--out", keep, check=False)
    assert proc.returncode == 2 and "refusing to overwrite" in proc.stderr
    assert (keep / "thesis.tex").read_text() == "precious"
    shutil.rmtree(keep)
