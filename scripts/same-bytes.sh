#!/usr/bin/env bash
# Is a change a pure move? Build the test-sized `ci` suite and its studies (every rule: fetch,
# prepare, pretrain, fetch-weights, cache-features, train, evaluate, report, the studies' jobs) with
# the code of REV and with the code of the work tree, each in a fresh folder and both from the work
# tree's params.yaml, and compare every file they write, byte for byte.
#
#   scripts/same-bytes.sh [REV]      # REV: default HEAD; run from the repository root with .venv set up
#
# Exit 0 when every output file is identical. Logs, Snakemake's records and benchmark files are
# left out (times and hosts), and so are the two machine-dependent fields of each run's log.jsonl
# (samples/s, peak memory): the rest of every log record is compared.
set -euo pipefail
rev=${1:-HEAD}
root=$(pwd)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/old-src" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
export PATH="$root/.venv/bin:$PATH"

git worktree add --detach "$work/old-src" "$rev" >/dev/null
build() {  # build SRC DEST: the workflow and code of SRC, with the work tree's params, built in DEST
    mkdir -p "$2/results"
    for name in Snakefile workflow profiles diffris; do cp -r "$1/$name" "$2/"; done
    cp "$root/params.yaml" "$2/"
    cp -r "$1/results/reference" "$2/results/"
    (cd "$2" && snakemake --cores 2 all studies --config scale=ci >"$work/$(basename "$2").log" 2>&1) ||
        { echo "the ci build in $2 failed; its log:"; tail -30 "$work/$(basename "$2").log"; exit 2; }
}
echo "building ci with $rev ..."
build "$work/old-src" "$work/old"
echo "building ci with the work tree ..."
build "$root" "$work/new"

python - "$work/old" "$work/new" <<'EOF'
import json, sys
from pathlib import Path

old, new = map(Path, sys.argv[1:])
SKIP = ("logs/", ".snakemake/", "benchmarks/", "diffris/", "workflow/", "profiles/")
TIMING = {"samples_per_s", "peak_mem_mb"}  # the only machine-dependent fields of a log record

def files(root):
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}

def content(path):
    if path.name == "log.jsonl":
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [{k: v for k, v in r.items() if k not in TIMING} for r in records]
    return path.read_bytes()

a, b = files(old), files(new)
outputs = sorted(f for f in a | b if not f.startswith(SKIP) and f not in ("Snakefile", "params.yaml"))
only = [f for f in outputs if (f in a) != (f in b)]
differ = [f for f in outputs if f in a and f in b and content(old / f) != content(new / f)]
for f in only:
    print(f"only in {'old' if f in a else 'new'}: {f}")
for f in differ:
    print(f"differs: {f}")
print(f"{len(outputs) - len(only) - len(differ)} of {len(outputs)} output files identical")
sys.exit(1 if only or differ else 0)
EOF
