#!/usr/bin/env bash
# The checks that need a GPU, on a machine with one, in under 8 minutes:
#   mpi_mw, mpi_gossip: the MPI engine's CUDA path (4 ranks on the GPU, ResNet-20 on a tiny generated CIFAR folder)
#   sim_batched:        the simulator's batched local updates on ResNet-20 (bench_sim.py: same events as sequential)
#   opt125m_update:     one local update of an OPT-125M-shaped model (random weights, no download)
# One line per check, "ok CHECK SECONDS" or "FAIL CHECK: REASON"; exit status 1 if any failed.
#     bash scripts/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "FAIL gpu: torch sees no CUDA device on this machine"
    exit 1
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
work=$(mktemp -d)
export work
trap 'rm -rf "$work"' EXIT
failed=0

# check NAME SECONDS_LIMIT COMMAND: runs the command line (functions exported to it), prints the
# check's line; the reason for a failure is the command's last line of output
check() {
    local name=$1 limit=$2 command=$3 started=$EPOCHREALTIME output
    if output=$(timeout "$limit" bash -c "$command" 2>&1); then
        echo "ok $name $(python -c "print(f'{$EPOCHREALTIME - $started:.1f}')")"
    else
        local status=$?
        local reason=$(printf '%s\n' "$output" | grep -v '^\s*$' | tail -n 1)
        [ "$status" = 124 ] && reason="timed out after ${limit}s"
        echo "FAIL $name: ${reason:-exit status $status}"
        failed=1
    fi
}

python -c "from tasks import cifar10_files; cifar10_files.write_cifar_folder('$work/cifar', images_per_batch=256)"

mpi_run() {  # ALGORITHM FLAGS...: 5 s of a 4-rank run on the GPU, then its summary must count updates
    local out=$work/$1
    shift
    mpirun -n 4 python main.py --device cuda --task cifar10 --data-dir "$work/cifar" --train-time 5 \
        --eval-interval 5 --eval-samples 256 --out "$out" "$@" &&
    python -c "import json, sys; s = json.load(open('$out/summary.json')); \
sys.exit(0 if s['iterations'] > 0 else 'no local update in the summary')"
}
export -f mpi_run
check mpi_mw 120 "mpi_run mw --algorithm mw --walks 2"
check mpi_gossip 120 "mpi_run gossip --algorithm gossip"

check sim_batched 150 "python bench/bench_sim.py --resnet --nodes 8 --iterations 80 --threads 1 --dists fixed"

check opt125m_update 120 "python -" <<'PY'
import math
import torch
from transformers import OPTConfig, OPTForCausalLM
from core import algorithms
from tasks import multinli
import models

# OPT-125M's shapes (facebook/opt-125m config.json), random weights
config = OPTConfig(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12,
                   max_position_embeddings=2048, word_embed_proj_dim=768)
torch.manual_seed(0)
device = torch.device("cuda")
model = OPTForCausalLM(config).to(device)


class RandomTokens:
    def __init__(self):
        self.generator = torch.Generator().manual_seed(0)

    def next_batch(self):
        tokens = torch.randint(0, config.vocab_size, (8, 128), generator=self.generator)
        return tokens, tokens.clone()


node = algorithms.Node(0, model, torch.optim.Adam(model.parameters(), lr=1e-5), RandomTokens(), multinli.lm_loss, device)
params = models.flatten_params(model)
before = params.clone()
loss = algorithms.local_update(node, params, 2, 1e-5)
torch.cuda.synchronize()
assert math.isfinite(loss), f"loss {loss}"
assert not torch.equal(params, before), "the update changed no parameter"
PY

exit $failed
