"""The report: tables from hand-made evaluations of several seeds, their intervals, comparison.md,
figures, byte-stable reruns."""

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
from diffris.errors import ConfigError, DataError
from diffris.report.comparison import render_comparison
from diffris.report.figures import write_figures
from diffris.report.tables import INTERVAL_COLUMNS, build_report, build_tables, metrics_path, write_tables
from report_fakes import (
    NUM_SAMPLES,
    SCALE,
    expected_cell,
    fake_metrics,
    report_params,
    write_all_evaluations,
    write_params,
    write_per_sample,
)

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference"
KEPT = (0, 2, 3, 5)


def write_qualitative_inputs(metrics_dir: Path, data_dir: Path, dataset: str, seed: int) -> None:
    """A prepared test split and the prediction PNGs `diffris evaluate` leaves beside full's metrics."""
    rng = np.random.default_rng(sum(map(ord, dataset)))
    split_dir = data_dir / dataset / "test"
    split_dir.mkdir(parents=True)
    masks = (rng.random((NUM_SAMPLES, 16, 16)) > 0.5).astype(np.uint8)
    np.save(split_dir / "images.npy", rng.integers(0, 256, (NUM_SAMPLES, 16, 16, 3), dtype=np.uint8))
    np.save(split_dir / "masks.npy", masks)
    (split_dir / "manifest.jsonl").write_text(
        "".join(json.dumps({"index": i, "sample_id": f"{dataset}-{i}"}) + "\n" for i in range(NUM_SAMPLES))
    )
    predictions = metrics_path(metrics_dir, "full", dataset, "test", seed).with_name("test-predictions")
    predictions.mkdir()
    for i in KEPT:
        Image.fromarray(masks[i] * 255).save(predictions / f"{i:05d}.png")


@pytest.fixture
def inputs(tmp_path) -> dict:
    params = report_params()
    metrics, data = tmp_path / "metrics", tmp_path / "data"
    write_all_evaluations(metrics, params)
    for dataset in ("rrsisd", "refsegrs", "risbench"):
        write_qualitative_inputs(metrics, data, dataset, params["seed"])
    return {"metrics": metrics, "data": data, "root": tmp_path, "params": params,
            "params_file": write_params(params, tmp_path / "params.yaml")}  # fmt: skip


def tables_of(inputs: dict, params: dict | None = None) -> dict:
    return build_tables(params or inputs["params"], REFERENCE, inputs["metrics"], SCALE)


def rows(table, label):
    return [row for row in table.rows if row[table.key] == label]


def test_each_regenerated_row_follows_its_paper_row_and_is_the_mean_over_seeds(inputs):
    params = inputs["params"]
    table1 = tables_of(inputs)["table1"]
    assert table1.columns[:3] == ("method", "source", "visual_encoder")
    assert [row["method"] for row in table1.rows[-5:-2]] == ["VPD", "DiffRIS (ours)", "DiffRIS (ours)"]
    paper, regenerated, random, shuffled = table1.rows[-4:]
    assert (random["method"], random["source"], random["visual_encoder"]) == ("DiffRIS, random backbone", "control", "")
    assert random["oIoU_test"] == expected_cell(params, "random", "rrsisd", "test", "oIoU")
    assert (shuffled["method"], shuffled["source"]) == ("DiffRIS, shuffled expressions", "control")
    assert shuffled["mIoU_val"] == expected_cell(params, "full", "rrsisd", "val", "mIoU", shuffled=True)
    assert (paper["source"], regenerated["source"]) == ("paper", "regenerated")
    assert (regenerated["visual_encoder"], regenerated["text_encoder"]) == ("Stable Diffusion", "CLIP")
    for column in ("Pr@0.5_test", "oIoU_test", "mIoU_val"):
        metric, split = column.split("_")
        assert regenerated[column] == expected_cell(params, "full", "rrsisd", split, metric), column
    seed0 = fake_metrics("full", "rrsisd", "test", 0)["oIoU"]
    assert regenerated["oIoU_test"] != f"{seed0:.2f}"  # the mean, not the first seed
    assert rows(table1, "BKINet")[0]["Pr@0.5_test"] == "56.90"  # printed "56.9": two decimals throughout
    assert len(table1.rows) == 23


def test_ablation_rows_come_from_their_experiment_on_the_configured_split(inputs):
    params = inputs["params"]
    tables = tables_of(inputs)
    last = rows(tables["table4"], "3 + domain-specific adjustment")
    assert [(r["source"], r["oIoU"], r["mIoU"]) for r in last] == [
        ("paper", "76.05", "62.19"),
        ("regenerated", expected_cell(params, "full", "rrsisd", "test", "oIoU"),
         expected_cell(params, "full", "rrsisd", "test", "mIoU")),
    ]  # fmt: skip
    lmp = rows(tables["table5"], "LMP")[1]
    assert lmp["Pr@0.9"] == expected_cell(params, "dec-lmp", "rrsisd", "test", "Pr@0.9")
    assert [r["source"] for r in tables["fig8"].rows] == ["paper", "regenerated"] * 4 + ["control"]
    assert rows(tables["fig8"], "SD-1-2")[0]["oIoU"] == ""


def intervals_of(inputs: dict) -> dict:
    _, intervals = build_report(inputs["params"], REFERENCE, inputs["metrics"], SCALE)
    return {name: {(r["label"], r["split"], r["metric"]): r for r in table.rows} for name, table in intervals.items()}


def test_every_regenerated_cell_has_its_interval_beside_the_table(inputs):
    tables = tables_of(inputs)
    _, intervals = build_report(inputs["params"], REFERENCE, inputs["metrics"], SCALE)
    assert [*intervals] == [f"{name}-intervals" for name in tables]
    for name, table in tables.items():
        lines = intervals[f"{name}-intervals"]
        assert lines.columns == INTERVAL_COLUMNS
        regenerated = [r for r in table.rows if r["source"] != "paper"]
        metric_columns = [c for c in table.columns if c.split("_")[0] in ("oIoU", "mIoU") or c.startswith("Pr@")]
        assert len(lines.rows) == len(regenerated) * len(metric_columns), name
        for line in lines.rows:
            assert line["seeds"] == "2" and line["samples"] == str(NUM_SAMPLES)
            assert float(line["ci_low"]) <= float(line["ci_high"]) and float(line["std"]) >= 0
            assert all(line[c] == "" or len(line[c].split(".")[-1]) == 4 for c in ("mean", "std", "ci_low", "delta"))
    table1 = intervals_of(inputs)["table1-intervals"]
    full = table1["DiffRIS (ours)", "test", "oIoU"]
    values = [fake_metrics("full", "rrsisd", "test", seed)["oIoU"] for seed in (0, 1)]
    assert full["mean"] == f"{np.mean(values):.4f}" and full["std"] == f"{np.std(values, ddof=1):.4f}"
    assert full["delta"] == full["resolved"] == ""  # the row the deltas are taken against
    shuffled = table1["DiffRIS, shuffled expressions", "val", "mIoU"]
    assert shuffled["delta"] and shuffled["resolved"] in ("yes", "no")


def test_ablation_deltas_are_against_the_full_row_with_a_paired_interval(inputs):
    table4 = intervals_of(inputs)["table4-intervals"]
    line = table4["w/o CP-adapter", "test", "oIoU"]
    full = table4["3 + domain-specific adjustment", "test", "oIoU"]
    assert float(line["delta"]) == pytest.approx(float(line["mean"]) - float(full["mean"]), abs=2e-4)
    low, high = float(line["delta_ci_low"]), float(line["delta_ci_high"])
    assert low <= high and line["resolved"] == ("yes" if low > 0 or high < 0 else "no")


def test_missing_metrics_are_listed_by_path(inputs):
    missing = metrics_path(inputs["metrics"], "cp-none", "rrsisd", "test", 1).with_suffix(".csv")
    missing.unlink()
    with pytest.raises(DataError, match=f"(?s)1 metrics file.*{missing}"):
        tables_of(inputs)


def test_metrics_of_another_run_are_refused(inputs):
    path = metrics_path(inputs["metrics"], "dec-oad", "rrsisd", "test", 0)
    path.write_text(json.dumps({"experiment": "dec-lmp", "metrics": fake_metrics("dec-lmp", "rrsisd", "test", 0)}))
    with pytest.raises(DataError, match=f"{path}: holds experiment 'dec-lmp', expected 'dec-oad'"):
        tables_of(inputs)


def test_the_shuffled_row_reads_only_a_shuffled_evaluation(inputs):
    path = metrics_path(inputs["metrics"], "full", "refsegrs", "val", 1, shuffled=True)
    report = json.loads(path.read_text())
    path.write_text(json.dumps({**report, "shuffle_expressions": False}))
    with pytest.raises(DataError, match=f"{path}: holds the model's metrics, not shuffled-expression ones"):
        tables_of(inputs)


def test_a_per_sample_csv_that_disagrees_with_its_json_is_refused(inputs):
    path = metrics_path(inputs["metrics"], "sd-1-1", "rrsisd", "test", 0)
    write_per_sample(path.with_suffix(".csv"), [f"rrsisd-{i}" for i in range(NUM_SAMPLES)], [(1, 2)] * NUM_SAMPLES)
    with pytest.raises(DataError, match=f"{path.with_suffix('.csv')} and {path} disagree on"):
        tables_of(inputs)


def test_a_label_without_a_paper_row_is_a_config_error(inputs):
    params = copy.deepcopy(inputs["params"])
    params["tables"]["table5"]["rows"][0]["label"] = "LMP [40]"
    with pytest.raises(ConfigError, match=r"tables\.table5: label\(s\) 'LMP \[40\]' match no decoder"):
        tables_of(inputs, params)


def test_a_control_row_with_a_paper_row_is_a_config_error(inputs):
    params = copy.deepcopy(inputs["params"])
    params["tables"]["table1"]["rows"][-1]["label"] = "VPD"
    with pytest.raises(ConfigError, match=r"tables\.table1: control row 'VPD' has a paper row"):
        tables_of(inputs, params)


def markdown_row(text: str, *first_cells: str) -> list[str]:
    """The cells of the first Markdown table line that starts with ``first_cells``."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[: len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no line starting with {first_cells}")


def test_comparison_gives_cell_deltas_intervals_and_says_mini_numbers_are_not_comparable(inputs):
    params = inputs["params"]
    tables_dir = inputs["root"] / "tables"
    for written in build_report(params, REFERENCE, inputs["metrics"], SCALE):
        write_tables(written, tables_dir)
    text = render_comparison(tables_dir, params, SCALE)
    assert "These numbers are not comparable to the paper" in text and "pipeline check" in text
    table1 = intervals_of(inputs)["table1-intervals"]
    val, test = (table1["DiffRIS (ours)", split, "oIoU"] for split in ("val", "test"))
    mean_val = expected_cell(params, "full", "rrsisd", "val", "oIoU")
    assert markdown_row(text, "DiffRIS (ours)", "full", "oIoU") == [
        "DiffRIS (ours)", "full", "oIoU",
        "76.84", f"{mean_val} ± {float(val['std']):.2f}", f"[{float(val['ci_low']):.2f}, {float(val['ci_high']):.2f}]",
        f"{round(float(mean_val) - 76.84, 2):+.2f}",
        "76.05", f"{expected_cell(params, 'full', 'rrsisd', 'test', 'oIoU')} ± {float(test['std']):.2f}",
        f"[{float(test['ci_low']):.2f}, {float(test['ci_high']):.2f}]",
        f"{round(float(expected_cell(params, 'full', 'rrsisd', 'test', 'oIoU')) - 76.05, 2):+.2f}",
    ]  # fmt: skip
    assert markdown_row(text, "w/o CP-adapter", "cp-none", "oIoU")[3] == "75.52"  # Table 1's convention
    sd12 = markdown_row(text, "SD-1-2", "sd-1-2", "mIoU")
    assert sd12[3] == "—" and sd12[4].startswith(expected_cell(params, "sd-1-2", "rrsisd", "test", "mIoU")) and sd12[6] == "—"
    assert markdown_row(text, "DiffRIS, shuffled expressions", "full (shuffled)", "oIoU")[3] == "—"
    assert "## Table 4 — CP-adapter components (RRSIS-D, test)" in text
    assert "not comparable" not in render_comparison(tables_dir, params, "paper")


def test_comparison_says_whether_the_papers_ablation_delta_is_resolvable(inputs):
    params = inputs["params"]
    tables_dir = inputs["root"] / "tables"
    for written in build_report(params, REFERENCE, inputs["metrics"], SCALE):
        write_tables(written, tables_dir)
    text = render_comparison(tables_dir, params, SCALE)
    line = intervals_of(inputs)["table6-intervals"]["baseline", "test", "oIoU"]
    low, high = float(line["delta_ci_low"]), float(line["delta_ci_high"])
    paper_delta = round(72.18 - 76.05, 2)
    cells = markdown_row(text, "baseline", "pcmrd-baseline", "test", "oIoU")
    assert cells[4:8] == [f"{paper_delta:+.2f}", f"{float(line['delta']):+.2f}", f"[{low:+.2f}, {high:+.2f}]", line["resolved"]]
    assert cells[8] == ("resolvable" if abs(paper_delta) > (high - low) / 2 else "within noise at this scale")
    assert markdown_row(text, "random", "random", "test", "mIoU")[4] == "—"  # no paper delta for a control
    assert "3 + hard assignment" not in [row.split("|")[1].strip() for row in text.split("Against the full model")[-1].splitlines() if row.startswith("|")]


def test_figures_are_written_without_software_tags(inputs):
    params = inputs["params"]
    tables_dir = inputs["root"] / "tables"
    for written in build_report(params, REFERENCE, inputs["metrics"], SCALE):
        write_tables(written, tables_dir)
    paths = write_figures(params, tables_dir, inputs["metrics"], inputs["data"], inputs["root"] / "figures")
    assert [p.name for p in paths] == ["fig5.png", "fig6.png", "fig7.png", "fig8.png", "assignment.png"]
    for path in paths:
        assert Image.open(path).size[0] > 0 and b"matplotlib" not in path.read_bytes()


def test_a_prediction_of_another_sample_is_refused(inputs):
    manifest = inputs["data"] / "refsegrs" / "test" / "manifest.jsonl"
    manifest.write_text(manifest.read_text().replace("refsegrs-2", "refsegrs-9"))
    with pytest.raises(DataError, match="00002.png: sample 2 of the evaluation is not sample 2"):
        write_figures(inputs["params"], inputs["root"], inputs["metrics"], inputs["data"], inputs["root"] / "figures")


def report_commands(inputs: dict, out: Path) -> list[list[str]]:
    metrics, tables, params = str(inputs["metrics"]), str(out / "tables"), str(inputs["params_file"])
    return [
        ["report-tables", "--reference", str(REFERENCE), "--metrics", metrics, "--out", tables, "--quiet",
         "--scale", SCALE, "--params", params],
        ["report-figures", "--tables", tables, "--metrics", metrics, "--data", str(inputs["data"]),
         "--out", str(out / "figures"), "--params", params],
        ["report-comparison", "--tables", tables, "--scale", SCALE, "--out", str(out / "comparison.md"), "--params", params],
    ]  # fmt: skip


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
    assert len(a) == 7 + 7 + 5 + 1  # tables, their intervals, figures (fig5-8, assignment), comparison
    assert a == b


def test_report_tables_reports_a_missing_file_in_one_line(inputs, tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    args = ["--reference", str(nowhere), "--metrics", str(inputs["metrics"]), "--out", str(tmp_path / "t"),
            "--scale", SCALE, "--params", str(inputs["params_file"])]  # fmt: skip
    assert main(["report-tables", *args]) == 2
    assert capsys.readouterr().err == f"diffris report-tables: error: {nowhere / 'table1.csv'}: missing\n"
