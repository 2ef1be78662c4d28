"""The README stands alone: no path outside the repository, the semantics and the license ship
with it, and its quick commands run. Quick commands: the lines of its ```bash blocks that
start with QUICK_COMMANDS (each takes seconds, offline)."""
import re
import subprocess

import pytest

from conftest import REPO

QUICK_COMMANDS = ("python main.py --help", "python graphs.py", "python data.py --task digits")
OUTSIDE = "../" + "shared"  # the project workspace's folder; in two pieces so this file does not name it


def tracked_files():
    return subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()


def readme():
    with open(f"{REPO}/README.md") as f:
        return f.read()


def test_nothing_points_outside_the_repository():
    outside = []
    for path in tracked_files():
        try:
            with open(f"{REPO}/{path}") as f:
                if OUTSIDE in f.read():
                    outside.append(path)
        except (UnicodeDecodeError, FileNotFoundError):  # binary files; files deleted in the working tree
            pass
    assert outside == []


def test_readme_links_the_semantics_and_the_license():
    text = readme()
    assert "[SEMANTICS.md](docs/SEMANTICS.md)" in text and "[LICENSE](LICENSE)" in text
    assert "https://arxiv.org/abs/2504.09792" in text and "eprint        = {2504.09792}" in text
    assert {"docs/SEMANTICS.md", "LICENSE"} <= set(tracked_files())
    sections = set(re.findall(r"^## (\d+)\.", open(f"{REPO}/docs/SEMANTICS.md").read(), re.M))
    assert set(re.findall(r"SEMANTICS\.md §(\d+)", text)) <= sections


def quick_commands():
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", readme(), re.S):
        lines += [line.strip() for line in block.splitlines() if line.strip().startswith(QUICK_COMMANDS)]
    return lines


def test_readme_has_quick_commands():
    assert len(quick_commands()) >= 3


@pytest.mark.parametrize("command", quick_commands())
def test_quick_command_runs(command):
    result = subprocess.run(["bash", "-c", command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_bare_pytest_collects_from_the_repository_root():
    """`pytest` (not `python -m pytest`, which also puts the current folder on the path) finds the repo's modules."""
    result = subprocess.run(["pytest", "--collect-only", "-q", "tests/test_build_run.py"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
