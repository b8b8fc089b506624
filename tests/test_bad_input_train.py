"""Run folders on bad input and on a changed config: a torn log is cut back and the run resumes,
a torn config.json is one line, a failed start leaves nothing behind, and a changed config trains
anew beside the old run, which stays until the new weights exist (real tiny model, real CLI)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from diffris.training.run_log import Counters, RunLog

from conftest import REPO, run_cli
from test_features import short_params, train  # noqa: F401  (session fixtures and the shared short run)
from test_train import ENV, read_log, shared_assets, wait_for_step


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


@pytest.fixture
def finished(assets, short_params, tmp_path):  # noqa: F811
    """A private copy of the session's one-epoch `full` run."""
    return shutil.copytree(train(assets, short_params, "full", "full"), tmp_path / "run")


def args_with(assets, out, params):
    args = assets.train_args(out)
    args[args.index("--params") + 1] = params
    return args


def params_with(path, source, **train):
    params = yaml.safe_load(source.read_text())
    params["scales"]["mini"]["train"].update(train)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_run_log_is_cut_back_to_its_last_complete_record(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    records = [{"kind": "step", "step": s, "epoch": 1, "loss": 1.0} for s in (1, 2, 3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"kind": "step", "st')
    log = RunLog(path, enabled=True)
    log.resume_from(Counters(epoch=0, step_in_epoch=3, global_step=3))
    assert [json.loads(line) for line in path.read_text().splitlines()] == records
    assert log.epoch_losses == [1.0, 1.0, 1.0]
    assert "log.jsonl:4: not a complete record" in capsys.readouterr().out


def test_a_torn_log_does_not_stop_a_resumption(assets, short_params, finished):  # noqa: F811
    (finished / "model.safetensors").unlink()  # killed after the last checkpoint, mid-write of the log
    with open(finished / "log.jsonl", "a") as f:
        f.write('{"kind": "step", "step": 7, "ep')
    proc = run_cli(*args_with(assets, finished, short_params), env=ENV)
    assert "resuming from" in proc.stdout and (finished / "model.safetensors").exists()
    assert all(json.loads(line) for line in (finished / "log.jsonl").read_text().splitlines())


def test_torn_config_json_is_one_line(finished, tmp_path):
    path = finished / "config.json"
    path.write_text(path.read_text()[:50])
    proc = run_cli("evaluate", "--run", finished, "--split", "test", "--out", tmp_path / "t.json", check=False, env=ENV)
    assert proc.returncode == 2 and "config.json: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr


def test_a_failed_start_leaves_nothing_behind(assets, short_params, tmp_path):  # noqa: F811
    """Nothing is written before the run has started, so the corrected command starts afresh
    (and a changed config never blocks it either: see the next test)."""
    huge = params_with(tmp_path / "huge.yaml", short_params, batch_size=100000, micro_batch_size=100000)
    out = tmp_path / "fresh"
    proc = run_cli(*args_with(assets, out, huge), check=False, env=ENV)
    assert proc.returncode == 2 and "exceeds the 24 training samples" in proc.stderr
    assert not out.exists() and not out.with_name("fresh.partial").exists()


def test_a_changed_config_trains_anew_and_keeps_the_old_weights_until_the_new_exist(
    assets, short_params, finished, tmp_path  # noqa: F811
):
    old_weights = (finished / "model.safetensors").read_bytes()
    changed = params_with(tmp_path / "changed.yaml", short_params, lr=1.0e-3, checkpoint_every_steps=2)
    partial = finished.with_name("run.partial")
    cmd = [sys.executable, "-m", "diffris", *map(str, args_with(assets, finished, changed))]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(proc, partial / "log.jsonl", step=3)  # past the checkpoint at step 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (finished / "model.safetensors").read_bytes() == old_weights  # the old run is untouched

    resumed = run_cli(*args_with(assets, finished, changed), env=ENV)
    assert "resuming from" in resumed.stdout and str(partial) in resumed.stdout
    assert not partial.exists() and (finished / "model.safetensors").read_bytes() != old_weights
    assert json.loads((finished / "config.json").read_text())["train"]["lr"] == 1.0e-3
    assert [r["step"] for r in read_log(finished) if r["kind"] == "step"] == list(range(1, 7))
