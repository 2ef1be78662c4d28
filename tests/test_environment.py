"""The pinned environment: every requirement is imported by something and pinned in constraints.txt,
the installed versions are the pinned ones, CI installs through the pins; software_versions()."""
import ast
import glob
import importlib.metadata
import os
import re

from core import run_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# requirement name -> the module it is imported as (mpich is the MPI library mpi4py loads and mpirun)
MODULES = {"scikit-learn": "sklearn", "pillow": "PIL", "pyyaml": "yaml", "kubernetes-validate": "kubernetes_validate",
           "pytest-timeout": None, "mpich": None}


def names(path):
    lines = [line.split("#")[0].strip() for line in open(os.path.join(ROOT, path))]
    return [re.split(r"[=<>!~\[; ]", line)[0].lower() for line in lines if line]


def imported(*patterns):
    modules = set()
    for path in (p for pattern in patterns for p in glob.glob(os.path.join(ROOT, pattern))):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_requirement_is_imported_and_nothing_unused_is_required():
    # the project's code: the top level and its folders (analysis/, core/, ...), not tests/
    folders = [d for d in sorted(os.listdir(ROOT)) if os.path.isdir(os.path.join(ROOT, d)) and d != "tests"]
    code, tests = imported("*.py", *(f"{d}/*.py" for d in folders)), imported("tests/*.py")
    for name in names("requirements.txt"):
        module = MODULES.get(name, name)
        assert module is None or module in code, f"requirements.txt lists {name}, which no module imports"
    for name in names("requirements-test.txt"):
        module = MODULES.get(name, name)
        assert module is None or (module in tests and module not in code), f"{name} is not a test-only import"
    for unused in ("tqdm", "accelerate"):
        assert unused not in code | tests


def pins():
    return {line.split("==")[0].lower().replace("_", "-"): line.split("==")[1].strip()
            for line in open(os.path.join(ROOT, "constraints.txt")) if "==" in line and not line.startswith("#")}


def test_constraints_pin_every_requirement_and_match_the_install():
    pinned = pins()
    for name in names("requirements.txt") + names("requirements-test.txt"):
        assert name in pinned, f"constraints.txt does not pin {name}"
    for name, version in pinned.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a dependency of another platform's build
        assert installed.split("+")[0] == version, f"{name} {installed} is installed, constraints.txt pins {version}"


def test_ci_installs_through_the_pins():
    """CI runs `make test`, whose venv is installed through the pins."""
    ci, make = (open(os.path.join(ROOT, *path)).read() for path in ((".ci", "run"), ("Makefile",)))
    assert "make test" in ci
    assert "pip install -r requirements.txt -r requirements-test.txt -c constraints.txt" in make


def test_software_versions_name_what_the_numbers_depend_on():
    versions = run_records.software_versions()
    assert versions["torch"].split("+")[0] == pins()["torch"]
    assert versions["numpy"] == pins()["numpy"] and versions["mpi4py"] == pins()["mpi4py"]
    assert versions["mpi_library"] and "\n" not in versions["mpi_library"]
    assert set(versions) == {"python", "torch", "numpy", "mpi4py", "mpi_library", "transformers", "cuda"}
