"""Shared by the tests (import them with `from conftest import run_main`): run a script
under real mpirun from the repo root and read what it wrote."""
import json
import os
import subprocess

from core import mpirun_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(num_ranks, args, timeout=120, script="main.py", pythonpath=None):
    """`mpirun -n K python main.py ARGS`, to the end; a hang fails the test instead of blocking it.
    `pythonpath`: a folder searched before the installed packages."""
    env = mpirun_command.environment()
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run(mpirun_command.command(num_ranks, script, args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def start_main(num_ranks, args, script="main.py", **env):
    """The same, started in the background: the caller waits for it (and kills it on a hang).
    `env`: extra environment variables (a test-only fault hook, say)."""
    return subprocess.Popen(mpirun_command.command(num_ranks, script, args), cwd=REPO, text=True,
                            env=dict(mpirun_command.environment(), **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_summary(out_dir):
    with open(os.path.join(out_dir, "summary.json")) as f:
        return json.load(f)
