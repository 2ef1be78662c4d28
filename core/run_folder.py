"""
The one gate for run folders (--out): every writer of a run (main.py on every rank, simulate.py,
the experiment and study scripts through them) goes through it before it writes.
  - a live run's folder is always refused: the run holds OUT/.lock (an flock, released when its
    process ends, so a killed run leaves no stale lock; the file itself stays and names the last holder);
  - a finished or failed run's folder (config.json, summary.json, events-rank*.jsonl, checkpoint/)
    is refused unless --overwrite true, which removes those files (and nothing else);
  - --resume continues in its own folder and keeps its files.
Under MPI every rank checks, and all ranks agree between the steps (main.py), so every rank gives the
same reason: first that the folder is writable and not in use (`check_writable`, `check_not_live`),
then, once rank 0 holds the lock, that it holds no earlier run (`refuse_previous_run`).
"""
import fcntl
import glob
import json
import os
import shutil
import tempfile

from core.config import ConfigError

LOCK_FILE = ".lock"
RUN_FILES = ("config.json", "summary.json", "events-rank*.jsonl", "checkpoint")  # what a run writes; globs allowed
CHECKPOINT_DIR = "checkpoint"


def check_writable(out):
    """Create --out if needed and write a scratch file there; a ConfigError says why not."""
    if not out:
        raise ConfigError("--out is empty; give the folder the run writes to, e.g. --out runs/x")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ConfigError(f"--out {out} is not a writable folder: {e.strerror}") from None


def in_use_error(out, holder):
    return ConfigError(f"--out {out} is in use by a live run ({holder} holds {os.path.join(out, LOCK_FILE)}); "
                       "wait for it to end or choose another --out")


def check_not_live(out):
    """Refuse a folder whose lock a live process holds: try the lock, and let it go at once. A shared
    lock: every rank of one job probes at the same moment, and shared probes never refuse each other,
    only a live run's exclusive lock."""
    path = os.path.join(out, LOCK_FILE)
    if not os.path.exists(path):
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise in_use_error(out, handle.read().strip() or "another process") from None
        fcntl.flock(handle, fcntl.LOCK_UN)


def lock(out):
    """Hold OUT/.lock (flock) until this process ends; the open file must stay referenced."""
    path = os.path.join(out, LOCK_FILE)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise in_use_error(out, holder) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def previous_run_files(out):
    """The files an earlier run left in `out`, sorted."""
    return sorted(os.path.basename(p) for pattern in RUN_FILES for p in glob.glob(os.path.join(out, pattern)))


def refuse_previous_run(out, resumable=True):
    """Refuse a folder holding an earlier run. `--resume` is offered only where it can work: an MPI run
    (resumable) whose folder has a checkpoint."""
    found = previous_run_files(out)
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        resume = (f", --resume {out} to continue it" if resumable and CHECKPOINT_DIR in found else "")
        no_checkpoint = ("; it has no checkpoint, so it cannot be continued (a run writes checkpoints with "
                         "--checkpoint-every SECONDS)" if resumable and CHECKPOINT_DIR not in found else "")
        raise ConfigError(f"--out {out} holds another run ({shown}); pass --overwrite true to replace it{resume}, "
                          f"or choose another --out{no_checkpoint}")


def stale_summary(out):
    """One line if the earlier run in `out` ended without its end written down (summary.json says
    complete: false and has no `stopped`: a full disk, or a job killed whole), else None."""
    try:
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    except (OSError, ValueError):
        return None
    if summary.get("complete") is False and "stopped" not in summary:
        return (f"note: {os.path.join(out, 'summary.json')} is stale: the earlier run's end was never written "
                f"there (complete: false, no `stopped` cause; a full disk or a job killed whole)")
    return None


def remove_previous_run(out):
    for name in previous_run_files(out):
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def claim(out, overwrite):
    """The gate for a writer that is one process (the simulator): the folder is writable, not in use,
    and holds no earlier run unless `overwrite`, in which case the earlier run's files go. Returns the
    lock, to hold while writing (close it, or end the process, to free the folder)."""
    check_writable(out)
    handle = lock(out)
    try:
        if overwrite:
            note = stale_summary(out)
            if note:
                print(note, flush=True)
            remove_previous_run(out)
        else:
            refuse_previous_run(out, resumable=False)
    except BaseException:
        handle.close()
        raise
    return handle
