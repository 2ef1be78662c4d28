"""The simulator's model of the authors' engine timing (simulation/engine_timing.py) against the
authors' engine measured on this machine (reports/timing_calibration.json: their code run
unmodified, V = 8 cycle, emulated updates of 25 ms and 100 ms). The measurement is a benchmark,
committed as data; here the model's predictions of the same rows must fall within 10% of it."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from core import config
from core.events import read_events
from simulation import engine_timing

CALIBRATION = os.path.join(REPO, "reports", "timing_calibration.json")
TOLERANCE = 0.10
WARM, WINDOW = 2.0, 12.0  # virtual seconds left out at the start, then measured: the harness's window


def simulate(tmp_path, algorithm, walks, compute, *extra):
    """The calibration setting in the simulator: V = 8 cycle, fixed update times, ResNet-20's bytes
    on a free link (the loopback transfer is part of engine_timing.HANDOFF); returns the events in the window."""
    out = tmp_path / f"{algorithm}{walks}-{compute}"
    args = ["--nodes", "8", "--graph", "cycle", "--algorithm", algorithm, "--walks", str(walks),
            "--emulate-params", "4", "--virtual-model-bytes", "1089896", "--bandwidth", "1e12", "--latency", "0",
            "--compute-time-dist", "fixed", "--compute-time-mean", str(compute), "--warmup-time", "0",
            "--train-time", str(WARM + WINDOW + 1), "--eval-interval", "1000", "--seed", "0", "--out", str(out), *extra]
    done = subprocess.run([sys.executable, "simulate.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, [e for e in read_events(str(out)) if WARM <= e["t"] < WARM + WINDOW]


def rates(events):
    """updates/s of all nodes, and gossip's exchanges per local update of an active node."""
    updates = [e for e in events if e["type"] == "update"]
    exchanges = [e for e in events if e["type"] == "exchange"]
    active = {e["rank"] for e in exchanges}
    per_update = len(exchanges) / max(1, sum(e["rank"] in active for e in updates)) if exchanges else None
    return len(updates) / WINDOW, per_update


def calibration_rows():
    """The rows measured on a quiet enough machine (the file's calibration_rule); loaded rows are kept
    beside them for the record: their polls wait on the scheduler, which no constant models."""
    with open(CALIBRATION) as f:
        return [row for row in json.load(f)["authors_engine"] if row["calibration"]]


@pytest.mark.slow
@pytest.mark.parametrize("row", calibration_rows(), ids=lambda r: f"{r['algorithm']}{r['walks']}-{r['compute']}")
def test_model_predicts_the_authors_engine_within_ten_percent(tmp_path, row):
    _, events = simulate(tmp_path, row["algorithm"], row["walks"], row["compute"])
    updates_per_s, exchanges_per_update = rates(events)
    assert updates_per_s == pytest.approx(row["updates_per_s"], rel=TOLERANCE)
    if row["algorithm"] == "gossip":
        assert exchanges_per_update == pytest.approx(row["exchanges_per_active_update"], rel=TOLERANCE)


@pytest.mark.slow
def test_ideal_timing_is_the_plain_schedule(tmp_path):
    """Ideal: MW-1 at a fixed 25 ms on a free link makes exactly one update per 25 ms, and the
    authors' timing makes fewer (a poll and a hand-off per visit)."""
    _, ideal = simulate(tmp_path / "ideal", "mw", 1, 0.025, "--engine-timing", "ideal")
    _, authors = simulate(tmp_path / "authors", "mw", 1, 0.025)
    assert rates(ideal)[0] == pytest.approx(1 / 0.025, abs=1 / WINDOW)
    assert rates(authors)[0] < 0.8 * rates(ideal)[0]


@pytest.mark.slow
def test_gossip_pacing_is_recorded_and_resolved(tmp_path):
    """gossip_pacing authors: the simulator's authors timing paces by polls alone (interval 0 in
    config.json); the MPI engine's default interval is the modelled exchange cycle."""
    out, _ = simulate(tmp_path, "gossip", 1, 0.1)
    with open(out / "config.json") as f:
        recorded = json.load(f)
    assert (recorded["engine_timing"], recorded["gossip_pacing"], recorded["gossip_interval"]) == ("authors", "authors", 0.0)
    cfg = config.parse_config([])
    assert cfg["gossip_interval"] == pytest.approx(engine_timing.AUTHORS_EXCHANGE_CYCLE, abs=1e-6)
    assert engine_timing.simulated_gossip_interval(dict(cfg, engine_timing="ideal")) == cfg["gossip_interval"]


@pytest.mark.parametrize("flags, named", [
    (["--gossip-interval", "0"], "--gossip-interval 0 needs --gossip-pacing interval"),
    (["--engine-timing", "fast"], "engine_timing 'fast' is not one of authors, ideal"),
    (["--mw-visit-delay", "10"], "mw_visit_delay '10' is not one of none, authors"),
])
def test_bad_timing_flags_are_one_line_errors(tmp_path, flags, named):
    done = subprocess.run([sys.executable, "simulate.py", "--nodes", "4", *flags, "--out", str(tmp_path / "x")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(f"error: {named}")
