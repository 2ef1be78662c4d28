"""
Checkpoints of a running asynchronous job, and resuming from them
(--checkpoint-every SECONDS, --resume DIR).

An asynchronous run never has a moment at which every rank is idle by itself:
walks are in flight, gossip exchanges are half done. So a checkpoint is a
consistent cut the ranks agree on, in numbered rounds, over small messages:

 1. At each multiple of checkpoint_every (each rank's own clock, before
    train_time), the compute thread finishes its current local update and
    pauses. MW walks that arrive meanwhile stay parked in the rank's queue;
    active gossip nodes start no new exchange (a passive node's exchange in
    progress always ends, because its active partner waits for the reply).
    The rank then tells rank 0 READY with the number of walks parked there,
    again whenever that number changes.
 2. Rank 0 waits until every rank is READY and the parked walks add up to
    the walks that have not retired: then no walk is in flight and none is
    computing. It sends SAVE to every rank.
 3. Every rank writes DIR/checkpoint/round{k}/rank{r}.pt and answers SAVED.
 4. When all have saved, rank 0 writes DIR/checkpoint/latest.json (round,
    elapsed time) and sends RESUME with the next checkpoint time. latest.json is
    the only file --resume trusts, so a round cut short by a crash is never
    loaded; each rank deletes its file of the round before.

A rank's file holds everything it needs to go on: the node (model with its
BatchNorm buffers, optimizer state, batch stream), the event log's counters and
length, RNG states, the evaluation and failure schedules, and the algorithm's
state, which its protocol object gives (protocols.py, state_dict: MW: the parked
walks with their headers, the aggregator's x, snapshots and joined walks, the
retirement count and the retired walks; gossip: the live model, the local updates
done, the partner RNG; both: the failures logged). The clock keeps running while a checkpoint is taken.

--resume DIR re-reads DIR/config.json (config.resumed_config), loads every rank's
file of the latest round, cuts each event log back to its length at the
checkpoint, restarts the clock at the saved elapsed time (the time-based LR
schedule, evaluations, failures and budget go on from there) and continues,
appending to the logs. Every rank reads DIR itself: on several hosts, DIR must be
on a shared file system (or copied to the same path on every host).
"""
import json
import math
import os
import shutil
import threading

import numpy as np
import torch
from mpi4py import MPI

from core.events import remove_quietly, write_json_atomically
from engine.wire import TAG_READY, TAG_RESUME, TAG_SAVE, TAG_SAVED


class CheckpointError(ValueError):
    """A missing or unreadable checkpoint; the message is one line."""


class Checkpointer:
    """One rank's side of the checkpoint rounds; rank 0 also coordinates them.

    The compute thread calls due(), seconds_to_next(), pause() and compute_finished();
    the communication thread calls poll() between its other work, and saves the state
    (save_state(), the engine's) while the compute thread is paused."""

    def __init__(self, comm, cfg, clock, save_state, resume=None):
        self.comm, self.rank, self.size, self.clock = comm, comm.Get_rank(), comm.Get_size(), clock
        self.folder = os.path.join(cfg["out"], "checkpoint")
        self.every, self.train_time = cfg["checkpoint_every"], cfg["train_time"]
        self.save_state = save_state
        if resume:
            self.round = resume["meta"]["round"] + 1
            self.next_time = self.next_time_after(resume["meta"]["elapsed"])
        else:
            self.round = 0
            self.next_time = self.next_time_after(0.0)
            if self.rank == 0:  # a fresh run in an old folder must never resume the old run's checkpoints
                shutil.rmtree(self.folder, ignore_errors=True)
        self.compute_idle = threading.Event()  # the compute thread is paused, or has finished for good
        self.finished = False
        self.resumed = threading.Event()
        self.ready_sent = None  # walks parked here as last reported to rank 0 this round
        self.requests = []      # (request, buffer) of messages being sent
        self.incoming = np.zeros(2, dtype=np.float64)
        self.ready, self.saved, self.saving = {}, set(), False  # rank 0: this round's READY and SAVED ranks

    def next_time_after(self, t):
        if not self.every:
            return math.inf
        candidate = self.every * (math.floor(t / self.every) + 1)
        return candidate if candidate < self.train_time else math.inf

    # --- compute thread
    def due(self):
        """This rank's clock has reached the next checkpoint: a round is under way."""
        return self.clock() >= self.next_time

    def seconds_to_next(self):
        return max(0.0, self.next_time - self.clock())

    def pause(self, stop=None):
        """Wait here until the round's checkpoint is written (or the run is stopped)."""
        self.compute_idle.set()
        while not self.resumed.wait(0.05):
            if stop is not None and stop.is_set():
                break
        self.resumed.clear()
        self.compute_idle.clear()

    def compute_finished(self):
        """The compute thread is done for this run: it counts as paused from now on."""
        self.finished = True
        self.compute_idle.set()

    # --- communication thread
    def poll(self, parked=0, unretired=0):
        """parked: walks waiting at this rank. unretired (rank 0, MW): walks not retired yet,
        all of which must be parked somewhere before the cut. Returns True if it did something."""
        if not self.every:  # no checkpoints in this run: nothing is ever sent
            return False
        self.requests = [(r, b) for r, b in self.requests if not r.Test()]
        busy = False
        if self.due() and self.compute_idle.is_set() and self.ready_sent != parked:
            self.ready_sent = parked
            self.to_root(TAG_READY, parked)
            busy = True
        if self.rank == 0:
            return self.coordinate(unretired) or busy
        status = MPI.Status()
        if self.comm.Iprobe(0, TAG_SAVE, status):
            self.comm.Recv(self.incoming, 0, TAG_SAVE)
            self.save()
            self.to_root(TAG_SAVED, 0)
            busy = True
        if self.comm.Iprobe(0, TAG_RESUME, status):
            self.comm.Recv(self.incoming, 0, TAG_RESUME)
            self.resume(self.incoming[1])
            busy = True
        return busy

    def send(self, dest, tag, value):
        buf = np.array([self.round, value], dtype=np.float64)
        self.requests.append((self.comm.Isend(buf, dest, tag), buf))

    def to_root(self, tag, value):
        if self.rank != 0:
            self.send(0, tag, value)
        elif tag == TAG_READY:
            self.ready[0] = value
        else:
            self.saved.add(0)

    def coordinate(self, unretired):
        status, busy = MPI.Status(), False
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_READY, status):
            self.comm.Recv(self.incoming, status.Get_source(), TAG_READY)
            if int(self.incoming[0]) == self.round and not self.saving:
                self.ready[status.Get_source()] = int(self.incoming[1])
            busy = True
        while self.comm.Iprobe(MPI.ANY_SOURCE, TAG_SAVED, status):
            self.comm.Recv(self.incoming, status.Get_source(), TAG_SAVED)
            self.saved.add(status.Get_source())
            busy = True
        if not self.saving and len(self.ready) == self.size and sum(self.ready.values()) == unretired:
            # every rank paused and every live walk parked: nothing in flight, a consistent cut
            self.saving, self.elapsed = True, self.clock()
            for dest in range(1, self.size):
                self.send(dest, TAG_SAVE, self.elapsed)
            self.save()
            self.to_root(TAG_SAVED, 0)
            busy = True
        if self.saving and len(self.saved) == self.size:
            meta = dict(round=self.round, elapsed=self.elapsed, nodes=self.size)
            write_json_atomically(os.path.join(self.folder, "latest.json"), meta)
            next_time = self.next_time_after(self.clock())
            for dest in range(1, self.size):
                self.send(dest, TAG_RESUME, next_time)
            self.resume(next_time)
            busy = True
        return busy

    def save(self):
        folder = os.path.join(self.folder, f"round{self.round}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"rank{self.rank}.pt")
        try:
            torch.save(self.save_state(), path + ".tmp")
            os.replace(path + ".tmp", path)
        except BaseException as e:
            remove_quietly(path + ".tmp")  # a full disk leaves no partial checkpoint behind
            if isinstance(e, (OSError, RuntimeError)):  # torch reports a failed write as a RuntimeError
                raise OSError(f"writing {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            raise

    def resume(self, next_time):
        previous = os.path.join(self.folder, f"round{self.round - 1}", f"rank{self.rank}.pt")
        if os.path.exists(previous):  # latest.json names the new round already
            os.remove(previous)
            try:
                os.rmdir(os.path.dirname(previous))  # the last rank to delete its file removes the folder
            except OSError:
                pass
        self.round += 1
        self.ready_sent, self.ready, self.saved, self.saving = None, {}, set(), False
        self.next_time = next_time
        self.resumed.set()


# -----------------------------------------------------------------------------
# what every rank saves besides its algorithm's state

def common_state(node, log, evaluator):
    return dict(model=node.model.state_dict(), optimizer=node.optimizer.state_dict(),
                batches=node.batches.state_dict(), counters=dict(log.counters), log_offset=log.offset(),
                torch_rng=torch.get_rng_state(),
                cuda_rng=torch.cuda.get_rng_state(node.device) if node.device.type == "cuda" else None,
                eval_next_time=evaluator.next_time if evaluator else None)


def restore_common(state, node, log, evaluator):
    node.model.load_state_dict(state["model"])
    node.optimizer.load_state_dict(state["optimizer"])
    node.batches.load_state_dict(state["batches"])
    log.counters.update(state["counters"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and node.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], node.device)
    if evaluator and state["eval_next_time"] is not None:
        evaluator.next_time = state["eval_next_time"]


def check_not_finished(cfg):
    """--resume of a run that finished runs it again only if its budget was raised: otherwise it would
    redo the end from the last checkpoint and replace the final summary."""
    try:
        with open(os.path.join(cfg["resume"], "summary.json")) as f:
            complete = json.load(f).get("complete") is True
        with open(os.path.join(cfg["resume"], "config.json")) as f:
            before = json.load(f)
    except (OSError, ValueError, AttributeError):  # no final summary to protect
        return
    raised = cfg["train_time"] > before.get("train_time", 0) or (
        before.get("max_iterations") and not 0 < cfg["max_iterations"] <= before["max_iterations"])
    if complete and not raised:
        raise CheckpointError(f"--resume {cfg['resume']}: the run there is complete; raise --train-time or "
                              f"--max-iterations to continue it")


def load(cfg, rank):
    """This rank's state in the latest complete checkpoint of cfg["resume"], with the
    round's metadata under "meta"; a CheckpointError says what is missing."""
    check_not_finished(cfg)
    folder = os.path.join(cfg["resume"], "checkpoint")
    latest = os.path.join(folder, "latest.json")
    if not os.path.isfile(latest):
        raise CheckpointError(f"--resume {cfg['resume']}: no checkpoint there ({latest} is missing); "
                              f"a run writes checkpoints with --checkpoint-every SECONDS")
    try:
        with open(latest) as f:
            meta = json.load(f)
        meta = dict(round=int(meta["round"]), elapsed=float(meta["elapsed"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{latest} is unreadable: {type(e).__name__}: {e}") from None
    # messages name no rank: main.py prints each distinct message once, with the ranks it came from
    where = os.path.join(folder, f"round{meta['round']}")
    path = os.path.join(where, f"rank{rank}.pt")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {where} has no file for this rank")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign file: one line naming it, whatever torch raises (it varies)
        # one message for every rank whose file is bad: main.py names those ranks when not all of them
        raise CheckpointError(f"checkpoint file {os.path.join(where, 'rank<N>.pt')} of rank N is unreadable "
                              f"(truncated or not a checkpoint); remove {where} to resume from the round before it") from None
    events = os.path.join(cfg["resume"], f"events-rank{rank}.jsonl")
    if not os.path.isfile(events) or os.path.getsize(events) < state["log_offset"]:
        raise CheckpointError(f"the event log of this rank in {cfg['resume']} is missing or shorter than at "
                              f"the checkpoint; cannot append to it")
    state["meta"] = meta
    return state
