#!/usr/bin/env bash
# The GPU benchmarks in one go, sized for one GPU: under 8 minutes for 1 and 2, at most 5 more for 3:
#   1. run-video's fast preset on 250 frames at 768x432 (random SD2-sized weights unless
#      CHECKPOINT names the real one): seconds, FLOPs and TFLOP/s per stage, peak GPU memory,
#      share of the device's peak; fp16 and bf16, torch.compile off and on;
#   2. the num_view 2 to 5 table (time, memory, attention tokens);
#   3. the host floor (benchmarks/bench_host.py): the same run with stand-ins for the models, on
#      CUDA, default outputs: what the host costs beside the models' seconds of step 1.
# Without CUDA it says so and exits 0.
#
#   bash benchmarks/gpu_suite.sh                     # results in benchmarks/results/gpu/
#   CHECKPOINT=/models/rollingdepth-v1-0 FRAMES=250 OUT_DIR=/tmp/gpu bash benchmarks/gpu_suite.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_suite: no CUDA device here (torch.cuda.is_available() is False); nothing to run"
    exit 0
fi
OUT_DIR=${OUT_DIR:-benchmarks/results/gpu}
FRAMES=${FRAMES:-250}
mkdir -p "$OUT_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT_DIR/gpu.txt"
python -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT_DIR/gpu.txt"
status=0
ckpt=()
[ -n "${CHECKPOINT:-}" ] && ckpt=(--checkpoint "$CHECKPOINT")
timeout 400 python benchmarks/bench_pipeline.py --cases sd2-cuda --frames "$FRAMES" --dtype fp16 bf16 \
    --compile off on "${ckpt[@]}" --out "$OUT_DIR" 2>&1 | tee "$OUT_DIR/bench_pipeline.log" || status=1
timeout 60 python benchmarks/compare_num_view.py --res 768 --frames 12 --dtype fp16 --num-views 2 3 4 5 \
    --backends sdpa --unet-batch-size 1 "${ckpt[@]/--checkpoint/-c}" --out "$OUT_DIR" 2>&1 | tee "$OUT_DIR/num_view.log" || status=1
timeout 300 python benchmarks/bench_host.py --frames "$FRAMES" --outputs default --device cuda \
    --json "$OUT_DIR/bench_host.json" 2>&1 | tee "$OUT_DIR/bench_host.log" || status=1
echo "gpu_suite: results in $OUT_DIR (exit $status)"
exit $status
