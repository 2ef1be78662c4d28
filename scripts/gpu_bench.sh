#!/usr/bin/env bash
# The engine's rows on a machine with a GPU (issue #28's GPU rows), in about 8 minutes: every rank's
# model on the GPU (main.py's --device auto), walks staged through pinned host buffers unless the MPI
# is CUDA-aware. Prints the device, then bench.py's table and JSON line at 5 ms updates (the hop, MW-1
# and MW-4 against their bound, ResNet-20's real update time in its real-compute rows), then a hop's
# steps (bench/trace_hop.py). The figures are the closing note's; nothing here passes or fails.
#     bash scripts/gpu_bench.sh
set -eu
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
python -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device: CPU rows')"
python bench/bench.py --compute 0.005 --walks 1 4 --no-gossip --hop-pairs 3 --hop-time 5 --train-time 10 \
    --real resnet20 --real-walks 1 4 --real-time 10 --idle-time 0 --out runs/gpu_bench
python bench/trace_hop.py --out runs/gpu_bench/trace_hop
