"""
A run folder (--out) belongs to one run. Before any work every rank checks that it
can write there; rank 0 then locks the folder for the run's lifetime (a second run
into it refuses at once) and refuses a folder that holds another run's files,
unless --overwrite true, which removes them once every rank has agreed to start.
--resume continues in its own folder and keeps its files.
"""
import fcntl
import glob
import os
import shutil
import tempfile

from core.config import ConfigError

LOCK_FILE = ".lock"
RUN_FILES = ("config.json", "summary.json", "events-rank*.jsonl", "checkpoint")  # what a run writes; globs allowed


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
        raise ConfigError(f"--out {out} is in use by another run ({holder} holds {path}); wait for it or choose another --out") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
    handle.flush()
    return handle


def previous_run_files(out):
    """The files an earlier run left in `out`, sorted."""
    return sorted(os.path.basename(p) for pattern in RUN_FILES for p in glob.glob(os.path.join(out, pattern)))


def refuse_previous_run(out):
    found = previous_run_files(out)
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise ConfigError(f"--out {out} holds another run ({shown}); pass --overwrite true to replace it, "
                          f"--resume {out} to continue it, or choose another --out")


def remove_previous_run(out):
    for name in previous_run_files(out):
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
