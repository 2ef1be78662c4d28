"""setup_ssh_leader.sh against a real OpenSSH server on 127.0.0.1.

The test starts its own sshd (own config, host key and authorized_keys in a
temporary folder, on a free port) and runs the script with a temporary HOME,
so neither the machine's sshd nor the real ~/.ssh is used or changed. The first
contact authenticates with a bootstrap key the test pre-authorises (the
script's --bootstrap-identity), after which the script's own key must work
alone in BatchMode. The sshd test skips, saying why, only where openssh-server
is not installed or sshd cannot start (.ci/run installs it).
"""
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "setup_ssh_leader.sh"
HOSTFILE = ROOT / "hostfile"


def find_sshd():
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/bin/sshd") if os.access(p, os.X_OK)), None)


def run_script(args, home, extra_env=None, timeout=60):
    """Run the script like CI does: no stdin, no agent, HOME pointed elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSHPASS", "SSH_ASKPASS", "DISPLAY")}
    env["HOME"] = str(home)
    env.update(extra_env or {})
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def tree_state(path):
    """{relative path: (mode, sha256)} of every file below path; {} if absent."""
    path = Path(path)
    state = {}
    if path.exists():
        for p in sorted(path.rglob("*")):
            key = str(p.relative_to(path))
            state[key] = (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
    return state


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    sshd_bin = find_sshd()
    if not sshd_bin:
        pytest.skip("openssh-server is not installed (apt-get install openssh-server; .ci/run does it)")
    for tool in ("ssh", "ssh-keygen", "ssh-copy-id"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install openssh-client)")
    tmp = tmp_path_factory.mktemp("sshd")
    user = pwd.getpwuid(os.getuid()).pw_name
    remote_home = tmp / "remote_home"
    (remote_home / ".ssh").mkdir(parents=True)
    for name in ("host_key", "bootstrap_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"test {name}", "-f", str(tmp / name)],
                       check=True, stdin=subprocess.DEVNULL)
    authorized = remote_home / ".ssh" / "authorized_keys"
    shutil.copy(tmp / "bootstrap_key.pub", authorized)
    port = free_port()
    # HOME of the sessions is the temporary remote_home (SetEnv), so ssh-copy-id
    # appends to the very authorized_keys file this sshd reads.
    config = tmp / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {tmp / 'host_key'}
PidFile {tmp / 'sshd.pid'}
AuthorizedKeysFile {authorized}
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
SetEnv HOME={remote_home}
""")
    if os.getuid() == 0 and not os.path.isdir("/run/sshd"):
        os.makedirs("/run/sshd", mode=0o755)  # sshd's privilege-separation directory
    log = open(tmp / "sshd.log", "w")
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60  # a loaded machine starts it slowly; only a dead sshd takes longer
    while True:
        if proc.poll() is not None:
            log.close()
            pytest.skip(f"sshd did not start: {(tmp / 'sshd.log').read_text().strip()[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                log.close()
                pytest.skip("sshd did not listen within 60 s")
            time.sleep(0.05)
    yield dict(port=port, user=user, tmp=tmp, authorized=authorized, bootstrap=tmp / "bootstrap_key")
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def batch_login(home, host="127.0.0.1", *extra):
    """Log in the way mpirun will: plain `ssh HOST` (config from HOME), no prompt, known host key only."""
    ssh_dir = Path(home) / ".ssh"
    return subprocess.run(["ssh", "-F", str(ssh_dir / "config"), "-o", "BatchMode=yes",
                           "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
                           "-o", "IdentitiesOnly=yes", *extra, host, "echo", "logged-in-as", "$(id -un)"],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


@pytest.mark.mpi
def test_sets_up_passwordless_ssh_idempotently(sshd, tmp_path):
    real_ssh_dir = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh"
    real_before = tree_state(real_ssh_dir)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    config = home / ".ssh" / "config"
    own_config = "# the user's own settings\nHost example-other\n    User someone"  # no final newline
    config.write_text(own_config)
    member = f"{sshd['user']}@127.0.0.1:{sshd['port']}"

    # no key accepted yet: the new key alone cannot log in
    first = run_script(["--bootstrap-identity", str(sshd["bootstrap"]), member], home)
    assert first.returncode == 0, first.stdout + first.stderr
    key = home / ".ssh" / "id_ed25519"
    assert key.is_file() and (home / ".ssh" / "id_ed25519.pub").is_file()
    assert "ssh-keygen" in first.stdout and "ssh-copy-id" in first.stdout
    assert "key login works" in first.stdout

    # mpirun's way: `ssh 127.0.0.1` with the appended Host block (User, Port, key), BatchMode
    login = batch_login(home)
    assert login.returncode == 0, login.stderr
    assert f"logged-in-as {sshd['user']}" in login.stdout
    # and with the new key only, spelled out
    login = batch_login(home, "127.0.0.1", "-i", str(key), "-p", str(sshd["port"]), "-l", sshd["user"])
    assert login.returncode == 0, login.stderr

    text = config.read_text()
    assert text.startswith(own_config + "\n"), "the existing ~/.ssh/config must be kept, only appended to"
    assert text.splitlines().count("Host 127.0.0.1") == 1 and f"Port {sshd['port']}" in text
    assert "StrictHostKeyChecking no" not in text
    pub = (home / ".ssh" / "id_ed25519.pub").read_text().split()[1]
    authorized = sshd["authorized"].read_text().splitlines()
    assert sum(pub in line for line in authorized) == 1
    known = (home / ".ssh" / "known_hosts").read_text().splitlines()
    assert len(known) == len(set(known)) >= 1
    after_first = tree_state(home), sshd["authorized"].read_bytes()

    # --dry-run afterwards: prints the plan, changes nothing
    dry = run_script(["--dry-run", "--bootstrap-identity", str(sshd["bootstrap"]), member], home)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would run:" in dry.stdout and "ssh-copy-id" in dry.stdout
    assert (tree_state(home), sshd["authorized"].read_bytes()) == after_first

    # second run: nothing added anywhere, the key is not regenerated
    second = run_script(["--bootstrap-identity", str(sshd["bootstrap"]), member], home)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing to do" in second.stdout and "ssh-keygen" not in second.stdout
    assert (tree_state(home), sshd["authorized"].read_bytes()) == after_first

    # without any bootstrap credential it still succeeds: the key is already in place
    third = run_script([member], home)
    assert third.returncode == 0, third.stdout + third.stderr
    assert (tree_state(home), sshd["authorized"].read_bytes()) == after_first

    assert tree_state(real_ssh_dir) == real_before, "the real ~/.ssh must stay untouched"


@pytest.mark.mpi
def test_unreachable_member_fails_without_prompting(sshd, tmp_path):
    """No credential for the first contact and no terminal: a clear failure, exit 1, no hang."""
    home = tmp_path / "home"
    home.mkdir()
    result = run_script([f"{sshd['user']}@127.0.0.1:{sshd['port']}"], home, extra_env={"CI": "true"}, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED" in result.stderr
    assert (home / ".ssh" / "id_ed25519.pub").read_text().split()[1] not in sshd["authorized"].read_text()


def test_dry_run_on_fresh_home_changes_nothing_and_hides_the_password(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    secret = "pw-" + os.urandom(8).hex()
    result = run_script(["--dry-run", "--hostfile", str(HOSTFILE), "alice@extra-node:2222"], home,
                        extra_env={"SSHPASS": secret})
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(home.iterdir()) == [], "--dry-run must not create anything"
    out = result.stdout + result.stderr
    assert secret not in out
    assert "ssh-keygen -q -t ed25519" in out
    assert "sshpass -e ssh-copy-id" in out
    assert "StrictHostKeyChecking=accept-new" in out
    hosts = [line.split(":")[0] for line in HOSTFILE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    for host in hosts + ["extra-node"]:
        assert f"Host {host}\n" in out
    assert "User alice" in out and "Port 2222" in out


def test_usage_errors(tmp_path):
    assert run_script([], tmp_path).returncode == 2
    assert run_script(["--no-such-option", "node01"], tmp_path).returncode == 2
    bad = run_script(["--dry-run", "bad host;rm"], tmp_path)
    assert bad.returncode == 1 and "skipped" in bad.stderr
    assert run_script(["--help"], tmp_path).returncode == 0


def test_script_never_disables_host_key_checking_globally():
    text = SCRIPT.read_text()
    assert "StrictHostKeyChecking no" not in text and "StrictHostKeyChecking=no" not in text
    assert "accept-new" in text
    assert not re.search(r'(?<!>)>\s*"\$CONFIG"', text), "~/.ssh/config is only appended to, never overwritten"
    assert '>>"$CONFIG"' in text


def test_shellcheck_clean():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run does it)")
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
