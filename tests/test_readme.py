"""The README stands alone: no path outside the repository, the semantics and the license ship
with it, its quick commands run, its map names every Python file, and every doc it links exists
with the files its commands name. Quick commands: the lines of its ```bash blocks that start
with QUICK_COMMANDS (each takes seconds, offline)."""
import glob
import os
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


def docs():
    """{path: text} of the README and every file under docs/."""
    paths = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(f"{REPO}/docs/*.md"))]
    return {path: open(f"{REPO}/{path}").read() for path in paths}


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


@pytest.mark.slow
def test_bare_pytest_collects_from_the_repository_root():
    """`pytest` (not `python -m pytest`, which also puts the current folder on the path) finds the repo's modules."""
    result = subprocess.run(["pytest", "--collect-only", "-q", "tests/test_build_run.py"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_linked_file_exists():
    """Relative links of the README and the docs (anchors dropped) lead to files of the repository."""
    missing = []
    for path, text in docs().items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not target.startswith(("http://", "https://", "#")):
                linked = os.path.normpath(os.path.join(os.path.dirname(path), target.split("#")[0]))
                if not os.path.exists(f"{REPO}/{linked}"):
                    missing.append(f"{path}: {target}")
    assert missing == []
    assert re.search(r"\]\(docs/", readme())


def command_paths(text):
    """Repository files a command names: scripts, configs, job files (``python -m X`` as X's file), from
    the ```bash blocks and the inline `python ...` / `bash ...` spans. Paths under runs/, absolute
    paths and home paths are the user's, not the repository's."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    lines += re.findall(r"`((?:python|bash) [^`]+)`", text)
    paths = set()
    for line in lines:
        words = [w.strip("'\"()") for w in line.split("#")[0].split()]
        for i, word in enumerate(words):
            if re.fullmatch(r"[\w./-]+\.(py|sh|json|yaml|txt)|deploy/Dockerfile", word) \
                    and not word.startswith(("/", "runs/", "~")):
                paths.add(os.path.normpath(word))
            if i >= 2 and words[i - 2:i] == ["python", "-m"] and word != "pytest" and word != "venv":
                paths.add(word.replace(".", "/") + ".py")
    return paths


def test_every_path_a_command_names_exists():
    named = {path: command_paths(text) for path, text in docs().items()}
    assert "analysis/experiments.py" in set().union(*named.values())  # the check reads the commands at all
    missing = [f"{doc}: {path}" for doc, paths in named.items() for path in sorted(paths)
               if not os.path.exists(f"{REPO}/{path}")]
    assert missing == []


def test_the_map_names_every_python_file():
    """A top-level module as `file.py` anywhere in the README; a file in a folder as `file.py` on its
    folder's row of the map."""
    text = readme()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)/` \|.*$", text, re.M)}
    unnamed = []
    for path in tracked_files():
        folder, name = os.path.split(path)
        if not name.endswith(".py") or name == "__init__.py" or (folder == "tests" and name != "conftest.py"):
            continue
        if f"`{name}`" not in (rows.get(folder, "") if folder else text):
            unnamed.append(path)
    assert unnamed == []
