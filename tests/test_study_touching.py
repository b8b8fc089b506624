"""The touching study: a test split whose target has a neighbour at a controlled relation, and
the per-bin report of hard against soft assignment."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from diffris.data.dataset import PreparedSplit
from diffris.data.readers import read_raw
from diffris.training.metrics import metrics_from_counts
from diffris.training.run_folder import check_prepared
from diffris.studies.touching import BINS, BINS_FILE, RAW_DIR, generate_scenes, make_touching
from diffris.studies.touching_report import TOUCHING_COLUMNS

PER_BIN, SIZE, RAW_SIZE, SEED = 2, 64, 128, 3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("touching") / "rrsisd-touching"
    make_touching(out, SIZE, RAW_SIZE, PER_BIN, SEED)
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def brute_gap(a: np.ndarray, b: np.ndarray) -> float:
    pa, pb = np.argwhere(a), np.argwhere(b)
    return float(np.sqrt(((pa[:, None] - pb[None]) ** 2).sum(-1).min()))


# --- the generator ------------------------------------------------------------------------


def test_the_split_is_the_same_bytes_for_a_seed_and_differs_for_another(prepared, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    make_touching(again, SIZE, RAW_SIZE, PER_BIN, SEED)
    make_touching(other, SIZE, RAW_SIZE, PER_BIN, SEED + 1)
    for name in ("test/images.npy", "test/masks.npy", "test/manifest.jsonl", BINS_FILE, "summary.json"):
        assert (again / name).read_bytes() == (prepared / name).read_bytes(), name
    assert (other / "test/images.npy").read_bytes() != (prepared / "test/images.npy").read_bytes()


def test_every_bin_has_as_many_samples_and_each_lies_in_its_bin():
    scenes = list(generate_scenes(3, RAW_SIZE, SEED))
    assert [s.bin.name for s in scenes] == [b.name for b in BINS] * 3
    for scene in scenes:
        target, neighbour = scene.target.mask, scene.neighbour.mask
        overlap = (target & neighbour).sum() / target.sum()
        gap = 0.0 if overlap else brute_gap(target, neighbour)
        assert scene.bin.overlap[0] <= overlap <= scene.bin.overlap[1], scene.bin.name
        low, high = scene.bin.gap_range(RAW_SIZE)
        assert low <= gap <= high, scene.bin.name
        assert (neighbour & ~target).sum() >= 0.5 * neighbour.sum()  # the neighbour stays visible
        assert scene.neighbour.kind is not scene.target.kind
        for distractor in scene.objects[2:]:
            assert brute_gap(target, distractor.mask) >= BINS[0].gap_range(RAW_SIZE)[0]


def test_the_bins_are_what_their_names_say():
    named = {b.name: b for b in BINS}
    assert named["apart"].overlap == named["touching"].overlap == (0.0, 0.0)
    assert named["touching"].gap_range(RAW_SIZE) == (1.0, 1.5)
    assert 5 <= named["apart"].gap_range(RAW_SIZE)[0] and named["apart"].gap_range(RAW_SIZE)[1] <= 11
    for name, share in (("overlap-10", 0.10), ("overlap-25", 0.25), ("overlap-40", 0.40)):
        low, high = named[name].overlap
        assert low < share < high and high - low == pytest.approx(0.10)


def test_the_ground_truth_is_the_whole_target_drawn_on_top(prepared):
    scenes = list(generate_scenes(PER_BIN, RAW_SIZE, SEED))
    raw = read_raw("rrsisd", prepared / RAW_DIR)
    split = PreparedSplit(prepared, "test")
    for i, (scene, sample) in enumerate(zip(scenes, raw, strict=True)):
        assert np.array_equal(sample.load_mask(), scene.target.mask)
        resized = Image.fromarray(scene.target.mask.astype(np.uint8)).resize((SIZE, SIZE), Image.NEAREST)
        assert np.array_equal(split[i]["mask"].numpy(), np.asarray(resized).astype(bool))
        assert split[i]["expression"] == scene.expression
        assert scene.target.kind.name in scene.expression
        under = scene.target.mask & scene.neighbour.mask  # painted with the target's colour, not the neighbour's
        if under.any():
            shade = scene.image[under].astype(float).mean(0)
            target_rgb = dict(scene.target.kind.colours)[scene.target.colour]
            assert np.abs(shade - target_rgb).max() < 30


def test_the_prepared_folder_is_an_rrsisd_test_split_with_its_bins(prepared):
    check_prepared(prepared, "rrsisd", SIZE, "test")
    summary = json.loads((prepared / "summary.json").read_text())
    assert summary["dataset"] == "rrsisd" and list(summary["splits"]) == ["test"]
    split = PreparedSplit(prepared, "test")
    bins = read_csv(prepared / BINS_FILE)
    assert list(bins[0]) == ["index", "id", "bin", "overlap", "gap", "neighbour"]
    assert [(int(b["index"]), b["id"]) for b in bins] == [(r["index"], r["sample_id"]) for r in split.records]
    assert [b["bin"] for b in bins] == [b.name for b in BINS] * PER_BIN
    for row in bins:
        low, high = next(b for b in BINS if b.name == row["bin"]).overlap
        assert low <= float(row["overlap"]) <= high
    assert not list(prepared.parent.glob("*.partial"))


def test_make_touching_rewrites_its_own_folder_but_no_other(prepared, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = ["--image-size", SIZE, "--raw-image-size", RAW_SIZE, "--per-bin", 1, "--seed", SEED]
    proc = run_cli("make-touching", "--out", foreign, *args, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "mine"
    out = tmp_path / "split"
    run_cli("make-touching", "--out", out, *args)
    run_cli("make-touching", "--out", out, *args)
    check_prepared(out, "rrsisd", SIZE, "test")


# --- the report ---------------------------------------------------------------------------

IDS = ["1", "2", "3", "4", "5", "6"]
BIN_OF = ["apart", "touching", "apart", "touching", "apart", "touching"]
HARD = [  # per seed: (I, U) per sample
    [(8, 10), (1, 10), (9, 10), (2, 10), (10, 10), (3, 10)],
    [(6, 10), (3, 10), (9, 10), (2, 10), (10, 10), (1, 10)],
]
SOFT = [
    [(7, 10), (5, 10), (8, 10), (4, 10), (9, 10), (6, 10)],
    [(7, 10), (5, 10), (6, 10), (6, 10), (9, 10), (4, 10)],
]


def write_eval(path: Path, counts: list[tuple[int, int]], ids: list[str] = IDS) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "id", "expression", "I", "U", "IoU"])
        for k, ((i, u), sample_id) in enumerate(zip(counts, ids, strict=True)):
            writer.writerow([k, sample_id, "The ship", i, u, f"{i / u:.6f}"])
    return path


def write_bins(path: Path, ids: list[str] = IDS, bins: list[str] = BIN_OF) -> Path:
    lines = ["index,id,bin,overlap,gap,neighbour"]
    lines += [f"{k},{i},{b},0.0000,1.0000,ship" for k, (i, b) in enumerate(zip(ids, bins, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def evaluations(tmp_path) -> list[str]:
    hard = [str(write_eval(tmp_path / f"hard{s}.csv", c)) for s, c in enumerate(HARD)]
    soft = [str(write_eval(tmp_path / f"soft{s}.csv", c)) for s, c in enumerate(SOFT)]
    return ["--hard", *hard, "--soft", *soft, "--bins", str(write_bins(tmp_path / "bins.csv"))]


def expected(per_seed: list[list[tuple[int, int]]], bin_name: str, metric: str) -> float:
    keep = [k for k, b in enumerate(BIN_OF) if bin_name in ("all", b)]
    return float(np.mean([metrics_from_counts(*zip(*[c[k] for k in keep]))[metric] for c in per_seed]))


def test_report_touching_gives_each_bin_its_metrics_and_the_paired_delta(evaluations, tmp_path):
    out, figure = tmp_path / "touching.csv", tmp_path / "touching.png"
    run_cli("report-touching", *evaluations, "--out", out, "--figure", figure)
    rows = read_csv(out)
    assert tuple(rows[0]) == TOUCHING_COLUMNS
    assert [(r["bin"], r["assignment"], r["metric"]) for r in rows] == [
        (b, a, m) for b in ("apart", "touching", "all") for a in ("hard", "soft") for m in ("oIoU", "mIoU")
    ]
    for row in rows:
        counts = HARD if row["assignment"] == "hard" else SOFT
        assert float(row["mean"]) == pytest.approx(expected(counts, row["bin"], row["metric"]), abs=1e-4)
        assert row["seeds"] == "2" and row["samples"] == ("6" if row["bin"] == "all" else "3")
        assert float(row["ci_low"]) <= float(row["mean"]) <= float(row["ci_high"])
        assert all(len(row[c].partition(".")[2]) == 4 for c in ("mean", "std", "ci_low", "ci_high"))
        if row["assignment"] == "hard":
            delta = expected(HARD, row["bin"], row["metric"]) - expected(SOFT, row["bin"], row["metric"])
            assert float(row["delta"]) == pytest.approx(delta, abs=1e-4)
            assert float(row["delta_ci_low"]) <= float(row["delta"]) <= float(row["delta_ci_high"])
            assert row["resolved"] in ("yes", "no")
        else:
            assert row["delta"] == row["resolved"] == ""
    touching = {r["metric"]: r for r in rows if r["bin"] == "touching" and r["assignment"] == "hard"}
    assert float(touching["mIoU"]["delta"]) == pytest.approx(100 * (6 / 30 - 15 / 30), abs=1e-4)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_touching_is_the_same_bytes_every_time(evaluations, tmp_path):
    outputs = []
    for k in range(2):
        out, figure = tmp_path / f"t{k}.csv", tmp_path / f"t{k}.png"
        run_cli("report-touching", *evaluations, "--out", out, "--figure", figure)
        outputs.append((out.read_bytes(), figure.read_bytes()))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "case",
    ["bins of other samples", "bins in another order", "a missing evaluation", "a missing bins file", "soft on other samples"],
)
def test_bad_inputs_give_one_line_and_exit_2(case, tmp_path):
    hard = [str(write_eval(tmp_path / "hard.csv", HARD[0]))]
    soft = [str(write_eval(tmp_path / "soft.csv", SOFT[0]))]
    bins = write_bins(tmp_path / "bins.csv")
    if case == "bins of other samples":
        write_bins(bins, ids=[str(i + 10) for i in range(6)])
    elif case == "bins in another order":
        write_bins(bins, ids=IDS[::-1])
    elif case == "a missing evaluation":
        hard.append(str(tmp_path / "absent.csv"))
    elif case == "a missing bins file":
        bins = tmp_path / "absent-bins.csv"
    else:
        soft = [str(write_eval(tmp_path / "soft.csv", SOFT[0], ids=[f"x{i}" for i in IDS]))]
    out = tmp_path / "out.csv"
    proc = run_cli(
        "report-touching", "--hard", *hard, "--soft", *soft, "--bins", bins, "--out", out, "--figure", tmp_path / "f.png",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not out.exists()
