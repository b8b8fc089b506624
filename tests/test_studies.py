"""The studies beside the tables: their job lists, the model options they add, and the report of
the rows-of-experiments studies (Gumbel temperature, loss, order of the ablations)."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch

from diffris.config import load_params
from diffris.errors import ConfigError
from diffris.models.config import LossConfig, config_from_params
from diffris.models.loss import SegmentationLoss, dice_loss
from diffris.config import runs, seeds
from diffris.report.intervals import RowEvaluations, read_per_sample, resample_indices
from diffris.studies import plan
from diffris.studies.variants import ORDER_CONTRASTS, contrast, study_table
from report_fakes import SCALE, report_params, write_evaluation


def test_a_study_experiment_with_a_tables_model_reuses_that_run_and_its_seeds():
    params = load_params()
    assert plan.trained_as(params, "mini", "tau-0p1") == "full"  # tau 0.1 learnable is the full model
    assert plan.trained_as(params, "mini", "loss-ce-dice") == "full"  # mini's full model trains with CE + Dice
    assert plan.trained_as(params, "paper", "loss-ce") == "full"  # the paper scale's full model: weighted CE
    assert plan.trained_as(params, "paper", "loss-ce-dice") == "loss-ce-dice"
    assert plan.trained_as(params, "mini", "tau-0p5") == "tau-0p5"
    new = plan.new_runs(params, "mini")
    assert not set(new) & set(runs(params))
    assert {r.experiment for r in new} == {
        "tau-0p05", "tau-0p5", "tau-1p0", "tau-0p05-fixed", "tau-0p1-fixed", "tau-0p5-fixed", "tau-1p0-fixed",
        "loss-ce", "loss-dice", "cp-none-pcmrd-baseline",
    }  # fmt: skip
    assert plan.touching_runs(params, "mini")["hard"] == [plan.StudyRun("full", "rrsisd", s) for s in seeds(params, "mini", "full")]


def test_per_scale_study_settings_merge_into_the_study_and_a_typo_is_named():
    params = load_params()
    assert plan.study_settings(params, "ci")["touching"]["per_bin"] == 2
    assert plan.study_settings(params, "mini")["touching"]["per_bin"] == params["studies"]["touching"]["per_bin"]
    broken = copy.deepcopy(params)
    broken["scales"]["ci"]["studies"]["touching"] = {"per_bins": 3}
    with pytest.raises(ConfigError, match=r"scales\.ci\.studies\.touching\.per_bins: unknown key"):
        plan.study_settings(broken, "ci")


def test_fixed_temperature_is_not_trained_and_learnable_is():
    params = load_params()
    from diffris.models.pcmrd import OAQIL

    for experiment, trainable in (("tau-0p5-fixed", False), ("tau-0p5", True)):
        config = config_from_params(params, experiment, "mini")
        layer = OAQIL(config.pcmrd, text_dim=32, visual_dim=32)
        assert layer.log_tau.requires_grad is trainable
        assert float(layer.tau.detach()) == pytest.approx(0.5)


def test_the_loss_weights_select_cross_entropy_dice_or_both():
    torch.manual_seed(0)
    logits, masks = torch.randn(2, 2, 8, 8), torch.rand(2, 8, 8) > 0.5
    ce = torch.nn.functional.cross_entropy(logits, masks.long(), weight=torch.tensor([0.9, 1.1]))
    dice = dice_loss(logits, masks.long())
    value = {w: float(SegmentationLoss(LossConfig((0.9, 1.1), *w))(logits, masks)) for w in ((1.0, 0.0), (0.0, 1.0), (1.0, 1.0))}
    assert value[1.0, 0.0] == float(ce) and value[0.0, 1.0] == float(dice) and value[1.0, 1.0] == float(ce + dice)
    params = load_params()
    params["experiments"]["nothing"] = {"loss": {"ce_weight": 0.0, "dice_weight": 0.0}}
    with pytest.raises(ConfigError, match="ce_weight and dice_weight are both 0"):
        config_from_params(params, "nothing", "mini")


@pytest.fixture
def study_metrics(tmp_path):
    """Fake evaluations of every run the mini studies read, two seeds each."""
    params = report_params()
    for ev in plan.study_evaluations(params, SCALE):
        for seed in seeds(params, SCALE, ev.experiment):
            write_evaluation(tmp_path / ev.experiment / ev.dataset / f"seed{seed}" / f"{ev.split}.json", ev.experiment, ev.dataset, ev.split, seed, False)
    return params, tmp_path


def test_a_study_row_holds_the_mean_over_seeds_its_interval_and_its_delta_to_the_reference(study_metrics):
    params, metrics = study_metrics
    table = study_table(params, SCALE, "loss", metrics)
    lines = {(r["dataset"], r["label"], r["metric"]): r for r in table.rows}
    assert {r["dataset"] for r in table.rows} == {"refsegrs", "rrsisd"}
    dice = lines["rrsisd", "Dice", "mIoU"]
    values = [json.loads((metrics / "loss-dice/rrsisd" / f"seed{s}/test.json").read_text())["metrics"]["mIoU"] for s in (0, 1)]
    assert float(dice["mean"]) == pytest.approx(np.mean(values), abs=1e-4) and dice["seeds"] == "2"
    assert float(dice["ci_low"]) <= float(dice["mean"]) <= float(dice["ci_high"])
    reference = lines["rrsisd", "weighted CE", "mIoU"]
    assert reference["experiment"] == "loss-ce" and reference["delta"] == ""
    assert float(dice["delta"]) == pytest.approx(float(dice["mean"]) - float(reference["mean"]), abs=2e-4)
    assert lines["rrsisd", "weighted CE + Dice", "mIoU"]["experiment"] == "full"  # trained once, as the table's run


def test_the_order_study_reports_each_gain_and_their_interaction(study_metrics):
    params, metrics = study_metrics
    table = study_table(params, SCALE, "order", metrics)
    contrasts = {r["label"]: r for r in table.rows if r["metric"] == "mIoU" and r["mean"] == ""}
    cells = {r["label"]: float(r["mean"]) for r in table.rows if r["metric"] == "mIoU" and r["mean"]}
    off_base, on_base, off_full, on_full = (cells[row["label"]] for row in params["studies"]["order"]["rows"])
    gain_base, gain_full, interaction = (float(contrasts[label]["delta"]) for label, _ in ORDER_CONTRASTS)
    assert gain_base == pytest.approx(on_base - off_base, abs=2e-4) and gain_full == pytest.approx(on_full - off_full, abs=2e-4)
    assert interaction == pytest.approx(gain_full - gain_base, abs=3e-4)
    for row in contrasts.values():
        assert float(row["delta_ci_low"]) <= float(row["delta"]) <= float(row["delta_ci_high"])


def test_a_contrast_of_identical_rows_is_zero_with_a_zero_interval(study_metrics):
    params, metrics = study_metrics
    csv_path = metrics / "full/rrsisd/seed0/test.csv"
    samples = read_per_sample(csv_path)
    row = RowEvaluations(({key: 0.0 for key in ("mIoU",)},), (samples,))
    assert contrast([row] * 4, (1, -1, -1, 1), resample_indices(len(samples)), "mIoU") == (0.0, 0.0, 0.0)


def test_the_temperature_study_lists_the_assignment_diagnostics_per_stage(study_metrics):
    params, metrics = study_metrics
    for path in metrics.rglob("*.json"):  # evaluate records the diagnostics of a PCMRD with query tokens
        report = json.loads(path.read_text())
        report["assignment"] = {f"stage{k}": {"tokens_used": 3.0 + k, "entropy": 0.5, "agreement": 1.0, "tau": 0.1} for k in (1, 2, 3)}
        path.write_text(json.dumps(report))
    table = study_table(params, SCALE, "gumbel-tau", metrics)
    tokens = [r for r in table.rows if r["metric"] == "stage2 tokens_used"]
    assert len(tokens) == len(params["studies"]["gumbel-tau"]["rows"])
    assert all(r["mean"] == "5.0000" and r["ci_low"] == "" for r in tokens)


def test_report_study_writes_the_csv_and_figure_and_names_a_missing_evaluation(study_metrics, tmp_path):
    from diffris.studies.variants import write_study

    params, metrics = study_metrics
    paths = write_study(params, SCALE, "gumbel-tau", metrics, tmp_path / "out")
    with open(paths[0], newline="") as f:
        assert next(csv.reader(f))[:5] == ["dataset", "split", "label", "experiment", "metric"]
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (metrics / "tau-0p5/rrsisd/seed0/test.json").unlink()
    from diffris.errors import DataError

    with pytest.raises(DataError, match=r"tau-0p5/rrsisd/seed0/test\.json: missing"):
        study_table(params, SCALE, "gumbel-tau", metrics)


def test_a_run_saved_before_the_study_options_loads_with_the_behaviour_it_was_trained_with():
    from dataclasses import asdict

    from diffris.models.config import saved_model_config

    config = config_from_params(load_params(), "full", "mini")
    saved = asdict(config)
    del saved["pcmrd"]["tau_learnable"], saved["loss"]["ce_weight"]  # a config.json written before they existed
    assert saved_model_config(saved) == config


def test_an_experiment_name_with_a_dot_is_refused_because_dvc_would_read_it_as_nesting():
    from diffris.config import validate_params

    params = load_params()
    params["experiments"]["tau-0.05"] = params["experiments"].pop("tau-0p05")
    with pytest.raises(ConfigError, match=r"experiments: 'tau-0\.05' does not match"):
        validate_params(params)


def test_a_study_naming_an_unknown_experiment_is_one_line_naming_the_key(tmp_path):
    from conftest import run_cli
    from report_fakes import write_params

    params = load_params()
    params["studies"]["order"]["rows"][0]["experiment"] = "cp-nothing"
    proc = run_cli("export-dvc", "--params", write_params(params, tmp_path / "params.yaml"), "--out", tmp_path / "dvc.yaml", check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "studies.order.rows.0.experiment: 'cp-nothing' is not a key of `experiments`" in proc.stderr
