"""
Periodic test evaluation beside training, at the node that evaluates (Evaluator).
"""
import contextlib
import copy
import threading

import torch

from core import algorithms
from core.events import progress_line, record_eval, write_summary
from engine import faults
import models


class Evaluator:
    """Periodic test evaluation at the node that evaluates: node 0, or after failures the
    node evaluation moved to (SEMANTICS.md §6). That node measures; rank 0 records every result
    (the eval event, the progress line, the provisional summary), so the curve stays in
    one log with rank 0's live totals. The evaluated model keeps the label "node0";
    the `node` field says where it was measured once that is not node 0.
    --eval-logged-at snapshot (the authors, who plot an evaluation at its start): rank 0's own
    evaluations are logged at the time their snapshot was taken, with the network's iterations and
    bytes of that moment; end: when the result is in, with the totals then (crediting the point
    with what the network did while it was evaluated). Evaluations another node measured (after
    failures) are logged when rank 0 receives them."""
    def __init__(self, cfg, run, node, log, progress, clock):
        """progress: this rank's Progress (rank 0 reads the network's totals from it)."""
        self.cfg, self.run, self.node, self.log, self.progress, self.clock = cfg, run, node, log, progress, clock
        self.diverged = None  # rank 0: summary.json's `diverged` once the guard has seen it
        self.guarding = threading.Lock()  # two threads may record at once (eval, communication): one warning
        self.evaluate = algorithms.make_evaluate(cfg, run, node)
        self.next_time = 0.0
        # its own model copy: the periodic evaluation runs beside training, never in the node's model
        self.model = copy.deepcopy(node.model) if cfg["concurrent_eval"] else node.model
        self.snapshot, self.ready, self.idle = None, threading.Event(), threading.Event()
        self.idle.set()
        self.stream = torch.cuda.Stream(node.device) if node.device.type == "cuda" and cfg["concurrent_eval"] else None
        if cfg["concurrent_eval"]:
            threading.Thread(target=self.evaluate_snapshots, name="eval", daemon=True).start()

    def due(self):
        return self.clock() >= self.next_time

    def seconds_to_next(self):
        return max(0.0, self.next_time - self.clock())

    def measure(self, params, buffers=None):
        """The EVAL_METRICS of the flat parameters `params`, with the node's BatchNorm statistics
        (or `buffers`, a snapshot of them)."""
        if buffers is not None:
            for name, buffer in self.model.named_buffers():
                buffer.copy_(buffers[name])
        models.load_flat_params(self.model, params)
        return self.evaluate(self.model)

    def periodic(self, params):
        """Compute thread, when due: evaluate `params` (a copy the caller made) beside training, or
        here and now without --concurrent-eval. An evaluation still running when the next one is
        due makes the next one wait for the following interval."""
        self.next_time = self.clock() + self.cfg["eval_interval"]
        taken = self.taken()
        if not self.cfg["concurrent_eval"]:
            self.report(self.measure(params), taken)
        elif self.idle.is_set():
            self.idle.clear()
            self.snapshot = (params, {name: b.detach().clone() for name, b in self.node.model.named_buffers()}, taken)
            self.ready.set()

    def taken(self):
        """(time, network totals) of a snapshot that rank 0 logs as of its taking, else None."""
        if self.node.node_id == 0 and self.cfg["eval_logged_at"] == "snapshot":
            return self.clock(), self.progress.totals()
        return None

    def evaluate_snapshots(self):
        try:
            while True:
                self.ready.wait()
                self.ready.clear()
                params, buffers, taken = self.snapshot
                with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
                    result = self.measure(params, buffers)
                self.report(result, taken)
                self.idle.set()
        except BaseException as error:  # an evaluation that fails ends the job like any other thread's fault
            faults.end_on_fault(self.progress.comm, self.cfg, "eval", error)

    def drain(self):
        """Wait for a running evaluation to be recorded (before the final one)."""
        self.idle.wait()

    def report(self, metrics, taken):
        if self.node.node_id == 0:
            self.record(metrics, taken=taken)
        else:
            self.progress.post_eval(metrics)

    def record(self, metrics, node=0, model="node0", taken=None):
        """Rank 0 only, from any of its threads: log, print, run the divergence guard
        (algorithms.guard_divergence), update the provisional summary.
        taken: (time, totals) to log it at (Evaluator.taken); None: now."""
        t, totals = (self.clock(), self.progress.totals()) if taken is None else taken
        iterations, transfers, nbytes = (int(v) for v in totals)
        record_eval(self.log, metrics, iterations, nbytes, model, node, t=t)
        print(progress_line(t, iterations, nbytes, metrics, model, node), flush=True)
        with self.guarding:
            self.diverged = algorithms.guard_divergence(self.cfg, self.run, metrics, t, self.diverged)
        # a job killed from here on still leaves a readable summary, marked incomplete
        write_summary(self.cfg["out"], self.cfg, self.progress.size, wall_time_s=self.clock(), iterations=iterations,
                      transfers=transfers, bytes_sent=nbytes, complete=False, diverged=self.diverged,
                      **{f"last_{key}": value for key, value in metrics.items()})

