"""Folder writers never delete what the command did not make, never write into their inputs, and
end every refusal or operating-system error in one line (diffris.fileio, the CLI)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from diffris import cli
from diffris.errors import DiffrisError
from diffris.fileio import MARKER, OutputError, atomic_folder, check_inputs

from conftest import run_cli


def prepare(raw, out, size=32, check=False):
    return run_cli("prepare", "--dataset", "refsegrs", "--raw", raw, "--out", out, "--image-size", size, check=check)


def one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def precious(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("precious")
    return folder / "thesis.tex"


def test_prepare_refuses_an_unrelated_existing_folder(raw_copy, tmp_path):
    keep = precious(tmp_path / "mine")
    one_line_error(prepare(raw_copy("refsegrs"), keep.parent), "was not written by `diffris prepare`", "refusing")
    assert keep.read_text() == "precious" and not (tmp_path / "mine.partial").exists()


def test_prepare_out_dotdot_is_refused_and_the_parent_untouched(raw_copy, tmp_path):
    raw = raw_copy("refsegrs")  # tmp_path/refsegrs
    keep = precious(tmp_path / "a")
    for cwd, why in ((tmp_path / "a" / "b", "was not written by"), (tmp_path / "work", "contains the input")):
        cwd.mkdir()
        args = ["prepare", "--dataset", "refsegrs", "--raw", str(raw), "--out", "..", "--image-size", "32"]
        one_line_error(subprocess.run([sys.executable, "-m", "diffris", *args], cwd=cwd, capture_output=True, text=True), why)
        assert cwd.is_dir()
    assert keep.read_text() == "precious" and len(list(raw.rglob("*.tif"))) == 32


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_prepare_out_may_not_overlap_its_input(raw_copy, where):
    raw = raw_copy("refsegrs")
    out = {"same": raw, "inside": raw / "prepared", "parent": raw.parent}[where]
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    one_line_error(prepare(raw, out), "the input")
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == before


def test_prepare_replaces_its_own_output_and_cleans_up_after_a_failure(raw_copy, tmp_path):
    raw, out = raw_copy("refsegrs"), tmp_path / "prep"
    prepare(raw, out, check=True)
    assert json.loads((out / MARKER).read_text())["command"] == "prepare"
    prepare(raw, out, check=True)  # its own folder: replaced
    (raw / "output_phrase_val.txt").write_text("12345 road\n")  # an id without an image
    one_line_error(prepare(raw, out), "12345.tif")
    assert not (tmp_path / "prep.partial").exists() and (out / "summary.json").exists()


def test_prepare_refuses_a_user_file_inside_its_own_output(raw_copy, tmp_path):
    raw, out = raw_copy("refsegrs"), tmp_path / "prep"
    prepare(raw, out, check=True)
    keep = precious(out / "train")
    one_line_error(prepare(raw, out), "thesis.tex: not written by `diffris prepare`")
    assert keep.read_text() == "precious"


def test_refetching_a_twin_keeps_a_users_file_inside_it(tmp_path):
    out = tmp_path / "raw"
    fetch = ("fetch", "--dataset", "refsegrs", "--source", "synthetic", "--scale", "ci", "--out", out)
    run_cli(*fetch)
    run_cli(*fetch)  # its own, untouched: replaced
    keep = precious(out / "images")
    one_line_error(run_cli(*fetch, check=False), "thesis.tex: not written by `diffris fetch`")
    assert keep.read_text() == "precious"


def test_fetch_out_naming_a_file_is_one_line(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    for source in ("synthetic", "real"):
        proc = run_cli("fetch", "--dataset", "risbench", "--source", source, "--out", target, check=False)
        one_line_error(proc, "is not a folder")
        assert target.read_text() == "x"


def test_fetch_weights_refuses_an_unrelated_folder(tmp_path):
    keep = precious(tmp_path / "backbone")
    proc = run_cli("fetch-weights", "--backbone", "tiny-random", "--out", keep.parent, check=False)
    one_line_error(proc, "was not written by `diffris fetch-weights`")
    assert keep.read_text() == "precious"


@pytest.mark.parametrize("command", ["cache-features", "pretrain-backbone", "fetch-weights"])
def test_atomic_folder_replaces_only_its_own_commands_folders(tmp_path, command):
    out = tmp_path / "out"

    def write(tmp):
        (tmp / "a.txt").write_text(command)

    atomic_folder(out, write, command)
    atomic_folder(out, write, command)
    assert (out / "a.txt").read_text() == command
    with pytest.raises(OutputError, match=f"written by `diffris {command}`, not `diffris prepare`"):
        atomic_folder(out, write, "prepare")
    keep = precious(tmp_path / "foreign")
    with pytest.raises(OutputError, match="was not written by"):
        atomic_folder(keep.parent, write, command)
    assert keep.read_text() == "precious"


def test_atomic_folder_keeps_the_old_folder_when_writing_fails(tmp_path):
    out = tmp_path / "out"
    atomic_folder(out, lambda tmp: (tmp / "a.txt").write_text("old"), "cache-features")

    def fail(tmp):
        (tmp / "a.txt").write_text("new")
        raise DiffrisError("boom")

    with pytest.raises(DiffrisError, match="boom"):
        atomic_folder(out, fail, "cache-features")
    assert (out / "a.txt").read_text() == "old" and not (tmp_path / "out.partial").exists()


def test_check_inputs_names_the_relation():
    with pytest.raises(OutputError, match="lies inside the input"):
        check_inputs("data/raw/x/prepared", ["data/raw/x"])
    with pytest.raises(OutputError, match="contains the input"):
        check_inputs("data", ["data/raw/x"])
    check_inputs("data/prepared/x", ["data/raw/x", None])


def test_evaluate_and_train_refuse_outputs_over_their_inputs(tmp_path):
    keep = tmp_path / "notes.json"
    keep.write_text('{"mine": true}')
    proc = run_cli("evaluate", "--run", tmp_path / "run", "--split", "test", "--out", keep, check=False)
    one_line_error(proc, "is not a metrics JSON of `diffris evaluate`")
    proc = run_cli("evaluate", "--run", tmp_path / "run", "--split", "test", "--out", tmp_path / "run" / "x.json", check=False)
    one_line_error(proc, "lies inside the input")
    proc = run_cli(
        "train", "--experiment", "full", "--dataset", "refsegrs", "--data", tmp_path / "prep",
        "--backbone-dir", tmp_path / "bb", "--out", tmp_path / "prep" / "run", check=False,
    )  # fmt: skip
    one_line_error(proc, "lies inside the input")
    assert keep.read_text() == '{"mine": true}'


@pytest.mark.parametrize(
    "error", [PermissionError(errno.EACCES, "Permission denied"), OSError(errno.ENOSPC, "No space left on device")]
)
def test_read_only_folder_and_full_disk_end_in_one_line(raw_copy, tmp_path, monkeypatch, capsys, error):
    """Root ignores permission bits and the disk cannot be filled here, so the OS refuses in a stub."""
    import os

    def refuse(fd, offset, length):
        error.filename = "images.npy"
        raise error

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    code = cli.main(["prepare", "--dataset", "refsegrs", "--raw", str(raw_copy("refsegrs")), "--out", str(tmp_path / "p"), "--image-size", "32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"images.npy: {error.strerror}" in err[0]
    assert not (tmp_path / "p").exists() and not (tmp_path / "p.partial").exists()
