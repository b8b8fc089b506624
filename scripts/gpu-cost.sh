#!/usr/bin/env bash
# The paper-architecture cost of every variant of Tables 4-6 on a GPU (diffris measure-cost).
#
#   scripts/gpu-cost.sh            # SCALE, EXPERIMENTS, PYTHON, WARMUP, REPEATS may be set in the environment
#
# Parameters, FLOPs and the memory accounting are counted on the meta device, so
# results/<scale>/studies/cost-paper.csv comes out with the same bytes as on any CPU; the GPU adds
# the latency per image (batch 1, fp32, PyTorch's default TF32 for convolutions only) and the measured
# peak of one training step (torch.cuda.max_memory_allocated) in
# benchmarks/results/studies-cost-<scale>-paper-cuda.csv, which names the GPU. Budget: about 2
# minutes of counting (CPU) plus well under a minute of GPU work for the 10 variants, far below 8.
# Nothing else needs a GPU; CI never runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-mini}
EXPERIMENTS=${EXPERIMENTS:-cp-none,cp-global,cp-global-object,dec-lmp,dec-oad,dec-camd,pcmrd-baseline,pcmrd-multiscale,pcmrd-queries,full}
exec timeout 480 "${PYTHON:-python}" -m diffris measure-cost --scale "$SCALE" --architecture paper \
    --experiments "$EXPERIMENTS" --device cuda --warmup "${WARMUP:-3}" --repeats "${REPEATS:-20}" \
    --out "results/$SCALE/studies/cost-paper.csv" \
    --timings "benchmarks/results/studies-cost-$SCALE-paper-cuda.csv" \
    --figure "results/$SCALE/studies/cost-paper.png"
