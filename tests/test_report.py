"""The report: tables from hand-written metrics, comparison.md, figures, byte-stable reruns."""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffris.cli import main
from diffris.config import load_params
from diffris.errors import ConfigError, DataError
from diffris.metrics import METRIC_KEYS
from diffris.report.comparison import render_comparison
from diffris.report.figures import write_figures
from diffris.report.tables import build_tables, metrics_path, required_metrics, table_specs, write_tables

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference"
FULL_RRSISD_TEST = {
    "Pr@0.5": 70.123,
    "Pr@0.6": 60.0,
    "Pr@0.7": 50.0,
    "Pr@0.8": 40.0,
    "Pr@0.9": 30.0,
    "oIoU": 70.0,
    "mIoU": 61.5,
}
NUM_SAMPLES = 6
KEPT = (0, 2, 3, 5)


def fake_metrics(experiment: str, dataset: str, split: str) -> dict[str, float]:
    if (experiment, dataset, split) == ("full", "rrsisd", "test"):
        return FULL_RRSISD_TEST
    seed = sum(map(ord, f"{experiment}/{dataset}/{split}"))
    return {key: (seed * (i + 3)) % 9000 / 100 for i, key in enumerate(METRIC_KEYS)}


def write_metrics(metrics_dir: Path, params: dict) -> None:
    for path in required_metrics(table_specs(params), metrics_dir):
        split, dataset, experiment = path.stem, path.parent.name, path.parent.parent.name
        report = {
            "experiment": experiment,
            "dataset": dataset,
            "split": split,
            "shuffle_expressions": False,
            "metrics": fake_metrics(experiment, dataset, split),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def write_qualitative_inputs(metrics_dir: Path, data_dir: Path, dataset: str) -> None:
    """A prepared test split and what `diffris evaluate` leaves next to full's metrics."""
    rng = np.random.default_rng(sum(map(ord, dataset)))
    split_dir = data_dir / dataset / "test"
    split_dir.mkdir(parents=True)
    masks = (rng.random((NUM_SAMPLES, 16, 16)) > 0.5).astype(np.uint8)
    np.save(split_dir / "images.npy", rng.integers(0, 256, (NUM_SAMPLES, 16, 16, 3), dtype=np.uint8))
    np.save(split_dir / "masks.npy", masks)
    ids = [f"{dataset}-{i}" for i in range(NUM_SAMPLES)]
    (split_dir / "manifest.jsonl").write_text(
        "".join(json.dumps({"index": i, "sample_id": s}) + "\n" for i, s in enumerate(ids))
    )
    out = metrics_path(metrics_dir, "full", dataset, "test")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["index", "id", "expression", "I", "U", "IoU"])
        for i, sample_id in enumerate(ids):
            writer.writerow(
                [i, sample_id, f"the vehicle number {i} on the left of the road", 3, 4, "0.750000"]
            )
    predictions = out.with_name("test-predictions")
    predictions.mkdir()
    for i in KEPT:
        Image.fromarray(masks[i] * 255).save(predictions / f"{i:05d}.png")


@pytest.fixture
def inputs(tmp_path) -> dict[str, Path]:
    params = load_params()
    metrics, data = tmp_path / "metrics", tmp_path / "data"
    write_metrics(metrics, params)
    for dataset in ("rrsisd", "refsegrs", "risbench"):
        write_qualitative_inputs(metrics, data, dataset)
    return {"metrics": metrics, "data": data, "root": tmp_path}


def rows(table, label):
    return [row for row in table.rows if row[table.key] == label]


def test_each_regenerated_row_follows_its_paper_row(inputs):
    tables = build_tables(load_params(), REFERENCE, inputs["metrics"])
    table1 = tables["table1"]
    assert table1.columns[:3] == ("method", "source", "visual_encoder")
    assert [row["method"] for row in table1.rows[-4:-1]] == ["VPD", "DiffRIS (ours)", "DiffRIS (ours)"]
    paper, regenerated, control = table1.rows[-3:]
    assert (control["method"], control["source"], control["visual_encoder"]) == ("DiffRIS, random backbone", "control", "")
    assert control["oIoU_test"] == f"{fake_metrics('random', 'rrsisd', 'test')['oIoU']:.2f}"
    assert (paper["source"], regenerated["source"]) == ("paper", "regenerated")
    assert (regenerated["visual_encoder"], regenerated["text_encoder"]) == ("Stable Diffusion", "CLIP")
    assert (regenerated["Pr@0.5_test"], regenerated["oIoU_test"], regenerated["mIoU_test"]) == (
        "70.12",
        "70.00",
        "61.50",
    )
    assert regenerated["oIoU_val"] == f"{fake_metrics('full', 'rrsisd', 'val')['oIoU']:.2f}"
    assert rows(table1, "BKINet")[0]["Pr@0.5_test"] == "56.90"  # printed "56.9": two decimals throughout
    assert len(table1.rows) == 22


def test_ablation_rows_come_from_their_experiment_on_the_configured_split(inputs):
    tables = build_tables(load_params(), REFERENCE, inputs["metrics"])
    last = rows(tables["table4"], "3 + domain-specific adjustment")
    assert [(r["source"], r["oIoU"], r["mIoU"]) for r in last] == [
        ("paper", "76.05", "62.19"),
        ("regenerated", "70.00", "61.50"),
    ]
    lmp = rows(tables["table5"], "LMP")[1]
    assert lmp["Pr@0.9"] == f"{fake_metrics('dec-lmp', 'rrsisd', 'test')['Pr@0.9']:.2f}"
    assert [r["source"] for r in tables["fig8"].rows] == ["paper", "regenerated"] * 4 + ["control"]
    assert rows(tables["fig8"], "SD-1-2")[0]["oIoU"] == ""


def test_missing_metrics_are_listed_by_path(inputs):
    missing = metrics_path(inputs["metrics"], "cp-none", "rrsisd", "test")
    missing.unlink()
    with pytest.raises(DataError, match=f"(?s)1 metrics file.*{missing}"):
        build_tables(load_params(), REFERENCE, inputs["metrics"])


def test_metrics_of_another_run_are_refused(inputs):
    path = metrics_path(inputs["metrics"], "dec-oad", "rrsisd", "test")
    path.write_text(
        json.dumps({"experiment": "dec-lmp", "metrics": fake_metrics("dec-lmp", "rrsisd", "test")})
    )
    with pytest.raises(DataError, match=f"{path}: holds experiment 'dec-lmp', expected 'dec-oad'"):
        build_tables(load_params(), REFERENCE, inputs["metrics"])


def test_a_label_without_a_paper_row_is_a_config_error(inputs):
    params = copy.deepcopy(load_params())
    params["tables"]["table5"]["rows"][0]["label"] = "LMP [40]"
    with pytest.raises(ConfigError, match=r"tables\.table5: label\(s\) 'LMP \[40\]' match no decoder"):
        build_tables(params, REFERENCE, inputs["metrics"])


def test_a_control_row_with_a_paper_row_is_a_config_error(inputs):
    params = copy.deepcopy(load_params())
    params["tables"]["table1"]["rows"][-1]["label"] = "VPD"
    with pytest.raises(ConfigError, match=r"tables\.table1: control row 'VPD' has a paper row"):
        build_tables(params, REFERENCE, inputs["metrics"])


def markdown_row(text: str, *first_cells: str) -> list[str]:
    """The cells of the first Markdown table line that starts with ``first_cells``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[: len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no line starting with {first_cells}")


def test_comparison_gives_cell_deltas_and_says_mini_numbers_are_not_comparable(inputs):
    params = load_params()
    tables_dir = inputs["root"] / "tables"
    write_tables(build_tables(params, REFERENCE, inputs["metrics"]), tables_dir)
    text = render_comparison(tables_dir, params, "mini")
    assert "These numbers are not comparable to the paper" in text and "pipeline check" in text
    val = fake_metrics("full", "rrsisd", "val")["oIoU"]
    assert markdown_row(text, "DiffRIS (ours)", "full", "oIoU") == [
        "DiffRIS (ours)",
        "full",
        "oIoU",
        "76.84",
        f"{val:.2f}",
        f"{round(val - 76.84, 2):+.2f}",
        "76.05",
        "70.00",
        "-6.05",
    ]
    assert markdown_row(text, "w/o CP-adapter", "cp-none", "oIoU")[3] == "75.52"  # Table 1's convention
    assert markdown_row(text, "SD-1-2", "sd-1-2", "mIoU")[3:] == [
        "—",
        f"{fake_metrics('sd-1-2', 'rrsisd', 'test')['mIoU']:.2f}",
        "—",
    ]
    assert markdown_row(text, "random", "random", "oIoU")[3:] == [
        "—",
        f"{fake_metrics('random', 'rrsisd', 'test')['oIoU']:.2f}",
        "—",
    ]
    assert "## Table 4 — CP-adapter components (RRSIS-D, test)" in text
    assert "not comparable" not in render_comparison(tables_dir, params, "paper")


def test_figures_are_written_without_software_tags(inputs):
    params = load_params()
    tables_dir = inputs["root"] / "tables"
    write_tables(build_tables(params, REFERENCE, inputs["metrics"]), tables_dir)
    paths = write_figures(params, tables_dir, inputs["metrics"], inputs["data"], inputs["root"] / "figures")
    assert [p.name for p in paths] == ["fig5.png", "fig6.png", "fig7.png", "fig8.png"]
    for path in paths:
        assert Image.open(path).size[0] > 0 and b"matplotlib" not in path.read_bytes()


def test_a_prediction_of_another_sample_is_refused(inputs):
    manifest = inputs["data"] / "refsegrs" / "test" / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace("refsegrs-2", "refsegrs-9"))
    with pytest.raises(DataError, match="00002.png: sample 2 of the evaluation is not sample 2"):
        write_figures(
            load_params(), inputs["root"], inputs["metrics"], inputs["data"], inputs["root"] / "figures"
        )


def report_commands(inputs: dict[str, Path], out: Path) -> list[list[str]]:
    metrics, tables = str(inputs["metrics"]), str(out / "tables")
    return [
        ["report-tables", "--reference", str(REFERENCE), "--metrics", metrics, "--out", tables, "--quiet"],
        [
            "report-figures",
            "--tables",
            tables,
            "--metrics",
            metrics,
            "--data",
            str(inputs["data"]),
            "--out",
            str(out / "figures"),
        ],
        ["report-comparison", "--tables", tables, "--scale", "mini", "--out", str(out / "comparison.md")],
    ]


def run_in_fresh_process(commands: list[list[str]]) -> None:
    """The commands one after the other in one new interpreter (its own hash seed, no caches)."""
    script = (
        "import json, sys\nfrom diffris.cli import main\n"
        "for command in json.loads(sys.argv[1]): assert main(command) == 0"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr


def test_the_report_commands_are_byte_stable(inputs):
    """Once in a fresh process, once in this one: the same bytes."""
    run_in_fresh_process(report_commands(inputs, inputs["root"] / "a"))
    for command in report_commands(inputs, inputs["root"] / "b"):
        assert main(command) == 0
    a, b = (
        {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        for out in (inputs["root"] / "a", inputs["root"] / "b")
    )
    assert len(a) == 7 + 4 + 1
    assert a == b


def test_report_tables_reports_a_missing_file_in_one_line(inputs, tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    args = ["--reference", str(nowhere), "--metrics", str(inputs["metrics"]), "--out", str(tmp_path / "t")]
    assert main(["report-tables", *args]) == 2
    assert capsys.readouterr().err == f"diffris report-tables: error: {nowhere / 'table1.csv'}: missing\n"
