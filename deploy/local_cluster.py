"""
A cluster of K hosts on this machine, to run the multi-node path (SSH, a hostfile, mpirun over
TCP) before renting nodes. Needs root, iproute2 (`ip netns`, `tc`) and OpenSSH (client and server).

    sudo python deploy/local_cluster.py up --hosts 3 --rate 1gbit   # prints the hosts and the hostfile
    sudo python deploy/local_cluster.py run -- mpirun -n 3 python main.py --train-time 10
    sudo python deploy/local_cluster.py down

Each host is a network namespace `mwc-<tag>-h<i>` whose processes run in a UTS namespace of
their own with hostname `host<i>`; its interface eth0 (10.77.0.<10+i>/24) is one end of a veth
pair whose other end is a port of a bridge living in a namespace of the rig (`mwc-<tag>-br`).
Nothing is added to the machine's own namespace: the private addresses exist only inside the
rig's namespaces, so no rank's traffic can reach another interface of the machine.
Every link is shaped in both directions by an htb class (`tc` shapes what leaves an interface:
the host's eth0 shapes what the host sends, the bridge's port what it receives); with no --rate
the class is 100gbit, which does not limit, but its byte counters still prove that data crossed.

Each host runs its own OpenSSH sshd (host key made here, in the rig's temporary folder), and
the leader's keys are distributed by setup_ssh_leader.sh as a user would run it: HOME is the
rig's folder, first contact through a bootstrap key each sshd accepts. mpirun runs on host0
(the leader) with the rig's hostfile and an ssh wrapper (HYDRA_LAUNCHER_EXEC) that reads the
leader's ssh config; UCX_TLS=tcp,self makes UCX send through the links (UCX sees every
namespace as one machine and would otherwise use shared memory, bypassing the network).

Tear-down removes every namespace (and with it its veths, bridge and tc rules), each host's
sshd and every process left in the namespaces, /etc/netns/<namespace>, and the temporary
folder; it runs on exit, on SIGINT/SIGTERM, and a new rig first sweeps the leftovers of rigs
whose owning process has died (tagged `mwc-`).
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the project's modules, however the script is started

import argparse
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

PREFIX = "mwc-"                      # every namespace and temporary folder the rig makes starts with this
STATE_ROOT = tempfile.gettempdir()   # the rig's folder: STATE_ROOT/mwc-<tag>/
SUBNET = "10.77.0"                   # host i is SUBNET.(10 + i)/24, inside the rig's namespaces only
UNSHAPED = "100gbit"                 # the htb rate of a link with no --rate: counts, does not limit
RANK_ENV = dict(UCX_TLS="tcp,self", UCX_NET_DEVICES="eth0")  # through the links, never shared memory
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/bin/sshd")
TCP_RETRIES = 4                      # net.ipv4.tcp_retries2 inside the hosts (see _network)
UP_TAG = "up"                        # the tag of the rig the script's `up` leaves running


class ClusterError(RuntimeError):
    """The rig cannot be built here; the message is one line saying why."""


def sh(*args, check=True, input=None):
    """Run a command; returns stdout; a failure raises ClusterError with its stderr."""
    done = subprocess.run(args, capture_output=True, text=True, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and done.returncode:
        raise ClusterError(f"{shlex.join(args)} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def rate_bytes(rate):
    """An htb rate ("1gbit", "100mbit", "1mbit", "500kbit") in bytes per second."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", rate.lower())
    if not m:
        raise ClusterError(f"rate {rate!r} is not of the form <number>[k|m|g]bit, e.g. 1gbit or 100mbit")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8


def why_unavailable():
    """None if a rig can be built here, else the reason in one line (tests skip with it)."""
    if os.geteuid() != 0:
        return "network namespaces need root (run as root or in a privileged container)"
    for tool in ("ip", "tc", "unshare", "ssh", "ssh-keygen", "ssh-copy-id", "mpiexec"):
        if not shutil.which(tool):
            return f"{tool} is not installed (iproute2, util-linux, openssh-client, mpich)"
    if not find_sshd():
        return "openssh-server is not installed (apt-get install openssh-server)"
    probe = f"{PREFIX}probe-{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode:
        return f"ip netns add failed: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def find_sshd():
    return shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# -----------------------------------------------------------------------------
# tear-down, also of another rig's leftovers

def rig_namespaces(tag):
    return [name for name in list_namespaces() if name.startswith(f"{PREFIX}{tag}-")]


def list_namespaces():
    return [line.split()[0] for line in sh("ip", "netns", "list", check=False).splitlines() if line.strip()]


def kill_namespace_processes(namespace):
    """SIGKILL every process in the namespace (its sshd, sessions, MPI proxies, ranks); returns how many."""
    pids = [int(p) for p in sh("ip", "netns", "pids", namespace, check=False).split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(pids)


def destroy(tag):
    """Remove everything rig `tag` made; safe to run twice and on a half-built rig."""
    state_dir = os.path.join(STATE_ROOT, f"{PREFIX}{tag}")
    for namespace in rig_namespaces(tag):
        for _ in range(50):  # processes in a namespace can fork while we kill: until none is left
            if not kill_namespace_processes(namespace):
                break
            time.sleep(0.02)
        sh("ip", "netns", "del", namespace, check=False)  # its veths, bridge and tc rules go with it
        shutil.rmtree(os.path.join("/etc/netns", namespace), ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)


def sweep():
    """Remove the rigs whose owning process has died (an earlier run killed before its tear-down);
    the script's `up` rig (no owner) is left to `down`."""
    tags = {name[len(PREFIX):].rsplit("-", 1)[0] for name in list_namespaces() if name.startswith(PREFIX)}
    tags |= {name[len(PREFIX):] for name in os.listdir(STATE_ROOT) if name.startswith(PREFIX)}
    for tag in sorted(tags):
        owner = re.fullmatch(r"p(\d+)", tag)
        if owner and not pid_alive(int(owner.group(1))):
            destroy(tag)
        elif tag.startswith("probe"):
            destroy(tag)


# -----------------------------------------------------------------------------
# the rig

class Cluster:
    """K hosts in network namespaces, joined by shaped links, each with an sshd; a context manager.
        with Cluster(hosts=3, rate="100mbit") as cluster:
            done = cluster.mpirun(["-n", "3", "python", "main.py", ...])
    Attributes: hosts (hostnames), hostfile (its path), namespaces, rate, bytes_per_s."""

    def __init__(self, hosts=3, rate=None, slots=1, tag=None):
        if hosts < 1:
            raise ClusterError(f"hosts must be >= 1, got {hosts}")
        self.num_hosts, self.rate, self.slots = hosts, rate or UNSHAPED, slots
        self.bytes_per_s = rate_bytes(self.rate)
        self.tag = tag or f"p{os.getpid()}"
        self.dir = os.path.join(STATE_ROOT, f"{PREFIX}{self.tag}")
        self.hosts = [f"host{i}" for i in range(hosts)]
        self.namespaces = [f"{PREFIX}{self.tag}-h{i}" for i in range(hosts)]
        self.bridge = f"{PREFIX}{self.tag}-br"
        self.addresses = [f"{SUBNET}.{10 + i}" for i in range(hosts)]
        self.home = os.path.join(self.dir, "leader_home")  # the leader's HOME for setup_ssh_leader.sh
        self.hostfile = os.path.join(self.dir, "hostfile")
        self.ssh_wrapper = os.path.join(self.dir, "ssh")
        self.sshd = {}  # host index: Popen
        self.timings = {}
        self._previous_handlers = {}

    # --- context manager: tear-down on exit, on an exception, and on SIGINT/SIGTERM
    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def _on_signal(self, signum, frame):
        self.down()
        raise SystemExit(128 + signum)  # unwinds the caller's `with`; its __exit__ finds nothing left

    def up(self):
        why = why_unavailable()
        if why:
            raise ClusterError(why)
        started = time.monotonic()
        sweep()
        destroy(self.tag)  # a rig of this tag (the script's, after a crash) is rebuilt from nothing
        os.makedirs(self.dir, mode=0o700)
        self._write_state()
        self._network()
        self.shape(self.rate)
        self._sshds()
        self._keys()
        self.timings["up_s"] = time.monotonic() - started

    def down(self):
        started = time.monotonic()
        for proc in self.sshd.values():
            proc.kill()
            proc.wait()
        self.sshd.clear()
        destroy(self.tag)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        self.timings["down_s"] = time.monotonic() - started

    def _write_state(self):
        with open(os.path.join(self.dir, "state.json"), "w") as f:
            json.dump(dict(tag=self.tag, hosts=self.num_hosts, rate=self.rate, slots=self.slots), f)

    def _network(self):
        sh("ip", "netns", "add", self.bridge)
        sh("ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.bridge, "link", "set", "br0", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for a, h in zip(self.addresses, self.hosts))
        for i, namespace in enumerate(self.namespaces):
            sh("ip", "netns", "add", namespace)
            # /etc/netns/<ns>/hosts is what `ip netns exec` shows as /etc/hosts: every host knows the others by name
            os.makedirs(os.path.join("/etc/netns", namespace), exist_ok=True)
            with open(os.path.join("/etc/netns", namespace, "hosts"), "w") as f:
                f.write(hosts_file)
            with open(os.path.join("/etc/netns", namespace, "hostname"), "w") as f:
                f.write(self.hosts[i] + "\n")
            # both ends are made inside the rig's namespaces: nothing appears in the machine's own
            sh("ip", "-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}",
               "netns", self.bridge)
            sh("ip", "-n", self.bridge, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", namespace, "addr", "add", f"{self.addresses[i]}/24", "dev", "eth0")
            sh("ip", "-n", namespace, "link", "set", "eth0", "up")
            sh("ip", "-n", namespace, "link", "set", "lo", "up")
            # a connection to a host cut off fails after ~3 s of retransmissions, not Linux's ~15 min:
            # mpiexec waits for its cut-off proxy's connection to fail before it ends (docs/cluster_on_one_machine.md)
            sh("ip", "netns", "exec", namespace, "sysctl", "-qw", f"net.ipv4.tcp_retries2={TCP_RETRIES}")
        with open(self.hostfile, "w") as f:
            f.write("# written by deploy/local_cluster.py: one host a line, HOST:SLOTS\n")
            f.writelines(f"{h}:{self.slots}\n" for h in self.hosts)

    # --- links
    def _link_ends(self, i):
        """(namespace, device) of host i's two link ends: the host's (what it sends), the bridge's (what it receives)."""
        return [(self.namespaces[i], "eth0"), (self.bridge, f"p{i}")]

    def shape(self, rate, hosts=None):
        """Every link (or those of `hosts`) at `rate` both ways: one htb class 1:10 on each end."""
        rate_bytes(rate)
        for i in range(self.num_hosts) if hosts is None else hosts:
            for namespace, dev in self._link_ends(i):
                if "htb" not in sh("tc", "-n", namespace, "qdisc", "show", "dev", dev):
                    sh("tc", "-n", namespace, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb",
                       "default", "10")
                # a burst of 2 ms at the rate: htb's default (one timer tick's worth at 1 kHz) caps fast links
                burst = str(max(3000, int(rate_bytes(rate) * 0.002)))
                sh("tc", "-n", namespace, "class", "replace", "dev", dev, "parent", "1:", "classid", "1:10",
                   "htb", "rate", rate, "ceil", rate, "burst", burst, "cburst", burst, "quantum", "60000")
        if hosts is None:
            self.rate, self.bytes_per_s = rate, rate_bytes(rate)

    def link_bytes(self):
        """{host: [bytes it sent, bytes it received]} from the htb class counters of its link."""
        counts = {}
        for i, host in enumerate(self.hosts):
            counts[host] = []
            for namespace, dev in self._link_ends(i):
                # (tc's JSON output leaves htb classes out: the text it is)
                text = sh("tc", "-n", namespace, "-s", "class", "show", "dev", dev)
                counts[host].append(int(re.search(r"class htb 1:10 .*?\n\s*Sent (\d+) bytes", text).group(1)))
        return counts

    def crossed(self, out, before, after):
        """Proof that a run's models went through the links: {host: (bytes its ranks' events say they
        sent, bytes its link carried out of it between the `before` and `after` link_bytes())}. The
        link's count includes headers, ssh and the launcher, so it must be at least the events'."""
        from core.events import read_events
        events = read_events(out)
        host_of = {e["rank"]: e["host"] for e in events if e["type"] == "start"}
        sent = {host: 0 for host in self.hosts}
        for e in events:
            if e["type"] == "transfer":
                sent[host_of[e["rank"]]] += e["bytes"]
        return {host: (sent[host], after[host][0] - before[host][0]) for host in self.hosts}

    def set_link(self, i, up):
        """Host i's link down (the bridge's port: the host loses carrier) or up again."""
        sh("ip", "-n", self.bridge, "link", "set", f"p{i}", "up" if up else "down")

    def partition(self, group):
        """Drop every packet between the hosts of `group` and the others: on the bridge's port to each
        host, a u32 filter sends the packets from the other side to class 1:20, whose queue holds
        none (pfifo limit 0). (This kernel has no tc actions, so no `action drop`.)"""
        group = set(group)
        for i in range(self.num_hosts):
            port = f"p{i}"
            if "1:20" not in sh("tc", "-n", self.bridge, "class", "show", "dev", port):
                sh("tc", "-n", self.bridge, "class", "add", "dev", port, "parent", "1:", "classid", "1:20", "htb",
                   "rate", self.rate, "quantum", "60000")
                sh("tc", "-n", self.bridge, "qdisc", "add", "dev", port, "parent", "1:20", "handle", "20:", "pfifo",
                   "limit", "0")
            for j in range(self.num_hosts):
                if (j in group) != (i in group):  # packets from host j do not reach host i
                    sh("tc", "-n", self.bridge, "filter", "add", "dev", port, "parent", "1:", "protocol", "ip",
                       "prio", "1", "u32", "match", "ip", "src", f"{self.addresses[j]}/32", "flowid", "1:20")

    def heal(self):
        """Remove the partition's filters: every packet takes class 1:10 again."""
        for i in range(self.num_hosts):
            sh("tc", "-n", self.bridge, "filter", "del", "dev", f"p{i}", "parent", "1:", "prio", "1", check=False)

    # --- ssh
    def exec_prefix(self, i):
        """The command prefix that runs a program on host i: its network namespace, /etc/hosts and hostname."""
        return ["ip", "netns", "exec", self.namespaces[i], "unshare", "--uts", "sh", "-c",
                f"hostname {self.hosts[i]} && exec \"$@\"", "sh"]

    def _sshds(self):
        sshd_bin = find_sshd()
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755)  # sshd's privilege-separation directory
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "local_cluster bootstrap", "-f",
           os.path.join(self.dir, "bootstrap_key"))
        for i, host in enumerate(self.hosts):
            host_dir = os.path.join(self.dir, host)
            home = os.path.join(host_dir, "home")  # the member's HOME: ssh-copy-id appends to its authorized_keys
            os.makedirs(os.path.join(home, ".ssh"), mode=0o700)
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{host} host key", "-f",
               os.path.join(host_dir, "host_key"))
            shutil.copy(os.path.join(self.dir, "bootstrap_key.pub"), os.path.join(home, ".ssh", "authorized_keys"))
            config = os.path.join(host_dir, "sshd_config")
            with open(config, "w") as f:
                f.write(f"""ListenAddress {self.addresses[i]}
Port 22
HostKey {host_dir}/host_key
PidFile {host_dir}/sshd.pid
AuthorizedKeysFile {home}/.ssh/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
MaxStartups 100
MaxSessions 100
SetEnv HOME={home}
""")
            log = open(os.path.join(host_dir, "sshd.log"), "w")
            self.sshd[i] = subprocess.Popen(self.exec_prefix(i) + [sshd_bin, "-D", "-e", "-f", config],
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        for i in range(self.num_hosts):
            self._wait_listening(i)

    def _wait_listening(self, i, timeout=15.0):
        deadline = time.monotonic() + timeout
        while f"{self.addresses[i]}:22 " not in sh("ip", "netns", "exec", self.namespaces[i], "ss", "-Hltn", check=False):
            if self.sshd[i].poll() is not None or time.monotonic() > deadline:
                with open(os.path.join(self.dir, self.hosts[i], "sshd.log")) as f:
                    raise ClusterError(f"sshd of {self.hosts[i]} did not start: {f.read().strip()[-300:]}")
            time.sleep(0.05)

    def _keys(self):
        """setup_ssh_leader.sh, run on the leader (host0) as a user runs it: the hostfile's hosts,
        first contact with a key the members accept; then plain `ssh HOST` works from the leader."""
        os.makedirs(self.home, mode=0o700)
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSHPASS", "DISPLAY", "SSH_ASKPASS")}
        env["HOME"] = self.home
        done = subprocess.run(self.exec_prefix(0) + ["bash", os.path.join(REPO, "setup_ssh_leader.sh"), "--hostfile",
                                                     self.hostfile, "--bootstrap-identity",
                                                     os.path.join(self.dir, "bootstrap_key")],
                              env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        with open(os.path.join(self.dir, "setup_ssh_leader.log"), "w") as f:
            f.write(done.stdout + done.stderr)
        if done.returncode:
            raise ClusterError(f"setup_ssh_leader.sh failed ({done.returncode}): {done.stderr.strip()[-300:]}")
        # mpirun's launcher: ssh with the leader's config and known hosts (OpenSSH reads ~ from the
        # passwd entry, not $HOME, so a leader whose HOME is elsewhere names them; a real one does not need this)
        ssh_dir = os.path.join(self.home, ".ssh")
        with open(self.ssh_wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec ssh -F {ssh_dir}/config -o UserKnownHostsFile={ssh_dir}/known_hosts "
                    f"-o BatchMode=yes -o ServerAliveInterval=2 -o ServerAliveCountMax=4 \"$@\"\n")
        os.chmod(self.ssh_wrapper, 0o755)

    # --- running things
    def leader_env(self, extra=None):
        """The environment of a command on the leader: the rig's hostfile and ssh for mpirun, TCP for UCX."""
        from core import mpirun_command
        env = dict(mpirun_command.environment(), HYDRA_HOST_FILE=self.hostfile, HYDRA_LAUNCHER="ssh",
                   HYDRA_LAUNCHER_EXEC=self.ssh_wrapper, **RANK_ENV)
        env.update(extra or {})
        return env

    def popen(self, command, host=0, env=None, **kwargs):
        """Start `command` on host `host` (the leader by default), from the repo root."""
        return subprocess.Popen(self.exec_prefix(host) + list(command), cwd=REPO, env=self.leader_env(env),
                                stdin=subprocess.DEVNULL, **kwargs)

    def run(self, command, host=0, env=None, timeout=None):
        """Run `command` on host `host` to its end; a CompletedProcess with text output."""
        proc = self.popen(command, host, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(proc.args, timeout, output=out, stderr=err) from None  # all it printed
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def mpirun(self, ranks, script, args=(), **kwargs):
        """`mpirun -n RANKS python SCRIPT ARGS` from the leader across the hosts (ranks in hostfile order)."""
        from core import mpirun_command
        return self.run(mpirun_command.command(ranks, script, args), **kwargs)

    def processes(self, exclude_sshd=True):
        """{host: [pid and command line of each process in its namespace]}; its listening sshd
        (the rig's Popen: ip netns exec, unshare and sh all exec into it) left out by default."""
        sshd_pids = {str(p.pid) for p in self.sshd.values()} if exclude_sshd else set()
        found = {}
        for host, namespace in zip(self.hosts, self.namespaces):
            lines = []
            for pid in sh("ip", "netns", "pids", namespace, check=False).split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                except OSError:
                    continue
                if pid not in sshd_pids:
                    lines.append(f"{pid} {cmd}")
            found[host] = lines
        return found


# -----------------------------------------------------------------------------
# the script

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build the cluster and leave it running")
    up.add_argument("--hosts", type=int, default=3, help="K, the number of hosts (default 3)")
    up.add_argument("--rate", default=None, help="every link's speed both ways, e.g. 1gbit, 100mbit (default: unshaped)")
    up.add_argument("--slots", type=int, default=1, help="ranks per host in the hostfile (default 1)")
    sub.add_parser("down", help="remove everything `up` made")
    run = sub.add_parser("run", help="run a command on the leader (host0), e.g. -- mpirun -n 3 python main.py")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    sub.add_parser("counters", help="bytes each host's link has carried (tc class counters)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster = Cluster(args.hosts, args.rate, args.slots, tag=UP_TAG)
            cluster.up()
            print(f"up in {cluster.timings['up_s']:.1f} s: {', '.join(cluster.hosts)} ({cluster.rate} links); "
                  f"hostfile {cluster.hostfile}")
            print(f"run: python {sys.argv[0]} run -- mpirun -n {args.hosts} python main.py")
            return 0
        state_file = os.path.join(STATE_ROOT, f"{PREFIX}{UP_TAG}", "state.json")
        if not os.path.exists(state_file):
            if args.command == "down":
                destroy(UP_TAG)
                return 0
            print(f"error: no cluster is up (python {sys.argv[0]} up --hosts 3 makes one)", file=sys.stderr)
            return 2
        with open(state_file) as f:
            state = json.load(f)
        cluster = Cluster(state["hosts"], state["rate"], state["slots"], tag=UP_TAG)
        if args.command == "down":
            destroy(UP_TAG)
            return 0
        if args.command == "counters":
            for host, (sent, received) in cluster.link_bytes().items():
                print(f"{host}: sent {sent} B, received {received} B")
            return 0
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            print("error: run needs a command, e.g. run -- mpirun -n 3 python main.py", file=sys.stderr)
            return 2
        return subprocess.call(cluster.exec_prefix(0) + argv, cwd=os.getcwd(), env=cluster.leader_env())
    except ClusterError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
