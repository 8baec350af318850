"""A network the test controls: a backend (or a client) behind a veth pair
into a network namespace of its own, with latency, loss, rate limits and
silent partitions on that link.

    with NetFault() as net:                       # skips the test when it cannot be built
        server = PgServer("blue", certs, netns=net).start()   # listens on net.ns_ip
        net.impair(delay_ms=200, jitter_ms=20, loss_pct=5)
        net.partition(); ...; net.heal()

    host (tandem)                            namespace tdm<pid>x<n>
    veth tdh<pid>x<n> 10.213.a.b+1/30  <-->  veth tdn<pid>x<n> 10.213.a.b+2/30
                                             server listening on .b+2

Addresses: a /30 drawn at random from 10.213.0.0/16 and checked against the
addresses the host already has, so parallel runs (and a leftover of a
killed run) do not collide.

Faults, all applied inside the namespace so deleting it undoes them all:
  * delay/jitter: `tc netem` on the namespace's veth when the kernel has
    sch_netem; otherwise an NFQUEUE (iptables -j NFQUEUE) served by
    nfq_delay.py, which holds each packet DELAY +/- JITTER in the kernel's
    queue (jitter reorders, as netem's does).  Delay applies to packets
    leaving the namespace, so it adds DELAY to every round trip.
  * loss: iptables `-m statistic --mode random` DROP, both directions.
  * rate: a tbf qdisc on the namespace's veth.
  * partition: iptables DROP of everything on the veth, both directions,
    inserted first: packets vanish silently, no RST, no ICMP, the link
    stays up -- what a peer sees when a switch or a security group eats
    the traffic.  heal() deletes the two rules.

Everything is torn down by close() (the context manager calls it), and an
atexit hook closes what a crashed test left.
"""
import atexit
import ipaddress
import os
import random
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
POOL = ipaddress.ip_network("10.213.0.0/16")
_counter = 0
_open = []


def _run(*cmd, check=True):
    return subprocess.run(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=check, timeout=30)


def unavailable():
    """Why namespaces cannot be built here, or None."""
    if os.geteuid() != 0:
        return "network fault tests need root (ip netns, veth, iptables)"
    for tool in ("ip", "iptables", "tc", "setpriv"):
        if shutil.which(tool) is None:
            return f"network fault tests need {tool!r} (scripts/deps.sh installs it)"
    probe = f"tdmprobe{os.getpid()}"
    r = _run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = _run("ip", "netns", "exec", probe, "iptables", "-L", "-n", check=False)
        if r.returncode != 0:
            return f"iptables does not work in a namespace: {r.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def _host_networks():
    out = _run("ip", "-4", "-o", "addr", "show").stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def _pick_subnet():
    taken = _host_networks()
    for _ in range(200):
        base = POOL.network_address + 4 * random.randrange(POOL.num_addresses // 4)
        net = ipaddress.ip_network(f"{base}/30")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise RuntimeError("no free /30 in 10.213.0.0/16")


class NetFault:
    def __init__(self):
        global _counter
        _counter += 1
        tag = f"{os.getpid() % 100000}x{_counter}"
        self.ns = f"tdm{tag}"
        self.host_if = f"tdh{tag}"[:15]
        self.ns_if = f"tdn{tag}"[:15]
        self.net = None
        self.host_ip = self.ns_ip = None
        self.delayer = None
        self.partitioned = False
        self.netem = False
        self._up = False

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self):
        why = unavailable()
        if why:
            pytest.skip(why)
        self.setup()
        return self

    def __exit__(self, *exc):
        self.close()

    def setup(self):
        self.net = _pick_subnet()
        hosts = list(self.net.hosts())
        self.host_ip, self.ns_ip = str(hosts[0]), str(hosts[1])
        _open.append(self)
        self._up = True
        _run("ip", "netns", "add", self.ns)
        _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
             "netns", self.ns)
        _run("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _run("ip", "link", "set", self.host_if, "up")
        self.nsrun("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
        self.nsrun("ip", "link", "set", self.ns_if, "up")
        self.nsrun("ip", "link", "set", "lo", "up")
        # netem where the kernel has it; the NFQUEUE delayer otherwise
        r = self.nsrun("tc", "qdisc", "add", "dev", self.ns_if, "root", "netem", "delay", "0ms",
                       check=False)
        self.netem = r.returncode == 0
        if self.netem:
            self.nsrun("tc", "qdisc", "del", "dev", self.ns_if, "root")
        return self

    def close(self):
        if not self._up:
            return
        self._up = False
        self._stop_delayer()
        _run("ip", "netns", "del", self.ns, check=False)  # takes the veth pair with it
        _run("ip", "link", "del", self.host_if, check=False)
        if self in _open:
            _open.remove(self)

    # -- running things inside ---------------------------------------------------

    def wrap(self, user=None):
        """A command prefix that runs the rest inside the namespace (as USER)."""
        cmd = ["ip", "netns", "exec", self.ns]
        if user is not None:
            import pwd
            pw = pwd.getpwnam(user)
            cmd += ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups"]
        return cmd

    def nsrun(self, *cmd, check=True):
        return _run(*self.wrap(), *cmd, check=check)

    def popen(self, cmd, user=None, **kw):
        return subprocess.Popen(self.wrap(user) + list(cmd), **kw)

    # -- faults ---------------------------------------------------------------------

    def impair(self, delay_ms=0, jitter_ms=0, loss_pct=0, rate=None, seed=None):
        """Replace the link's impairment: DELAY (+/- JITTER) on every packet leaving
        the namespace, LOSS percent dropped each way, RATE (tc syntax, e.g. "10mbit")."""
        self.clear()
        if self.netem:
            args = ["tc", "qdisc", "add", "dev", self.ns_if, "root", "netem"]
            if delay_ms:
                args += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
            if rate:
                args += ["rate", rate]
            if delay_ms or rate:
                self.nsrun(*args)
        else:
            if rate:
                self.nsrun("tc", "qdisc", "add", "dev", self.ns_if, "root", "tbf", "rate", rate,
                           "burst", "32kb", "latency", "1s")
            if delay_ms:
                self._start_delayer(delay_ms, jitter_ms, seed)
        if loss_pct:
            p = f"{loss_pct / 100:.4f}"
            for chain, io in (("INPUT", "-i"), ("OUTPUT", "-o")):
                self.nsrun("iptables", "-A", chain, io, self.ns_if, "-m", "statistic",
                           "--mode", "random", "--probability", p, "-j", "DROP")

    def clear(self):
        """No impairment (a partition stays until heal())."""
        self._stop_delayer()
        self.nsrun("tc", "qdisc", "del", "dev", self.ns_if, "root", check=False)
        for chain in ("INPUT", "OUTPUT"):
            self.nsrun("iptables", "-F", chain)
        if self.partitioned:
            self.partitioned = False
            self.partition()

    def partition(self):
        """Drop every packet on the link, both ways, silently."""
        if self.partitioned:
            return
        for chain, io in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self.nsrun("iptables", "-I", chain, "1", io, self.ns_if, "-j", "DROP")
        self.partitioned = True

    def heal(self):
        if not self.partitioned:
            return
        for chain, io in (("INPUT", "-i"), ("OUTPUT", "-o")):
            self.nsrun("iptables", "-D", chain, io, self.ns_if, "-j", "DROP")
        self.partitioned = False

    def _start_delayer(self, delay_ms, jitter_ms, seed):
        self.delayer = self.popen(
            [sys.executable, os.path.join(HERE, "nfq_delay.py"), "0", str(delay_ms),
             str(jitter_ms)] + ([str(seed)] if seed is not None else []),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.delayer.stdout.readline().strip()
        if line != "ready":
            err = self.delayer.stderr.read()
            self.delayer = None
            raise RuntimeError(f"nfq_delay.py did not start: {line} {err}")
        self.nsrun("iptables", "-A", "OUTPUT", "-o", self.ns_if, "-j", "NFQUEUE",
                   "--queue-num", "0", "--queue-bypass")

    def _stop_delayer(self):
        if self.delayer is None:
            return
        # the rule first: packets must not wait for a verdict that never comes
        self.nsrun("iptables", "-D", "OUTPUT", "-o", self.ns_if, "-j", "NFQUEUE",
                   "--queue-num", "0", "--queue-bypass", check=False)
        self.delayer.terminate()
        try:
            self.delayer.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.delayer.kill()
            self.delayer.wait()
        self.delayer = None


@atexit.register
def _close_all():
    for nf in list(_open):
        nf.close()
