"""The command line and its checks: argparse built from the config dict, one-line errors with
exit code 2 on every rank (real mpirun), reported before torch is imported."""
import subprocess
import sys

import pytest

from core import config
from conftest import REPO, run_main


def test_help_lists_every_flag_with_its_default():
    result = subprocess.run([sys.executable, "main.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps long lines
    for key in config.config:
        assert config.flag(key) in text, key
    assert "--walks INT R, number of concurrent random walks (MW) (default: 4)" in text
    assert "(default: 0.75 0.9)" in text and "(default: false)" in text


def test_command_line_forms():
    cfg = config.parse_config(["--walks", "2", "--lr=0.1", "--failure-times", "5", "10", "--nesterov", "false",
                               "--decay-fractions", "0.5"], check_paths=False)
    assert (cfg["walks"], cfg["lr"], cfg["failure_times"], cfg["nesterov"]) == (2, 0.1, [5.0, 10.0], False)
    assert config.parse_config(["--failure-times"], check_paths=False)["failure_times"] == []


@pytest.mark.parametrize("args,message", [
    (["--walsk", "2"], "unknown flag --walsk; did you mean --walks?"),
    (["--zzz"], "unknown flag --zzz; allowed: --algorithm, --walks"),
    (["walks"], "unexpected argument 'walks'"),
    (["--walks"], "--walks needs one value"),
    (["--lr", "-1e-3"], "lr must be in (0, 10], got -0.001"),  # a value, not an unknown short flag
    (["--nesterov", "maybe"], "--nesterov must be bool, got 'maybe'"),
    (["--bandwidth", "inf"], "bandwidth must be finite, got inf"),
    (["--momentum", "1"], "momentum must be in [0, 1), got 1.0"),
    (["--seed", "-1"], "seed must be >= 0, got -1"),
])
def test_bad_command_line_is_one_config_error(args, message):
    with pytest.raises(config.ConfigError) as error:
        config.parse_config(args, check_paths=False)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_every_float_key_has_a_range():
    floats = [k for k, v in config.config.items() if isinstance(v, float)]
    assert [k for k in floats if k not in config.RANGES] == []


def test_resumed_run_takes_start_keys_from_the_command_line(tmp_path):
    (tmp_path / "config.json").write_text('{"walks": 1, "overwrite": true}')
    cfg = config.parse_config(["--resume", str(tmp_path)], check_paths=False)
    assert cfg["overwrite"] is False and cfg["walks"] == 1 and cfg["out"] == str(tmp_path)


BAD_FLAGS = [
    (["--lr", "nan"], "lr must be finite, got nan"),
    (["--lr", "inf"], "lr must be finite, got inf"),
    (["--lr", "1e6"], "lr must be in (0, 10], got 1000000.0"),
    (["--momentum", "nan"], "momentum must be finite, got nan"),
    (["--weight-decay", "nan"], "weight_decay must be finite, got nan"),
    (["--failure-times", "nan"], "failure_times must be finite, got [nan]"),
    (["--warmup-time", "nan"], "warmup_time must be finite, got nan"),
]


@pytest.mark.mpi
@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_number_is_one_line_and_exit_2_on_every_rank(args, message):
    result = run_main(2, args, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines == [f"error: {message}"], result.stderr


@pytest.mark.mpi
def test_bad_flag_is_reported_by_eight_ranks_before_torch(tmp_path):
    """The work before the report is bounded: no rank imports torch (a stand-in torch package first on
    the path leaves a file per import). The time this takes is in docs/configuration.md, not asserted here."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        f"import os\nopen(os.path.join({str(tmp_path)!r}, f'imported-by-{{os.getpid()}}'), 'w').close()\n"
        "raise ImportError('stand-in torch')\n")
    result = run_main(8, ["--walks", "abc"], timeout=60, pythonpath=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: --walks must be int, got 'abc'"]
    assert not list(tmp_path.glob("imported-by-*"))


@pytest.mark.mpi
def test_device_cuda_without_a_gpu_is_one_line():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this host has a GPU: --device cuda is valid here")
    result = run_main(2, ["--walks", "1", "--device", "cuda"], timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: device cuda: this host has no usable CUDA GPU (torch.cuda.is_available() is False); "
        "use --device auto or cpu"]
