"""Start-up cost of `python -m diffris` by kind of command, and which heavy libraries each loads.

Every pipeline job is one `python -m diffris <command>` process, and the test suite starts hundreds
of them, so the seconds before a command does its work add up. Commands that never build a model
(reports, plans, exports, checks, data) must not import torch or diffusers; only the commands
that run a network pay for them. Each command below does real work on the committed results or on
a temporary folder (nothing in the repository is written)::

    python benchmarks/startup.py                 # 5 runs each: min and median wall time, libraries loaded
    python benchmarks/startup.py --repeats 1 --check   # the model-free commands only: exit 1 if one loads torch or diffusers

Run it alone on the machine: it measures wall time of whole processes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "pandas", "matplotlib")
# Runs one command through the CLI's own entry point, then reports which heavy libraries it loaded.
PROBE = (
    "import json, sys\n"
    "from diffris.cli import main\n"
    "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as done:  # --help\n    code = done.code\n"
    f"print(json.dumps({{'exit': code, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.stderr)\n"
)


def commands(tmp: Path) -> list[tuple[str, bool, list[str]]]:
    """(kind, needs torch, arguments) of one command of each kind."""
    mini = "results/mini"
    return [
        ("parser only (--help)", False, ["--help"]),
        ("plan", False, ["plan", "--scale", "paper"]),
        ("export-dvc", False, ["export-dvc", "--out", f"{tmp}/dvc.yaml", "--studies-out", f"{tmp}/studies-dvc.yaml"]),
        ("report-comparison", False, ["report-comparison", "--tables", f"{mini}/tables", "--out", f"{tmp}/comparison.md", "--scale", "mini"]),
        ("check-results", False, ["check-results", "--results", mini, "--reference", mini]),
        ("environment (asks torch about its kernels)", True, ["environment", "--out", f"{tmp}/environment.json"]),
        ("fetch (synthetic)", False, ["fetch", "--dataset", "refsegrs", "--scale", "ci", "--out", f"{tmp}/raw"]),
        ("fetch-weights (builds a model)", True, ["fetch-weights", "--backbone", "tiny-random", "--out", f"{tmp}/backbone"]),
    ]


def run_once(args: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"diffris {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stderr.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--check", action="store_true", help="time the model-free commands only; exit 1 if one loads torch or diffusers"
    )
    args = parser.parse_args()
    offenders = []
    print(f"{'command':44} {'min s':>6} {'median s':>8}  heavy libraries loaded")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, needs_torch, argv in commands(Path(tmp)):
            if needs_torch and args.check:
                continue
            times, loaded = [], []
            for _ in range(args.repeats):
                elapsed, probe = run_once(argv)
                times.append(elapsed)
                loaded = probe["loaded"]
            print(f"{kind:44} {min(times):6.2f} {statistics.median(times):8.2f}  {', '.join(loaded) or '-'}")
            if not needs_torch and {"torch", "diffusers"} & set(loaded):
                offenders.append(kind)
    if offenders:
        print(f"model-free commands that load torch or diffusers: {', '.join(offenders)}", file=sys.stderr)
    return 1 if args.check and offenders else 0


if __name__ == "__main__":
    sys.exit(main())
