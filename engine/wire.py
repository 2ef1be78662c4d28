"""
What travels between ranks: every MPI tag of the project, in one table, and the host buffers
that carry a model (ModelBuffer: a small int64 header followed by the parameters, in fp32 or,
with --transfer-dtype bfloat16, bf16; pinned for CUDA models), reused through a BufferPool.
"""
import numpy as np
import torch

# every MPI tag in the project; the values only need to differ
# the worker loops (distributed_training.py) and their progress counters (engine/progress.py)
TAG_WALK = 1       # a walk: header (walk id, visits done, hops made) and model
TAG_RETIRED = 2    # to rank 0: a walk retired here
TAG_STOP = 3       # from rank 0: the run is over
TAG_EXCHANGE = 4   # gossip: an active node's model, asking for the partner's
TAG_REPLY = 5      # gossip: the passive partner's model
TAG_DONE = 6       # gossip: an active node starts no more exchanges
TAG_STATS = 7      # to rank 0: progress counters (and "finished")
TAG_EVAL = 8       # to rank 0: an evaluation measured at another node
TAG_ALIVE = 9      # from rank 0: it is there (a peer silent for --stall-timeout is unreachable)
# checkpoint rounds (engine/checkpoint.py)
TAG_READY, TAG_SAVE, TAG_SAVED, TAG_RESUME = 21, 22, 23, 24
# fault reports and the counters of an interrupted run (engine/faults.py)
TAG_FAULT, TAG_FAULT_SEEN, TAG_COUNTERS, TAG_SUMMARY_WRITTEN = 31, 32, 33, 34

HEADER_WORDS = 3  # walk messages: (walk_id, visits done, hops made); exchange messages: unused


class ModelBuffer:
    """Host staging buffer of one model message: header, then the parameters."""
    def __init__(self, num_params, dtype, pin):
        itemsize = torch.empty((), dtype=dtype).element_size()
        self.raw = torch.empty(HEADER_WORDS * 8 + num_params * itemsize, dtype=torch.uint8, pin_memory=pin)
        self.params = self.raw[HEADER_WORDS * 8:].view(dtype)
        self.mpi = self.raw.numpy()
        self.header = self.mpi[:HEADER_WORDS * 8].view(np.int64)


class BufferPool:
    """Reuses model buffers: at most one per walk waiting at this node. Both threads take from it."""
    def __init__(self, num_params, dtype, pin):
        self.args, self.free = (num_params, dtype, pin), []

    def get(self):
        try:
            return self.free.pop()
        except IndexError:
            return ModelBuffer(*self.args)

    def put(self, buf):
        self.free.append(buf)

