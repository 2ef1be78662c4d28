"""
How many cores a rank may use, its torch threads, and its device: one GPU per rank, chosen by
the rank's index among the ranks of its host; on CPUs, the ranks of a host share its cores.
"""
import os

import torch
from mpi4py import MPI


def cores_for_this_process():
    """CPU cores this process may use: its affinity, capped by a cgroup (v2) CPU quota (a container's limit)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()
        if quota != "max":
            cores = min(cores, max(1.0, int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return cores


def pick_device(cfg, comm):
    """One GPU per rank, chosen by the rank's index among the ranks of its host."""
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank, local_size = local.Get_rank(), local.Get_size()
    local.Free()
    if cfg["device"] == "cuda" or (cfg["device"] == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        return device
    torch.set_num_threads(cpu_threads(local_size))
    return torch.device("cpu")


def cpu_threads(ranks_on_host):
    """Torch threads of a CPU rank: the ranks share the cores this process may use, and a full
    thread pool each would oversubscribe them."""
    return max(1, int(cores_for_this_process()) // ranks_on_host)
