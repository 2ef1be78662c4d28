"""Shared by the tests: run main.py under real mpirun and read what it wrote."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(num_ranks, args, timeout=120, script="main.py"):
    """`mpirun -n K python main.py ARGS` from the repo root; a hang fails the test instead of blocking it."""
    command = ["mpirun", "-n", str(num_ranks), sys.executable, script, *map(str, args)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def read_summary(out_dir):
    with open(os.path.join(out_dir, "summary.json")) as f:
        return json.load(f)
