"""
One rank's context (Rank): its node, protocol, log, clock, and the helpers both of its threads
use: the lock around the protocol, the communication thread with its heartbeat and fault
handling, progress, evaluation, checkpoints, and fault injection (faults.Injection).
"""
import threading
import time

import torch

from core import algorithms
from engine import checkpoint
from engine import faults
from engine import supervisor
from engine.evaluator import Evaluator
from engine.progress import Progress
import models
import protocols


class Rank:
    """One rank's context: its node, protocol, log, clock and helpers. `lock` serializes every
    call into the protocol between the compute and the communication thread; it is a condition
    too: a gossip compute thread the protocol blocks waits on it, and the communication thread
    notifies it when the protocol reports an event that frees it (frees_compute)."""
    def __init__(self, comm, cfg, run, node, log, clock, resume, waker):
        self.comm, self.cfg, self.run, self.node, self.log, self.clock = comm, cfg, run, node, log, clock
        self.waker = waker
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        x0 = models.flatten_params(node.model)
        self.num_params = x0.numel()
        self.dtype, self.model_bytes = protocols.transfer_format(cfg, self.num_params)
        self.protocol = protocols.make_protocol(cfg, self.rank, run, x0, self.model_bytes, log,
                                                state=resume["protocol"] if resume else None)
        del x0  # the protocol holds its own copies; for OPT-125M this frees 0.5 GB
        self.lock = threading.Condition()
        self.stop = threading.Event()
        self.progress = Progress(comm, log, waker, cfg)
        # after failures another node evaluates, so every node can
        self.evaluator = (Evaluator(cfg, run, node, log, self.progress, clock)
                          if self.rank == 0 or cfg["failure_times"] else None)
        self.ckpt = checkpoint.Checkpointer(comm, cfg, clock, self.save_state, resume)
        if resume:
            checkpoint.restore_common(resume, node, log, self.evaluator)
        self.comm_thread, self.interrupted = None, None
        self.longest_update, self.injection = 0.0, faults.Injection(self.rank)

    def start_communication(self, target, *args):
        """The communication thread: it beats for the stall watchdog while it runs, an exception in
        it ends the job, and an interrupt ends it quietly (the compute thread stops the run)."""
        def run():
            supervisor.HEARTBEAT.beat()
            try:
                target(self, *args)
            except faults.Interrupted:
                pass
            except BaseException as error:
                faults.end_on_fault(self.comm, self.cfg, "mpi", error)
            finally:
                supervisor.HEARTBEAT.silent()
        self.comm_thread = threading.Thread(target=run, name="mpi", daemon=True)
        self.comm_thread.start()
        return self.comm_thread

    def halt(self, interrupted):
        """Compute thread, on an interrupt: stop the communication thread at its next poll."""
        self.interrupted = interrupted
        self.stop.set()
        if self.comm_thread is not None:
            self.comm_thread.join(timeout=faults.REPORT_TIMEOUT)

    def save_state(self):
        """The communication thread calls this while the compute thread is paused."""
        with self.lock:
            return dict(checkpoint.common_state(self.node, self.log, self.evaluator),
                        protocol=self.protocol.state_dict())

    def poll(self):
        """The communication thread's chores between messages: progress counters, evaluations
        measured elsewhere, failure events, faults other ranks report to rank 0.
        Returns True if it did something."""
        supervisor.HEARTBEAT.beat()
        self.injection.point("mpi")
        if self.interrupted:
            raise faults.Interrupted(self.interrupted.signum)
        busy = self.progress.poll()
        if self.rank == 0:
            busy |= faults.receive_fault(self.comm, self.cfg)
        for metrics, node in self.progress.reported_evals:
            self.evaluator.record(metrics, node=node)
        self.progress.reported_evals.clear()
        with self.lock:
            failures = self.protocol.pass_failures(self.clock())
            # the blocked compute may go on, or evaluation may have moved to this node: it looks again
            self.notify_if(failures.frees_compute or (failures.nodes and self.evaluator is not None))
        if self.rank == 0:
            for node in failures.nodes:
                print(f"{self.clock():8.1f}s | failure: {self.protocol.failure_message(node)}", flush=True)
        return busy

    def notify_if(self, frees_compute):
        """Communication thread, holding the lock: the protocol said an event freed the blocked compute."""
        if frees_compute:
            self.lock.notify_all()

    def evaluate_if_due(self):
        """Compute thread: evaluate the protocol's evaluated model if this node holds it and it is time.
        Returns the seconds until the next evaluation here (inf if this node does not evaluate now)."""
        if self.evaluator is None:
            return float("inf")
        with self.lock:
            model = self.protocol.evaluated_model(self.clock())
            snapshot = model.clone() if model is not None and self.evaluator.due() else None
        if snapshot is not None:
            self.evaluator.periodic(snapshot)
        return self.evaluator.seconds_to_next() if model is not None else float("inf")

    def local_update(self, params, lr):
        """tau local steps on `params` (in place); returns (loss, seconds it took)."""
        started = time.perf_counter()
        supervisor.HEARTBEAT.update_started(self.longest_update)
        self.injection.point("compute")
        loss = algorithms.local_update(self.node, params, self.cfg["tau"], lr)
        if self.node.device.type == "cuda":
            torch.cuda.synchronize(self.node.device)
        supervisor.HEARTBEAT.update_ended()
        duration = time.perf_counter() - started
        if self.rank == 0 and not self.longest_update:  # the last start-up phase: training runs
            print(f"[start] first local update done: {duration * 1000:.0f} ms "
                  f"({time.time() - self.run['started']:.1f} s)", flush=True)
        self.longest_update = max(self.longest_update, duration)
        return loss, duration

