"""results/reference/*.csv against the paper's own text: the tables and the numbers in the prose."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "results" / "reference"
PAPER = REPO.parent / "shared" / "paper" / "diffris-paper.txt"
NUMBER = r"(\d+\.\d+)"


@pytest.fixture(scope="module")
def paper() -> str:
    if not PAPER.exists():
        pytest.skip(f"the paper's text is not at {PAPER}")
    return PAPER.read_text(encoding="utf-8")


def reference(name: str) -> list[dict[str, str]]:
    with open(REFERENCE / f"{name}.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def by_key(name: str) -> dict[str, dict[str, str]]:
    rows = reference(name)
    key = next(iter(rows[0]))
    return {row[key]: row for row in rows}


def comparison_blocks(text: str) -> list[list[list[str]]]:
    """Runs of consecutive tab-separated lines with a name, two encoders and 14 numbers."""
    blocks, current = [], []
    for line in text.splitlines():
        cells = line.split("\t")
        if len(cells) == 17 and all(re.fullmatch(r"\d+(\.\d+)?", c) for c in cells[3:]):
            current.append(cells)
        elif current:
            blocks.append(current)
            current = []
    return blocks


def tab_table(text: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    """A tab-separated table of the text, from its header line to the first blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split("\t"))
    return lines[start].split("\t"), rows


@pytest.mark.parametrize("number", [1, 2, 3])
def test_tables_1_to_3_hold_every_printed_row_and_cell(paper, number):
    printed = comparison_blocks(paper)[number - 1]
    rows = reference(f"table{number}")
    assert [row["method"] for row in rows] == [re.sub(r"\[\d+\]$", "", cells[0]) for cells in printed]
    for row, cells in zip(rows, printed, strict=True):
        assert [row["visual_encoder"], row["text_encoder"]] == cells[1:3]
        values = [row[column] for column in list(row)[3:]]  # Pr@0.5 val, test, Pr@0.6 val, ... as printed
        assert [float(v) for v in values] == [float(c) for c in cells[3:]], row["method"]


def test_the_prose_quotes_match_tables_1_to_3(paper):
    """Sec. 4.2.1 quotes DiffRIS's Pr@0.5 on each dataset; this also places Table 3 (no caption)."""
    quotes = re.findall(
        rf"On the (\S+) dataset, .*?Pr@0\.5 values of {NUMBER} \(Val\) and {NUMBER} \(Test\)", paper
    )
    tables = {"RRSIS-D": "table1", "RefSegRS": "table2", "RISBench": "table3"}
    assert [q[0] for q in quotes] == list(tables)
    for dataset, val, test in quotes:
        row = by_key(tables[dataset])["DiffRIS (ours)"]
        assert (row["Pr@0.5_val"], row["Pr@0.5_test"]) == (val, test)
    miou = re.search(rf"in terms of mIoU, DiffRIS achieves {NUMBER} \(Val\) and {NUMBER} \(Test\)", paper)
    assert (
        by_key("table1")["DiffRIS (ours)"]["mIoU_val"],
        by_key("table1")["DiffRIS (ours)"]["mIoU_test"],
    ) == miou.groups()


@pytest.mark.parametrize("name, header", [("table5", "Decoder\t"), ("table6", "\tMethod\tmIoU")])
def test_tables_5_and_6_store_the_printed_iou_columns_swapped(paper, name, header):
    columns, printed = tab_table(paper, header)
    swap = {"mIoU": "oIoU", "oIoU": "mIoU"}
    rows = reference(name)
    assert len(rows) == len(printed)
    for row, cells in zip(rows, printed, strict=True):
        named = dict(zip(columns, cells, strict=True))
        label = named.get("Decoder") or named["Method"]
        assert list(row.values())[0] == re.sub(r" \[\d+\]$", "", label)
        for column in columns:
            if column.startswith(("Pr@", "mIoU", "oIoU")):
                assert row[swap.get(column, column)] == named[column], (label, column)


def test_table4_is_read_from_its_run_together_line_and_swapped(paper):
    line = next(line for line in paper.splitlines() if line.startswith("oIoU Method mIoU"))
    printed = re.findall(rf"(w/o CP-adapter|\d \+ [a-z -]+?) {NUMBER} {NUMBER}", line)
    rows = reference("table4")
    assert [(row["variant"], row["oIoU"], row["mIoU"]) for row in rows] == printed


def test_the_ablation_prose_confirms_the_swap(paper):
    cp = re.search(rf"CP-adapter is removed.*?a mIoU of {NUMBER}% and an oIoU of {NUMBER}%", paper)
    assert (
        by_key("table4")["w/o CP-adapter"]["oIoU"],
        by_key("table4")["w/o CP-adapter"]["mIoU"],
    ) == cp.groups()
    fusion = re.search(rf"increase of mIoU to {NUMBER}% and oIoU to {NUMBER}%", paper)
    row = by_key("table6")["1 + multi-scale fusion"]
    assert (row["oIoU"], row["mIoU"]) == fusion.groups()


def test_the_full_model_has_one_oiou_and_one_miou_everywhere(paper):
    """Table 1 (test), the last rows of Tables 4-6 and SD-1-5 of Fig. 8 are the same model."""
    table1 = by_key("table1")["DiffRIS (ours)"]
    full = [table1["oIoU_test"], table1["mIoU_test"]]
    assert full == ["76.05", "62.19"]
    for name in ("table4", "table5", "table6", "fig8"):
        last = reference(name)[-1]
        assert [last["oIoU"], last["mIoU"]] == full, name


def test_fig8_holds_only_the_numbers_the_text_states(paper):
    miou = re.search(
        rf"mIoU value for (SD-1-\d) reaches {NUMBER}%.*?(SD-1-\d), which attains only {NUMBER}%", paper
    )
    oiou = re.search(
        rf"oIoU score for (SD-1-\d) rises to {NUMBER}%, surpassing the {NUMBER}% of (SD-1-\d)", paper
    )
    stated = {
        miou[1]: {"mIoU": miou[2], "oIoU": oiou[2]},
        miou[3]: {"mIoU": miou[4], "oIoU": oiou[3]},
    }
    assert oiou[1] == miou[1] and oiou[4] == miou[3]
    rows = by_key("fig8")
    assert list(rows) == ["SD-1-1", "SD-1-2", "SD-1-4", "SD-1-5"]
    for backbone, row in rows.items():
        assert {"mIoU": row["mIoU"], "oIoU": row["oIoU"]} == stated.get(backbone, {"mIoU": "", "oIoU": ""})
