"""analysis/sensitivity.py: the steady rate, bad input, and a tiny grid end to end, whose MW rates the
queueing model (queueing.py) must predict within 5%."""
import json

import pytest

from analysis import sensitivity


def test_the_steady_rate_stops_when_the_first_worker_is_done():
    # two walks, one update per second each; walk 1 stops after t = 4, walk 0 goes on alone to t = 10
    events = ([dict(type="update", t=float(t), rank=0, walk=0) for t in range(1, 11)]
              + [dict(type="update", t=t + 0.5, rank=1, walk=1) for t in range(1, 5)])
    assert sensitivity.steady_rate(events) == pytest.approx(7 / 3.5)  # 8 updates by t = 4.5: 7 intervals over 3.5 s
    gossip = [dict(type="update", t=float(t), rank=r) for r in range(3) for t in range(1, 6 + r)]
    assert sensitivity.steady_rate(gossip) == pytest.approx((15 - 1) / 4)


@pytest.mark.parametrize("flags, message", [
    (["--compute", "0"], "--compute 0"),
    (["--walks", "21"], "--walks 21"),
    (["--exchanges", "-1"], "--exchanges -1"),
    (["--seeds", "0"], "--seeds 0"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, flags, message):
    assert sensitivity.main([*flags, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_tiny_grid_runs_and_the_queueing_model_predicts_mw_within_5_percent(tmp_path):
    out = tmp_path / "sens"
    code = sensitivity.main(["--compute", "0.025", "--bandwidth", "1.25e8", "--walks", "1", "5", "--exchanges", "1",
                             "--seeds", "2", "--iterations", "6000", "--iteration-ratio", "0.5", "--out", str(out)])
    assert code == 0
    (row,) = json.loads((out / "sensitivity.json").read_text())
    for walks in ("1", "5"):
        mw = row["mw"][walks]
        assert mw["rate"] / mw["predicted"] == pytest.approx(1, abs=0.05)
    assert row["claim3"]["verdict"] in ("linear", "sub-linear", "unclear")
    gossip = row["gossip"]["1.0"]  # JSON keys: the k given, as a float
    assert row["claim4"]["1.0"]["bytes_ratio"] == pytest.approx(0.5 * row["mw"]["1"]["models_per_update"]
                                                              / gossip["models_per_update"])
    assert "| 25 ms | 1 Gbit/s |" in (out / "sensitivity.md").read_text()
