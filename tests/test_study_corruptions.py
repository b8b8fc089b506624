"""The adverse-conditions study: seeded corruptions, `diffris evaluate-corrupted` on a tiny trained
run, and `diffris report-corruptions` on hand-made evaluations."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from diffris.errors import DataError
from diffris.training.metrics import metrics_from_counts
from diffris.studies.corruption_report import build_table, read_groups, write_report
from diffris.studies.corruptions import (
    CLOUD_BRIGHTNESS,
    CLOUD_COVERAGE,
    CORRUPTIONS,
    SEVERITIES,
    CorruptionError,
    corrupt,
    parse_corruptions,
    parse_severities,
)
from conftest import run_cli
from report_fakes import write_per_sample
from test_train import ENV, shared_assets

SIZE = 64


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A scene-like RGB image: a gradient, two 'buildings' and some texture."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([60 + x, 90 + y // 2, 40 + (x + y) // 3], axis=-1).astype(float)
    base[10:25, 30:50] = (200, 190, 180)
    base[40:58, 8:20] = (30, 40, 35)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


# --- the corruptions -------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_corruption_is_the_same_image_every_time_and_keeps_shape_and_dtype(image, name):
    for severity in SEVERITIES:
        out = corrupt(image, name, severity, index=3)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(image.copy(), name, severity, index=3))
        assert not np.array_equal(out, image)


@pytest.mark.parametrize("name", ["haze", "clouds", "noise"])
def test_random_corruptions_differ_between_samples(image, name):
    assert not np.array_equal(corrupt(image, name, 2, index=0), corrupt(image, name, 2, index=1))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_higher_severity_changes_the_image_more(image, name):
    change = [
        np.mean([np.abs(corrupt(image, name, s, i).astype(float) - image).mean() for i in range(4)]) for s in SEVERITIES
    ]
    assert change == sorted(change) and len(set(change)) == len(change), change


def test_the_numpy_corruptions_give_the_same_bytes_on_every_machine(image):
    digest = hashlib.sha256()
    for name in ("haze", "clouds", "noise", "blur"):
        for severity in SEVERITIES:
            digest.update(corrupt(image, name, severity, index=7).tobytes())
    assert digest.hexdigest()[:16] == PINNED_DIGEST


PINNED_DIGEST = "42bf8268301b35c9"  # numpy Generator streams and float64 arithmetic; no SIMD exp


def test_haze_washes_out_contrast_and_clouds_cover_their_share(image):
    stds = [corrupt(image, "haze", s, 0).astype(float).std() for s in SEVERITIES]
    assert stds == sorted(stds, reverse=True) and stds[0] < image.std()
    black = np.zeros_like(image)  # a pixel at least half cloud is at least half as bright as a cloud
    covered = [np.mean(corrupt(black, "clouds", s, 0)[..., 0] >= CLOUD_BRIGHTNESS / 2) for s in SEVERITIES]
    assert covered == pytest.approx(CLOUD_COVERAGE, abs=0.01)


def test_option_lists_are_checked():
    assert parse_corruptions("haze, jpeg") == ("haze", "jpeg")
    assert parse_severities("3,1") == (1, 3)
    for bad in ("haze,fog", "haze,haze", ""):
        with pytest.raises(CorruptionError):
            parse_corruptions(bad)
    for bad in ("1,4", "0", "x", "2,2"):
        with pytest.raises(CorruptionError):
            parse_severities(bad)


# --- report-corruptions on hand-made evaluations ----------------------------------------------

# mIoU (percent) per condition; every sample has that IoU (I/U with U = 20), so intervals collapse
HAND_MIOU = {
    "full": {"clean": 80, "haze-1": 60, "haze-2": 40, "noise-1": 70, "noise-2": 50},
    "random": {"clean": 70, "haze-1": 50, "haze-2": 30, "noise-1": 65, "noise-2": 40},
}
SAMPLES = 3


def write_condition(folder: Path, condition: str, counts: list[tuple[int, int]], experiment: str, dataset: str) -> None:
    metrics = metrics_from_counts([i for i, _ in counts], [u for _, u in counts])
    report = {"experiment": experiment, "dataset": dataset, "split": "test", "num_samples": len(counts),
              "condition": {"name": condition}, "metrics": {k: round(v, 4) for k, v in metrics.items()}}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{condition}.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_per_sample(folder / f"{condition}.csv", [f"{dataset}-{i}" for i in range(len(counts))], counts)


def hand_folders(root: Path) -> list[Path]:
    folders = []
    for experiment, mious in HAND_MIOU.items():
        folder = root / experiment / "rrsisd" / "seed0"
        for condition, miou in mious.items():
            write_condition(folder, condition, [(miou // 5, 20)] * SAMPLES, experiment, "rrsisd")
        folders.append(folder)
    return folders


def lines_by_key(table) -> dict[tuple[str, str, str], dict[str, str]]:
    return {(r["experiment"], r["condition"], r["metric"]): r for r in table.rows}


def test_mce_is_the_ratio_of_summed_errors_against_the_baseline(tmp_path):
    lines = lines_by_key(build_table(read_groups(hand_folders(tmp_path)), "random"))
    # CE_haze = 100·(40+60)/(50+70), CE_noise = 100·(30+50)/(35+60); mCE = their mean
    assert lines["full", "haze", "CE"]["mean"] == "83.3333"
    assert lines["full", "noise", "CE"]["mean"] == "84.2105"
    assert lines["full", "all", "mCE"]["mean"] == "83.7719"
    # relative: drops from clean, (20+40)/(20+40) and (10+30)/(5+30)
    assert lines["full", "haze", "relative_CE"]["mean"] == "100.0000"
    assert lines["full", "all", "relative_mCE"]["mean"] == "107.1429"
    mce = lines["full", "all", "mCE"]
    assert (mce["ci_low"], mce["ci_high"], mce["delta"], mce["resolved"]) == ("83.7719", "83.7719", "-16.2281", "yes")
    for metric in ("mCE", "relative_mCE"):
        baseline = lines["random", "all", metric]
        assert (baseline["mean"], baseline["ci_low"], baseline["ci_high"]) == ("100.0000",) * 3
        assert baseline["delta"] == ""


def test_conditions_carry_their_paired_delta_against_clean(tmp_path):
    lines = lines_by_key(build_table(read_groups(hand_folders(tmp_path)), "random"))
    haze = lines["full", "haze-2", "mIoU"]
    assert (haze["mean"], haze["seeds"], haze["samples"], haze["std"]) == ("40.0000", "1", str(SAMPLES), "")
    assert (haze["delta"], haze["delta_ci_low"], haze["delta_ci_high"]) == ("-40.0000",) * 3
    assert haze["resolved"] == "yes"
    clean = lines["full", "clean", "oIoU"]
    assert clean["mean"] == "80.0000" and clean["delta"] == clean["resolved"] == ""


def test_report_cli_writes_sorted_deterministic_csv_and_figure(tmp_path):
    folders = hand_folders(tmp_path / "evals")
    out, fig = tmp_path / "a" / "corruptions.csv", tmp_path / "a" / "corruptions.png"
    run_cli("report-corruptions", "--evaluations", *reversed(folders), "--baseline", "random",
            "--out", out, "--figure", fig)  # fmt: skip
    again = tmp_path / "b" / "corruptions.csv", tmp_path / "b" / "corruptions.png"
    write_report(folders, "random", *again)
    assert (out.read_bytes(), fig.read_bytes()) == (again[0].read_bytes(), again[1].read_bytes())
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert list(rows[0]) == ["experiment", "dataset", "condition", "metric", "mean", "std", "seeds", "samples",
                             "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "resolved"]  # fmt: skip
    full = [(r["condition"], r["metric"]) for r in rows if r["experiment"] == "full"]
    assert full[:4] == [("clean", "oIoU"), ("clean", "mIoU"), ("haze-1", "oIoU"), ("haze-1", "mIoU")]
    assert full[-4:] == [("noise", "CE"), ("noise", "relative_CE"), ("all", "mCE"), ("all", "relative_mCE")]
    assert [r["experiment"] for r in rows] == sorted(r["experiment"] for r in rows)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in fig.read_bytes()
    assert not list(tmp_path.glob("*/.*.tmp-*"))


def test_seeds_are_averaged_and_their_spread_reported(tmp_path):
    folders = hand_folders(tmp_path)
    second = tmp_path / "full" / "rrsisd" / "seed1"
    for condition, miou in HAND_MIOU["full"].items():
        write_condition(second, condition, [((miou + 10) // 5, 20)] * SAMPLES, "full", "rrsisd")
    lines = lines_by_key(build_table(read_groups([*folders, second]), "random"))
    clean = lines["full", "clean", "mIoU"]
    assert (clean["mean"], clean["seeds"], clean["std"]) == ("85.0000", "2", "7.0711")
    assert lines["full", "all", "mCE"]["std"] != ""


def test_a_missing_baseline_or_condition_is_named(tmp_path):
    folders = hand_folders(tmp_path)
    with pytest.raises(DataError, match="--baseline shuffled: no evaluations of 'shuffled' on rrsisd"):
        build_table(read_groups(folders), "shuffled")
    (folders[1] / "noise-2.json").unlink()
    with pytest.raises(DataError, match="no noise-2 evaluation"):
        build_table(read_groups(folders), "random")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--corruptions", "haze,fog"], "unknown corruption 'fog'"),
        (["--severities", "1,4"], "severity 4 is out of range"),
        ([], "config.json: missing"),
    ],
)
def test_bad_evaluate_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "run").mkdir()
    result = run_cli("evaluate-corrupted", "--run", tmp_path / "run", "--out", tmp_path / "out", *args, check=False)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_bad_report_input_is_one_line_and_exit_2(tmp_path):
    folders = hand_folders(tmp_path)
    result = run_cli("report-corruptions", "--evaluations", *folders, "--baseline", "nope",
                     "--out", tmp_path / "c.csv", "--figure", tmp_path / "c.png", check=False)  # fmt: skip
    assert result.returncode == 2 and "--baseline nope" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "c.csv").exists()


# --- evaluate-corrupted on a tiny trained run (test_train's, trained once per session) ----------

CONDITIONS = ("clean", "haze-1", "haze-3", "jpeg-1", "jpeg-3")


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory) -> tuple[Path, Path]:
    """test_train's reference run under haze and JPEG at severities 1 and 3, and plainly evaluated."""
    assets = shared_assets(tmp_path_factory)
    run = assets.run("reference")
    root = tmp_path_factory.mktemp("corrupted")
    out = root / "full" / "refsegrs" / "seed0"
    args = ("--corruptions", "haze,jpeg", "--severities", "3,1", "--batch-size", "4")
    run_cli("evaluate-corrupted", "--run", run, "--split", "test", "--out", out, *args, env=ENV)
    run_cli("evaluate", "--run", run, "--split", "test", "--out", root / "plain.json", env=ENV)
    return out, root / "plain.json"


def test_evaluate_corrupted_writes_every_condition_in_evaluates_formats(corrupted):
    out, _ = corrupted
    names = sorted(p.name for p in out.iterdir())
    evaluations = [f"{c}.{ext}" for c in CONDITIONS for ext in ("json", "csv")]
    assert names == sorted([".diffris-out.json", "summary.json", *evaluations])
    assert not out.with_name(out.name + ".partial").exists()
    haze = json.loads((out / "haze-3.json").read_text())
    assert (haze["experiment"], haze["dataset"], haze["split"], haze["num_samples"]) == ("full", "refsegrs", "test", 8)
    parameters = {"transmission": 0.3, "airlight": [232.0, 236.0, 240.0], "variation": 0.05}
    assert haze["condition"] == {"name": "haze-3", "corruption": "haze", "severity": 3, "parameters": parameters}
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["conditions"]) == list(CONDITIONS)
    assert summary["conditions"]["haze-3"] == haze["metrics"]


def test_clean_is_what_diffris_evaluate_gives(corrupted):
    out, plain = corrupted
    assert json.loads((out / "clean.json").read_text())["metrics"] == json.loads(plain.read_text())["metrics"]
    assert (out / "clean.csv").read_bytes() == plain.with_suffix(".csv").read_bytes()


def test_a_run_against_itself_has_an_mce_of_100(corrupted):
    out, _ = corrupted
    lines = lines_by_key(build_table(read_groups([out]), "full"))
    assert lines["full", "all", "mCE"]["mean"] == "100.0000"
    assert {c for _, c, _ in lines} == {*CONDITIONS, "haze", "jpeg", "all"}
