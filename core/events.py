"""
The one event logger: a JSON line per event, on disk at once (a real run holds its hot-path
lines up to HOLD seconds, EventLog), and the one
place that counts iterations, transfers and bytes (the paper's x-axes, SEMANTICS.md §5).
Real runs and the simulator both write through it; plots and reports read it back.
"""
import errno
import glob
import json
import math
import os
import socket
import threading
import time
import weakref
from collections import OrderedDict

# relay_transfers/relay_bytes: the models failed MW nodes forwarded, counted whether or not --count-relays
# also counts them in transfers/bytes_sent (the authors' v2 does not count them as communication)
COUNTERS = ("iterations", "transfers", "bytes_sent", "compute_time", "self_loops", "exchanges", "relays",
            "relay_transfers", "relay_bytes")


class OpenFiles:
    """The simulator's V event logs share at most `limit` open files (V = 100,000 would exceed the
    process's limit): a log's file is created at its first event, and a file not written for the
    longest is closed when another needs a handle, then reopened to append. One thread only."""
    def __init__(self, limit=256):
        self.limit, self.files = limit, OrderedDict()  # path -> open file, least recently written first

    def get(self, path, created):
        """The file at path, open for writing: made empty unless `created` (then appended to)."""
        file = self.files.pop(path, None)
        if file is None:
            if len(self.files) >= self.limit:
                self.files.popitem(last=False)[1].close()
            file = open(path, "ab" if created else "wb", buffering=0)
        self.files[path] = file
        return file

    def close(self, path):
        file = self.files.pop(path, None)
        if file is not None:
            file.close()


# the lines of the hot path (a walk's visit, a gossip exchange): a real run may hold them in memory up to
# HOLD seconds, written together; every other line (start, eval, checkpoint, failure, retire, stop...)
# is written at once, after the held lines, so the file's order is the events' order
HELD_KINDS = frozenset(("update", "transfer", "self_loop", "relay", "exchange"))
HOLD = 0.05
OPEN_LOGS = weakref.WeakSet()  # flush_all's: exit paths that skip Python's clean-up flush every log


def flush_all():
    """Write every open log's held lines (a signal handler or os._exit path calls it first).
    Best effort: on a full disk the held lines are lost, and the caller goes on to report why
    the job ends (its line names the disk) rather than dying of this write."""
    for log in list(OPEN_LOGS):
        try:
            log.flush()
        except OSError:
            pass


class EventLog:
    """`hold` (seconds, 0: none): how long the HELD_KINDS lines may wait in memory before a writer
    thread writes them (the MPI engine: HOLD; the simulator: 0, every line written at once).
    What a SIGKILL loses is therefore at most the held lines of the last `hold` seconds; any
    other ending flushes them (close, flush_all on signals and faults). `files` (the simulator's
    OpenFiles): the log's file comes from that pool when a line is written, created at the first."""
    def __init__(self, path, clock, resume_at=None, hold=0.0, files=None):
        # clock() is seconds since the run started: wall clock in a real run, virtual time in the simulator
        self.clock, self.path, self.hold, self.files = clock, path, hold, files
        # unbuffered, one write per line or batch of held lines: what is written is on disk whatever ends the process next
        if files is not None:
            self.file, self.length = None, 0
        elif resume_at is None:
            self.file, self.length = open(path, "wb", buffering=0), 0
        else:  # a resumed run: drop what was logged after the checkpoint, then append
            self.file, self.length = open(path, "r+b", buffering=0), resume_at
            self.file.truncate(resume_at)
            self.file.seek(resume_at)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.counters["compute_time"] = 0.0
        self.lock = threading.Condition()  # the compute and the communication thread both log; the writer waits on it
        self.held, self.due = [], None  # lines not yet written, and when the first of them must be
        self.writer = None
        if hold:
            self.writer = threading.Thread(target=self._write_held, name="event-log", daemon=True)
            self.writer.start()
        OPEN_LOGS.add(self)

    def write(self, kind, t=None, **fields):
        """One event at time t (default: now)."""
        event = {"t": round(self.clock() if t is None else t, 6), "type": kind, **fields}
        try:
            line = json.dumps(event, allow_nan=False)
        except ValueError:  # a NaN or infinity somewhere (rare): made null, not written as bare NaN
            line = json.dumps(strict_json(event), allow_nan=False)
        line = (line + "\n").encode()
        with self.lock:
            if self.hold and kind in HELD_KINDS and not self.file.closed:  # hold: the MPI engine's own file
                if not self.held:
                    self.due = time.monotonic() + self.hold
                    self.lock.notify()
                self.held.append(line)
                return
            self._append(b"".join(self.held) + line)
            self.held.clear()

    def _append(self, data):
        """Holding the lock: data at the end of the file, entirely or not at all."""
        file = self.file if self.files is None else self.files.get(self.path, created=self.length > 0)
        try:
            written = 0
            while written < len(data):  # a full disk can take part of a line before it refuses
                written += file.write(data[written:])
        except OSError as e:
            file.truncate(self.length)  # no cut-off line stays behind to be read as an event
            file.seek(self.length)
            raise OSError(e.errno, e.strerror, self.path) from None
        self.length += len(data)

    def flush(self):
        """Write the held lines now."""
        with self.lock:
            if self.held and not self.file.closed:  # only a holding log (the MPI engine's own file) holds lines
                self._append(b"".join(self.held))
            self.held.clear()

    def _write_held(self):
        """The writer thread: asleep until a line is held, then writes it (and those held with it)
        when the first is `hold` seconds old."""
        with self.lock:
            while not self.file.closed:
                if not self.held:
                    self.lock.wait()
                    continue
                late = self.due - time.monotonic()
                if late > 0:
                    self.lock.wait(late)
                    continue
                try:
                    self._append(b"".join(self.held))
                except OSError:  # a full disk: tried again later; a line written at once raises it in its thread
                    self.due = time.monotonic() + self.hold
                else:
                    self.held.clear()

    def update(self, duration, **fields):
        """One local update (tau SGD steps) finished; `t` in fields: when it ended (default now)."""
        with self.lock:
            self.counters["iterations"] += 1
            self.counters["compute_time"] += duration
        self.write("update", duration=round(duration, 6), **fields)

    def transfer(self, to, nbytes, **fields):
        """One model sent to rank `to`."""
        with self.lock:
            self.counters["transfers"] += 1
            self.counters["bytes_sent"] += nbytes
        self.write("transfer", to=to, bytes=nbytes, **fields)

    def self_loop(self, **fields):
        """An MW hop that stayed at the node: a visit with no transmission."""
        with self.lock:
            self.counters["self_loops"] += 1
        self.write("self_loop", **fields)

    def relay(self, to, nbytes, **fields):
        """An MW walk passing through a failed node: forwarded to rank `to` with no local update
        (SEMANTICS.md §6); nbytes 0 when its hop stays (a self-loop sends nothing). Whether the send
        is also a counted transfer is the protocol's to decide (--count-relays)."""
        with self.lock:
            self.counters["relays"] += 1
            if nbytes:
                self.counters["relay_transfers"] += 1
                self.counters["relay_bytes"] += nbytes
        self.write("relay", to=to, bytes=nbytes, **fields)

    def exchange(self, partner, **fields):
        """One gossip exchange initiated by this (active) node: two transfers."""
        with self.lock:
            self.counters["exchanges"] += 1
        self.write("exchange", partner=partner, **fields)

    def offset(self):
        """Where the log ends now, for a checkpoint: a resumed run continues from here."""
        self.flush()
        with self.lock:
            return self.length

    def close(self):
        self.flush()
        with self.lock:
            if self.files is None:
                self.file.close()
                self.lock.notify()  # the writer thread ends
            else:
                self.files.close(self.path)
        OPEN_LOGS.discard(self)


EVAL_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")  # algorithms.make_evaluate's keys
PROGRESS_HEADER = "     time | iterations |    sent MB | train loss | train acc | test loss | test acc"


def progress_line(t, iterations, nbytes, metrics, model="node0", node=0):
    """One progress line under PROGRESS_HEADER, for real and simulated runs alike."""
    return (f"{t:8.1f}s | {iterations:10d} | {nbytes / 1e6:10.1f} | {metrics['train_loss']:10.4f} | "
            f"{metrics['train_accuracy']:9.4f} | {metrics['test_loss']:9.4f} | {metrics['test_accuracy']:8.4f}"
            + ("" if model == "node0" else f" ({model})") + (f" (node {node})" if node else ""))


def record_eval(log, metrics, iterations, nbytes, model="node0", node=0, t=None):
    """The eval event at time t (default: now): the model's EVAL_METRICS, and the network's iterations and bytes then."""
    log.write("eval", t=t, model=model, **metrics, iterations_seen=iterations, bytes_seen=nbytes,
              **(dict(node=node) if node else {}))


def strict_json(obj):
    """obj with every NaN or infinity as null: JSON has no such numbers, and strict readers reject them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: strict_json(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(value) for value in obj]
    return obj


def write_json_atomically(path, obj):
    """Readers see the old file or the new one, never half of one (a crash may come at any time)."""
    tmp = f"{path}.{threading.get_ident()}.tmp"  # rank 0's two threads may both write the summary
    try:
        with open(tmp, "w") as f:
            json.dump(strict_json(obj), f, indent=2, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)  # a full disk leaves no half-written file behind
        raise


def remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_summary(out_dir, cfg, nodes, **fields):
    """summary.json, replaced atomically: a killed job leaves the last version written
    (a provisional one says complete: false)."""
    summary = dict(algorithm=cfg["algorithm"], nodes=nodes, walks=cfg["walks"], graph=cfg["graph"], tau=cfg["tau"],
                   gossip_mode=cfg["gossip_mode"], task=cfg["task"], failure_times=cfg["failure_times"], **fields)
    write_json_atomically(os.path.join(out_dir, "summary.json"), summary)
    return summary


def amend_summary(out_dir, **fields):
    """summary.json with `fields` changed, the rest as last written (after an interrupt or a fault)."""
    path = os.path.join(out_dir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except (OSError, ValueError):  # none written yet, or unreadable: the fields alone
        summary = {}
    write_json_atomically(path, dict(summary, **fields))


class Diverged(RuntimeError):
    """The divergence guard saw a non-finite loss or accuracy at chance, with --stop-on-divergence true: the run stops."""


def stopped_record(cause, rank=None, host=None, detail=None):
    """What ended a run, for summary.json's `stopped`: `cause` is one of finished, signal, exception,
    diverged, disk_full, killed, stalled, exited, unreachable; `rank` the rank at fault (None when none is); `host` where
    it was; `time` when, in UTC; `detail` the signal's name, the error line or the stall, in words."""
    record = dict(cause=cause, rank=rank, host=host or socket.gethostname(),
                  time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return dict(record, detail=detail) if detail else record


def fault_cause(error):
    """An uncaught exception's cause: a full disk is told apart, it is the operator's to fix, and so is
    the divergence guard's stop (--stop-on-divergence true)."""
    if isinstance(error, Diverged):
        return "diverged"
    return "disk_full" if isinstance(error, OSError) and error.errno == errno.ENOSPC else "exception"


def stale_summary_note(error):
    """What the terminal is told when summary.json could not take a run's end."""
    return (f"summary.json is stale: the run's end could not be written to it ({error}); "
            f"it still says complete: false with no `stopped` cause")


def counter_totals(counters):
    """The network's counters from every node's (a list of dicts)."""
    return {key: sum(c[key] for c in counters) for key in COUNTERS}


def write_final_summary(out_dir, cfg, counters, transport, model_bytes, wall_time, final_metrics, network_average=None,
                        active_nodes=None, **extra):
    """The summary of a finished run, from every node's counters and the final model's EVAL_METRICS
    (and the gossip network average's); the MPI engine (transport "mpi") and the simulator ("simulated") share it."""
    totals = counter_totals(counters)
    if active_nodes is not None:  # gossip: how often the active nodes exchanged, per local update (FIDELITY.md)
        active_updates = sum(counters[v]["iterations"] for v in active_nodes)
        extra.update(exchanges_per_update=totals["exchanges"] / max(totals["iterations"], 1),
                     exchanges_per_active_update=totals["exchanges"] / max(active_updates, 1),
                     gossip_interval=cfg["gossip_interval"], gossip_coupling=cfg["gossip_coupling"])
    final = {f"final_{key}": value for key, value in final_metrics.items()}
    if network_average is not None:
        final.update({f"network_average_{key}": value for key, value in network_average.items()})
    summary = write_summary(out_dir, cfg, len(counters), transport=transport, model_bytes=model_bytes,
                            wall_time_s=wall_time, **final, **totals, complete=True, **extra,
                            stopped=stopped_record("finished"))
    print(f"done in {wall_time:.1f}s: {totals['iterations']} local updates, {totals['transfers']} transfers, "
          f"{totals['bytes_sent'] / 1e6:.1f} MB sent, test accuracy {final_metrics['test_accuracy']:.4f}", flush=True)
    return summary


def read_events(out_dir):
    """All events of a run, every rank merged, sorted by time."""
    events = []
    for path in sorted(glob.glob(os.path.join(out_dir, "events-rank*.jsonl"))):
        rank = int(os.path.basename(path)[len("events-rank"):-len(".jsonl")])
        with open(path) as f:
            for line in f:
                if line.strip() and line.endswith("\n"):  # a line cut short by a crash is left out
                    events.append(dict(json.loads(line), rank=rank))
    events.sort(key=lambda e: (e["t"], e["rank"]))
    return events
