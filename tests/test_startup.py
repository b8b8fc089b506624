"""Commands that build no model start without torch or diffusers (benchmarks/startup.py)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_model_free_commands_load_neither_torch_nor_diffusers():
    cmd = [sys.executable, "benchmarks/startup.py", "--repeats", "1", "--check"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    kinds = [line.split("  ")[0] for line in proc.stdout.splitlines()[1:]]
    assert {"plan", "export-dvc", "check-results", "report-comparison"} <= set(kinds)
