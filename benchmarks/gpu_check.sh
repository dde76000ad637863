#!/usr/bin/env bash
# The GPU latency table in one go (issue 23): run it from a source checkout on a machine with an
# NVIDIA GPU and a CUDA build of torch (pip install -e ".[models,plot]"; apple-upscale as a
# contender: pip install apple-upscale==0.1.1 --no-deps). Writes
# benchmarks/results/latency_cuda.md (the report names the GPU), latency_cuda.json and
# latency_cuda.png; commit them.
#
#   bash benchmarks/gpu_check.sh                # eager PyTorch on the GPU, both sides
#   COMPILE=1 bash benchmarks/gpu_check.sh      # also torch.compile columns (a compile per
#                                               # module and batch: much longer)
#   bash benchmarks/gpu_check.sh --reps 50      # further arguments go to latency.py
#
# Exports are made on the CPU (THREADS threads, default all cores) and moved to the GPU; each
# forward is timed with CUDA events after a warm-up, batches 1 and 8. Without a GPU it stops at
# once with a one-line message and exit code 2.
set -euo pipefail
cd "$(dirname "$0")/.."
compile=--no-compile
if [ "${COMPILE:-0}" = 1 ]; then compile=--compile; fi
exec python benchmarks/latency.py --device cuda \
    --models resnet18 resnet50 mobilenet_v2 efficientnet_b0 \
    --batches 1 8 --reps "${REPS:-30}" --threads "${THREADS:-$(nproc)}" "$compile" \
    --note "benchmarks/gpu_check.sh" "$@"
