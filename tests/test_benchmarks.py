"""The throughput benchmark runs end to end at the test-sized scale (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_benchmark_prints_naive_optimised_and_their_ratio(tmp_path):
    out = tmp_path / "results.json"
    cmd = [
        sys.executable, "benchmarks/throughput.py", "--scale", "ci", "--random-backbone", "tiny-random",
        "--experiments", "cp-none", "--unet-taps", "--batch-size", "2", "--steps", "1", "--warmup", "0",
        "--no-isolate", "--no-memory-per-sample", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("device: cpu") or lines[0].startswith("device: cuda")
    assert lines[1].split() == ["experiment", "metric", "naive", "optimised", "ratio"]
    train = next(line.split() for line in lines if line.startswith("cp-none") and "train samples/s" in line)
    results = json.loads(out.read_text())
    fast = results["experiments"]["cp-none"]["optimised"]
    rate = fast["train_samples_per_s"] / results["experiments"]["cp-none"]["naive"]["train_samples_per_s"]
    assert float(train[-1]) == float(f"{rate:.3g}")  # the ratio column: optimised / naive
    assert fast["settings"]["features"] and fast["settings"]["unet_taps"]
    assert not any(results["experiments"]["cp-none"]["naive"]["settings"].values())
