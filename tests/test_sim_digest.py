"""Fixed-seed simulator runs give byte-identical event logs: a restructuring that must not change
what runs is checked against digests recorded before it. A change that alters semantics on purpose
records new digests in the same commit and says why."""
import glob
import hashlib
import os
import subprocess
import sys

import pytest

from conftest import REPO

MW = ["--nodes", "6", "--walks", "2", "--max-iterations", "300", "--seed", "3", "--failure-times", "0.5"]
GOSSIP = ["--nodes", "6", "--algorithm", "gossip", "--max-iterations", "300", "--seed", "3"]
# the ideal timing with the old fixed 45 ms gossip pacing is the simulator from before the authors'
# engine timing (simulation/engine_timing.py): its digests are the ones recorded before it
IDEAL = ["--engine-timing", "ideal"]
RUNS = {
    # MW-2 with node 0 failing at 0.5 virtual s (the aggregator role moves), and gossip. Both MW digests
    # re-recorded for the authors' relay counting (issue #24: a failed node's forwarded model is a relay
    # event with its bytes, no transfer event); with --count-relays true the logs equal the previous
    # ones but for the relay events' new `to` and `bytes` fields
    "mw-ideal": (MW + IDEAL, "d11686a027a51d32bbe10e29e63260b0b6d9a022ef02b21c2f46695910629182"),
    # re-recorded for the authors' passive delta (issue #24 item 1: a passive node's delta weighs what it
    # weighs in their code, no longer 1.5), the only change to this run since the first recording
    "gossip-ideal": (GOSSIP + IDEAL + ["--gossip-pacing", "interval", "--gossip-interval", "0.045"],
                     "5f80a60ef9210edccd0be4057845fff2134ba179446b8d550c1f5ee2231c4b1b"),
    # the default: the authors' engine timing (re-recorded when its calibrated constants change)
    "mw": (MW, "6e02acad43ae7f30589b9168364f9c8c8841d4ecda686a2f90cbd3f3930a0273"),
    "gossip": (GOSSIP, "289ccc33f14e7b6b45db004ea443fc1a0e9c79fde01efe8d76382c564dac42f2"),  # the same passive delta
}


def event_digest(out):
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(out, "events-rank*.jsonl"))):
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read())
    return digest.hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_fixed_seed_event_logs_are_unchanged(tmp_path, name):
    args, recorded = RUNS[name]
    out = tmp_path / name
    done = subprocess.run([sys.executable, "simulate.py", *args, "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert event_digest(out) == recorded
