"""Broken cross-references and duplicate keys in params.yaml are refused, with the key path of
the culprit, by the CLI and by Snakemake when it parses the Snakefile (before any planning)."""

from __future__ import annotations


import pytest
import yaml

from diffris.config import load_params
from diffris.errors import ConfigError

from conftest import REPO, ci_snakemake, copy_workflow, run_cli

PARAMS = (REPO / "params.yaml").read_text()

# (what is broken, text edit of params.yaml, key path the error must name)
BROKEN = {
    "table names an unknown experiment": (
        '- {label: "DiffRIS (ours)", experiment: full}', '- {label: "DiffRIS (ours)", experiment: fulll}',
        "tables.table1.rows.0.experiment: 'fulll' is not a key of `experiments`",
    ),
    "experiment names an unknown SD version": (
        "sd-1-1: {backbone: sd-1-1}", "sd-1-1: {backbone: sd-1-9}",
        "experiments.sd-1-1.backbone: 'sd-1-9' is not an SD version of `scales.mini.backbones`",
    ),
    "scale maps to an unknown backbone": (
        "sd-1-5: tiny-sd-1-5,", "sd-1-5: tiny-sd-9-9,",
        "scales.mini.backbones.sd-1-5: 'tiny-sd-9-9' is not a key of `backbones`",
    ),
    "a key given twice": ("      epochs: 12\n", "      epochs: 12\n      epochs: 3\n", "duplicate key 'epochs'"),
}  # fmt: skip


def broken_params(case: str) -> str:
    old, new, _ = BROKEN[case]
    assert PARAMS.count(old) >= 1, f"params.yaml changed: update the {case!r} case"
    return PARAMS.replace(old, new, 1)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_cli_names_the_key_path(tmp_path, case):
    path = tmp_path / "params.yaml"
    path.write_text(broken_params(case))
    with pytest.raises(ConfigError, match=BROKEN[case][2].replace("(", r"\(").replace(".", r"\.")):
        load_params(path)
    proc = run_cli("plan", "--params", path, check=False)
    assert proc.returncode == 2 and BROKEN[case][2] in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("broken-workflow"))


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_snakemake_refuses_before_planning(workflow, case):
    (workflow / "params.yaml").write_text(broken_params(case))
    proc = ci_snakemake(workflow, "-n", "--cores", "1")
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("diffris: error:")]
    assert len(errors) == 1 and BROKEN[case][2] in errors[0], proc.stderr[-2000:]
    assert "Building DAG" not in proc.stdout + proc.stderr


def test_unknown_experiment_on_the_command_line_names_its_key(tmp_path):
    proc = run_cli("describe-model", "--experiment", "dec-lnp", check=False)
    assert proc.returncode == 2 and "experiments.dec-lnp: no such experiment" in proc.stderr


def test_merge_keys_are_not_duplicates():
    params = load_params()  # scales.ci.train overrides keys of the merged mini budget
    assert params == yaml.safe_load(PARAMS)
