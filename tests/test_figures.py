"""Figures: tick labels that do not overlap, titles that count seeds, virtual time for simulated
runs, outputs under runs/ by default; and no committed file is git-ignored."""
import itertools
import json
import os
import subprocess

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis import plot_failures  # noqa: E402
from analysis import plots  # noqa: E402
from core import run_records as runs_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shown_labels(axis):
    """The tick labels drawn: non-empty, at ticks inside the axis's view."""
    low, high = sorted(axis.get_view_interval())
    return [label for loc, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
            if label.get_visible() and label.get_text() and low <= loc <= high]


def overlapping_labels(fig, ax):
    """Pairs of visible tick labels whose drawn boxes intersect, per axis."""
    renderer = fig.canvas.get_renderer()
    clashes = []
    for axis in (ax.xaxis, ax.yaxis):
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in shown_labels(axis)]
        clashes += [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    return clashes


@pytest.mark.parametrize("x, log", [(np.geomspace(3e3, 4e11, 50), True),    # bytes over eight decades
                                    (np.geomspace(0.02, 0.6, 50), True),    # GB over little more than a decade
                                    (np.linspace(0, 98_765, 50), False),    # iterations up to ~100k
                                    (np.linspace(0, 3.2, 50), False)])      # seconds
def test_tick_labels_never_overlap_on_a_panel_of_the_report(x, log):
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))  # plots.draw_setting's grid
    ax = axes[0, 2]
    ax.plot(x, np.linspace(0.1, 0.95, len(x)))
    if log:
        ax.set_xscale("log")
    plots.readable_ticks(ax)
    fig.tight_layout()
    fig.canvas.draw()
    labels = [t.get_text() for t in shown_labels(ax.xaxis)]
    assert 3 <= len(labels) <= plots.MAX_TICKS + 2, labels
    assert not overlapping_labels(fig, ax)
    plt.close(fig)


def test_default_tick_labels_would_overlap_so_the_check_can_fail():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 98_765], [0, 1])
    ax.set_xticks(np.linspace(0, 98_765, 12))
    fig.canvas.draw()
    assert overlapping_labels(fig, ax)
    plt.close(fig)


def write_run(path, backend, seed, algorithm="mw", failures=()):
    os.makedirs(path)
    cfg = dict(algorithm=algorithm, walks=2, graph="cycle", nodes=4, partition="dirichlet", alpha=1.0, task="digits",
               seed=seed, er_p=0.3, gossip_mode="free")
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    with open(os.path.join(path, "summary.json"), "w") as f:
        json.dump(dict(complete=True, backend=backend, iterations=3, compute_time=0.3), f)
    events = [dict(t=0.1 * i, type="update", duration=0.1) for i in range(1, 4)]
    events += [dict(t=0.1 * i, type="transfer", to=1, bytes=1000) for i in range(1, 4)]
    events += [dict(t=0.1 * i + 0.05, type="eval", model="node0", test_loss=1 / i, test_accuracy=0.3 * i)
               for i in range(1, 4)]
    events += [dict(t=0.15, type="failure", node=node, scheduled=0.15) for node in failures]
    with open(os.path.join(path, "events-rank0.jsonl"), "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in events)


@pytest.mark.slow
def test_figure_titles_count_seeds_and_say_virtual_time(tmp_path, monkeypatch):
    titles, xlabels = [], []
    real_draw = plots.draw_setting

    def spy(key, algos, png, csv_path, targets=()):
        real_draw(key, algos, png, csv_path, targets)
        fig = plt.gcf()
        titles.append(fig._suptitle.get_text() if fig._suptitle else "")

    monkeypatch.setattr(plt, "close", lambda fig=None: None)  # keep the figure to read its texts
    monkeypatch.setattr(plots, "draw_setting", spy)
    monkeypatch.chdir(tmp_path)
    for seed in (0, 1, 2):
        write_run(tmp_path / "sim" / f"s{seed}", "sim", seed)
    assert plots.main([str(tmp_path / "sim")]) == 0
    assert os.path.isfile(tmp_path / "runs" / "figures" / "digits-cycle-V4-a1.png")  # under runs/ by default
    assert "mean and ±std over 3 seeds" in titles[-1]
    xlabels = [ax.get_xlabel() for ax in plt.gcf().axes]
    assert "virtual time (s)" in xlabels
    write_run(tmp_path / "mpi" / "s0", "mpi", 0)
    assert plots.main([str(tmp_path / "mpi"), "--out", str(tmp_path / "one")]) == 0
    assert titles[-1].endswith("1 seed") and "wall-clock time (s)" in [ax.get_xlabel() for ax in plt.gcf().axes]


def test_plot_failures_runs_as_documented_and_writes_under_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name, failures in (("fail-mw", (0,)), ("nofail-mw", ())):
        write_run(tmp_path / "runs" / name, "mpi", 0, failures=failures)
    assert plot_failures.main(["runs/fail-mw", "runs/nofail-mw", "--ymin", "0.1"]) == 0
    assert os.path.isfile(tmp_path / "runs" / "failures.png")
    assert plot_failures.main(["runs/fail-mw", "runs/missing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: runs/missing is not a run folder") and err.count("\n") == 1


def test_no_committed_file_is_ignored():
    ignored = subprocess.run(["git", "ls-files", "--cached", "--ignored", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    assert ignored == []


def test_throughput_figure_draws_the_core_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    series = [dict(name="MW-R", axis="R", cores=2, points=[(1, (10.0, 9.0, 11.0)), (2, (19.0, 18.0, 20.0)),
                                                            (8, (21.0, 20.0, 22.0))]),
              dict(name="gossip", axis="V", cores=None, points=[(4, (40.0, 39.0, 41.0)), (8, (60.0, 58.0, 62.0))])]
    plots.draw_throughput(series, str(tmp_path / "throughput.png"))
    mw_panel, gossip_panel = plt.gcf().axes
    limit = [line for line in mw_panel.get_lines() if line.get_label() == "limit of 2 cores"]
    assert len(limit) == 1 and limit[0].get_ydata().tolist() == [10.0, 20.0, 20.0]
    assert not [line for line in gossip_panel.get_lines() if "limit" in line.get_label()]
    assert os.path.getsize(tmp_path / "throughput.png") > 0


def test_accuracy_panels_draw_the_targets_and_zoom_to_their_band(tmp_path, monkeypatch):
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    for seed in (0, 1):
        write_run(tmp_path / "sim" / f"s{seed}", "sim", seed)
    runs = runs_lib.find_runs([str(tmp_path / "sim")])
    key, algos = next(iter(runs_lib.group_runs(runs).items()))
    plots.draw_setting(key, algos, str(tmp_path / "f.png"), str(tmp_path / "f.csv"), targets=(0.9, 0.95))
    accuracy_panels = [ax for ax in plt.gcf().axes if ax.get_ylabel() == "test accuracy"]
    assert accuracy_panels and all(ax.get_ylim()[0] == pytest.approx(0.8) for ax in accuracy_panels)
    assert all({0.9, 0.95} <= {line.get_ydata()[0] for line in ax.get_lines()} for ax in accuracy_panels)
    assert [ax.get_xscale() for ax in plt.gcf().axes if ax.get_xlabel().startswith("virtual time")] == ["log", "log"]


def test_the_throughput_figure_draws_one_line_per_distinct_measurement(tmp_path, monkeypatch):
    monkeypatch.setattr(plt, "close", lambda fig=None: None)
    same = [(5, (90.0, 88.0, 92.0)), (10, (190.0, 185.0, 195.0))]
    series = [dict(name=f"gossip {rate}", axis="V", points=same, cores=None) for rate in ("a", "b", "c")]
    series.append(dict(name="MW-R", axis="R", points=[(1, (30.0, 29.0, 31.0)), (5, (130.0, 128.0, 132.0))], cores=None))
    plots.draw_throughput(series, str(tmp_path / "t.png"))
    v_panel = next(ax for ax in plt.gcf().axes if ax.get_xlabel().startswith("nodes V"))
    assert [t.get_text() for t in v_panel.get_legend().get_texts()] == ["gossip a = gossip b = gossip c"]
