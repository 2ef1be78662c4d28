"""The multi-node launch files: the Kubeflow MPIJob manifests, the Dockerfile,
the MPI hostfile and the README's and docs' commands that run main.py.

Every `python main.py ...` they contain must be accepted by config.parse_config
(paths not checked: they live on the cluster), mpirun's -n must match the
workers, and the pod templates must be valid Kubernetes objects.
"""
import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from core import config

ROOT = Path(__file__).resolve().parent.parent
JOBS = ("cifar_job.yaml", "mnli_job.yaml")
ROLES = ("Launcher", "Worker")

# the paper's two configurations (SEMANTICS.md §4, §7)
PAPER = {
    "cifar_job.yaml": dict(task="cifar10", graph="configs/paper/cycle_graph_20_nodes.json", walks=10, tau=5,
                           lr=0.05, batch_size=32, partition="dirichlet", alpha=0.1, train_time=900.0,
                           momentum=0.9, nesterov=True, weight_decay=1e-4, warmup_time=120.0, device="cuda"),
    "mnli_job.yaml": dict(task="mnli", graph="configs/paper/cycle_graph_20_nodes.json", tau=5, lr=1e-5,
                          batch_size=8, train_time=1800.0, model_dir="/models/opt-125m", data_dir="/data/mnli",
                          warmup_time=120.0, device="cuda"),
}


def load_job(name):
    with open(ROOT / name) as f:
        return yaml.safe_load(f)


def containers(pod_spec):
    return list(pod_spec.get("initContainers", [])) + list(pod_spec["containers"])


def launcher_container(job):
    return job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]


def command_words(container):
    """The container's command + args as argv; a `sh -c SCRIPT` is split with shlex."""
    argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
    if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and argv[1] in ("-c", "-lc"):
        argv = shlex.split(argv[2])
    return argv


def parse_mpirun(argv):
    """(number of ranks, main.py's arguments) of an `mpirun -n N ... python main.py ARGS` argv."""
    starts = [i for i, w in enumerate(argv) if os.path.basename(w) in ("mpirun", "mpiexec")]
    assert starts, f"no mpirun in {argv}"
    words = argv[starts[0]:]
    n = None
    for flag in ("-n", "-np"):
        if flag in words:
            n = int(words[words.index(flag) + 1])
    assert n is not None, f"mpirun without -n: {words}"
    scripts = [i for i, w in enumerate(words) if w.endswith("main.py")]
    assert scripts, f"mpirun does not run main.py: {words}"
    args = []
    for w in words[scripts[0] + 1:]:
        if w in (";", "&&", "||", "|"):
            break
        args.append(w)
    return n, args


@pytest.fixture(params=JOBS)
def job_name(request):
    return request.param


def test_job_is_an_mpich_mpijob(job_name):
    job = load_job(job_name)
    assert job["apiVersion"] == "kubeflow.org/v2beta1"
    assert job["kind"] == "MPIJob"
    spec = job["spec"]
    assert spec["mpiImplementation"] == "MPICH"
    assert spec["slotsPerWorker"] == 1
    assert spec["runPolicy"]["cleanPodPolicy"] in ("Running", "All")
    assert set(spec["mpiReplicaSpecs"]) == set(ROLES)
    assert spec["mpiReplicaSpecs"]["Launcher"]["replicas"] == 1
    assert spec["mpiReplicaSpecs"]["Worker"]["replicas"] == 20
    for role in ROLES:
        pod = spec["mpiReplicaSpecs"][role]["template"]["spec"]
        assert pod["containers"] and all(c.get("image") for c in pod["containers"])
        assert command_words(pod["containers"][0]), f"{role} has no command"
    images = {c["image"] for role in ROLES for c in spec["mpiReplicaSpecs"][role]["template"]["spec"]["containers"]}
    assert len(images) == 1, "launcher and workers must run the same image (the repo's Dockerfile)"


def test_launcher_runs_the_paper_config(job_name):
    job = load_job(job_name)
    spec = job["spec"]
    n, args = parse_mpirun(command_words(launcher_container(job)))
    cfg = config.parse_config(args, check_paths=False)  # must not raise
    assert n == spec["mpiReplicaSpecs"]["Worker"]["replicas"] * spec["slotsPerWorker"]
    assert cfg["nodes"] in (0, n)
    assert cfg["walks"] <= n
    for key, value in PAPER[job_name].items():
        assert cfg[key] == pytest.approx(value) if isinstance(value, float) else cfg[key] == value, key
    if cfg["graph"].endswith(".json"):
        assert (ROOT / cfg["graph"]).is_file(), "the image runs in the repo folder: the graph must ship in it"
        workdirs = {c.get("workingDir") for role in ROLES
                    for c in spec["mpiReplicaSpecs"][role]["template"]["spec"]["containers"]}
        assert workdirs == {dockerfile_workdir()}


@pytest.mark.parametrize("role", ROLES)
def test_pod_templates_are_valid_kubernetes(job_name, role):
    template = load_job(job_name)["spec"]["mpiReplicaSpecs"][role]["template"]
    manifest = {"apiVersion": "v1", "kind": "PodTemplate",
                "metadata": {"name": f"{job_name.split('_')[0]}-{role.lower()}"}, "template": template}
    version = kubernetes_validate.latest_version()
    kubernetes_validate.validate(manifest, desired_version=version, strict=True)


def test_pods_are_unprivileged_and_secrets_come_from_secret_refs(job_name):
    job = load_job(job_name)
    for role in ROLES:
        pod = job["spec"]["mpiReplicaSpecs"][role]["template"]["spec"]
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in containers(pod):
            sc = c.get("securityContext", {})
            assert sc.get("privileged") is not True, f"{role}/{c['name']} is privileged"
            assert sc.get("allowPrivilegeEscalation") is False, f"{role}/{c['name']}"
            assert sc.get("runAsNonRoot", pod.get("securityContext", {}).get("runAsNonRoot")) is True
            for env in c.get("env", []):
                if re.search(r"pass|token|secret|key|credential", env["name"], re.I):
                    assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), env["name"]


def as_quantity(value):
    return int(str(value))


def test_resources_one_gpu_per_worker(job_name):
    replicas = load_job(job_name)["spec"]["mpiReplicaSpecs"]
    worker = replicas["Worker"]["template"]["spec"]["containers"][0]["resources"]
    assert as_quantity(worker["limits"]["nvidia.com/gpu"]) == 1
    if "nvidia.com/gpu" in worker.get("requests", {}):
        assert as_quantity(worker["requests"]["nvidia.com/gpu"]) == 1
    launcher = replicas["Launcher"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in launcher.get("limits", {}) and "nvidia.com/gpu" not in launcher.get("requests", {})
    for role in ROLES:
        for c in containers(replicas[role]["template"]["spec"]):
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), f"{role}/{c['name']} needs requests"


def test_data_read_only_and_output_writable_on_volumes(job_name):
    job = load_job(job_name)
    _, args = parse_mpirun(command_words(launcher_container(job)))
    cfg = config.parse_config(args, check_paths=False)
    pod = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = pod["containers"][0]["volumeMounts"]

    def mount_of(path):
        found = [m for m in mounts if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
        assert found, f"{path} is on no volume of the workers"
        mount = max(found, key=lambda m: len(m["mountPath"]))
        volume = volumes[mount["name"]]
        assert "persistentVolumeClaim" in volume, f"{path} should live on a PersistentVolumeClaim"
        return mount, volume

    inputs = [cfg["data_dir"]] + ([cfg["model_dir"]] if cfg["task"] == "mnli" else [])
    for path in inputs:
        mount, volume = mount_of(path)
        assert mount.get("readOnly") is True and volume["persistentVolumeClaim"].get("readOnly") is True, path
    mount, volume = mount_of(cfg["out"])
    assert not mount.get("readOnly") and not volume["persistentVolumeClaim"].get("readOnly")


def dockerfile_text():
    return (ROOT / "deploy" / "Dockerfile").read_text()


def dockerfile_workdir():
    return re.findall(r"^WORKDIR\s+(\S+)", dockerfile_text(), re.M)[-1]


def test_dockerfile_gpu_image_with_requirements_minus_cpu_torch():
    text = dockerfile_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
    assert base and re.fullmatch(r"pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-runtime", base.group(1))
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", text, re.M)
    assert "grep -v '^torch==' requirements.txt" in text
    pins = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("torch==")]
    assert len(pins) == 1, "the Dockerfile drops exactly the requirements' CPU torch pin"
    assert base.group(1).split(":")[1].startswith(pins[0].split("==")[1] + "-"), "the base image's torch is the pinned one"
    assert "-c /tmp/constraints-gpu.txt" in text and "COPY requirements.txt constraints.txt" in text
    assert "openssh-server" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_jobs_match_the_image():
    """sshd port, sshd config, SSH mount path and user of the job files are the image's."""
    text = dockerfile_text()
    port = int(re.search(r"^ARG SSH_PORT=(\d+)", text, re.M).group(1))
    for name in JOBS:
        spec = load_job(name)["spec"]
        worker = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
        words = command_words(worker["containers"][0])
        assert os.path.basename(words[0]) == "sshd"
        assert words[words.index("-f") + 1] in text, "the worker's sshd config is the one the image writes"
        assert worker["containers"][0]["readinessProbe"]["tcpSocket"]["port"] == port
        assert spec["sshAuthMountPath"] == "/home/mpiuser/.ssh" and "mpiuser" in text
        for role in ROLES:
            assert spec["mpiReplicaSpecs"][role]["template"]["spec"]["securityContext"]["runAsUser"] == 1000
    assert "--uid 1000" in text


def test_dockerignore_keeps_code_and_drops_local_state():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path):
        return any(fnmatch.fnmatch(path, p.lstrip("/").replace("**/", "")) or
                   fnmatch.fnmatch(path.split("/")[0], p.lstrip("/")) for p in patterns)

    for path in (".git", "runs", "data", "__pycache__"):
        assert ignored(path), path
    for path in ("main.py", "requirements.txt", "constraints.txt", "configs", "configs/paper/cycle_graph_20_nodes.json"):
        assert not ignored(path), path


# Built from pieces so that this file does not match its own patterns.
_PW = "pass" + "word"
SECRET_PATTERNS = [
    re.compile(_PW + r"\s*[=:]\s*\S", re.I),
    re.compile("pass" + r"wd\s*[=:]\s*\S", re.I),
    re.compile("ssh" + r"pass\s+-p"),
    re.compile(r"(?<!\w)SSH" + r"PASS=\S"),
    re.compile(r"\bch" + r"passwd\b"),
    re.compile("-----BEGIN [A-Z ]*" + "PRIVATE KEY-----"),
]


def repo_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
        return [ROOT / p for p in out.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if ".git" not in p.parts]


def test_no_password_or_private_key_in_the_repository():
    hits = []
    for path in repo_files():
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            if any(p.search(line) for p in SECRET_PATTERNS):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not hits, "looks like a password or key:\n" + "\n".join(hits)


def hostfile_entries():
    entries = []
    for line in (ROOT / "hostfile").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9.-]*):(\d+)", line)
            assert match, f"not an MPICH host:slots line: {line!r}"
            entries.append((match.group(1), int(match.group(2))))
    return entries


def test_hostfile_lines_are_host_colon_slots():
    entries = hostfile_entries()
    assert len(entries) == 20 and all(slots == 1 for _, slots in entries)
    assert len({host for host, _ in entries}) == len(entries)
    assert "slots=" in (ROOT / "hostfile").read_text(), "shows the Open MPI form in a comment"


@pytest.mark.mpi
def test_hydra_reads_the_hostfile(tmp_path):
    """MPICH's own mpiexec parses the file (comments included), with the hosts swapped for localhost."""
    mpiexec = shutil.which("mpiexec")
    if not mpiexec:
        pytest.skip("mpiexec not found (pip install -r requirements.txt brings MPICH)")
    local = tmp_path / "hostfile"
    local.write_text(re.sub(r"(?m)^[A-Za-z0-9][A-Za-z0-9.-]*:", "localhost:", (ROOT / "hostfile").read_text()))
    total = sum(slots for _, slots in hostfile_entries())
    result = subprocess.run([mpiexec, "-f", str(local), "-n", str(total), "printenv", "MPI_LOCALRANKID"],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert sorted(int(x) for x in result.stdout.split()) == list(range(total))


def doc_commands():
    """The multi-node commands (mpirun with a hostfile) of the README's and the docs' code blocks that run main.py."""
    text = "".join(path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if "main.py" in line and "hostfile" in line:
                commands.append(line.strip())
    return commands


def test_doc_launch_commands_are_valid():
    commands = doc_commands()
    assert len(commands) >= 3
    total = sum(slots for _, slots in hostfile_entries())
    for command in commands:
        argv = shlex.split(command)
        n, args = parse_mpirun(argv)
        cfg = config.parse_config(args, check_paths=False)
        assert cfg["nodes"] == n == total, command
        if cfg["graph"].endswith(".json"):
            assert (ROOT / cfg["graph"]).is_file()
