"""analysis/scaling.py (claim 3's own runs): the model check's TOST, bad input, and a tiny grid end to end
whose series, verdict and model checks land in scaling.json and in the paper_verdicts report."""
import json

import numpy as np
import pytest

from analysis import scaling
from analysis import verdicts


def test_the_model_check_is_within_5_percent_only_when_the_interval_is():
    rng = np.random.default_rng(0)
    close = 100 * np.exp(rng.normal(0.0, 0.005, size=10))
    assert scaling.model_check(close, 100.0)["within"]
    assert not scaling.model_check(close * 1.08, 100.0)["within"]  # 8% off
    wide = 100 * np.exp(rng.normal(0.0, 0.2, size=5))  # right on average, too spread to say
    check = scaling.model_check(wide, 100.0)
    assert not check["within"] and check["high"] - check["low"] > 0.1


@pytest.mark.parametrize("flags, message", [
    (["--walks", "0"], "--walks 0"),
    (["--gossip-nodes", "1"], "--gossip-nodes 1"),
    (["--seeds", "0"], "--seeds 0"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, flags, message):
    assert scaling.main([*flags, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.slow
def test_a_tiny_grid_gives_the_series_the_verdict_and_the_model_checks(tmp_path):
    out = tmp_path / "scaling"
    assert scaling.main(["--walks", "1", "4", "--gossip-nodes", "4", "8", "--seeds", "2", "--iterations", "400",
                         "--jobs", "1", "--out", str(out)]) == 0
    saved = json.loads((out / "scaling.json").read_text())
    series = verdicts.load_series(out / "scaling.json")
    assert sorted(series) == ["MW-R, complete (V = 20)", "MW-R, cycle (V = 20)", "gossip, complete, in V"]
    assert sorted(series["gossip, complete, in V"]) == [4, 8] and sorted(series["MW-R, cycle (V = 20)"][4]) == [0, 1]
    points = {p["series"]: p for p in saved["claim3"]["points"]}
    mw = series["MW-R, complete (V = 20)"]
    assert points["MW-R, complete (V = 20)"]["speedup"] == pytest.approx(
        np.exp(np.mean(np.log([mw[4][s] / mw[1][s] for s in (0, 1)]))))
    assert saved["claim3"]["verdict"] == "inconclusive"  # 2 seeds carry no verdict
    assert len(saved["model"]) == 4 and all(0.8 < c["ratio"] < 1.2 for c in saved["model"])
    assert (out / "scaling.png").stat().st_size > 0
