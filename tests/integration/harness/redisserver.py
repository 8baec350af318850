"""A real redis-server for a test: a temp dir, a free loopback port, no persistence.

    server = RedisServer("primary", password=None)
    server.start(); server.client().set("k", "v"); server.stop()

    # requirepass for the default user, and ACL users (rules as ACL SETUSER takes them)
    server = RedisServer("acl", password="adminpw",
                         users={"reader": "on >readerpw ~* +get +auth +hello +ping"})

    # TLS only (--tls-port; no plain port), certificates from harness.certs;
    # auth_clients: the server asks for a client certificate signed by the CA
    server = RedisServer("tls", tls=certs, tls_auth_clients=True)

DEBUG is enabled (DEBUG DIGEST compares two servers' whole data set).  The
process is ours: tests may SIGSTOP, SIGCONT or kill it, and restart() brings
it back on the same port, empty.

redis_config() writes a tandem configuration with one redis listener.
"""
import os
import shutil
import signal
import subprocess
import tempfile

import redis

from .util import ARTIFACTS, free_port, port_accepts, wait_until


class RedisServer:
    def __init__(self, name, password=None, users=None, netns=None, tls=None,
                 tls_auth_clients=False):
        """NETNS (a harness.netns.NetFault): run inside that namespace, on its veth address.
        TLS (a harness.certs.Certs): the port speaks TLS only, with the server certificate."""
        self.name = name
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.netns = netns
        self.host = netns.ns_ip if netns else "127.0.0.1"
        self.password = password
        self.users = dict(users or {})  # name -> ACL SETUSER rules, applied at every start
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix=f"tandem-redis-{name}-")
        self.proc = None

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def start(self):
        os.makedirs(ARTIFACTS, exist_ok=True)
        if self.tls is None:
            ports = ["--port", str(self.port)]
        else:
            ports = ["--port", "0", "--tls-port", str(self.port),
                     "--tls-cert-file", self.tls.server_cert, "--tls-key-file", self.tls.server_key,
                     "--tls-ca-cert-file", self.tls.ca, "--tls-replication", "yes",
                     "--tls-auth-clients", "yes" if self.tls_auth_clients else "no"]
        cmd = ["redis-server", *ports, "--bind", self.host,
               "--save", "", "--appendonly", "no", "--dir", self.dir,
               "--enable-debug-command", "yes", "--daemonize", "no",
               "--logfile", os.path.join(ARTIFACTS, f"redis-{self.name}.log")]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.netns is not None:  # reached across a veth, not on loopback
            cmd = self.netns.wrap() + cmd + ["--protected-mode", "no"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(lambda: port_accepts(self.port, self.host), 20, f"redis-server {self.name} to listen")
        for user, rules in self.users.items():
            self.set_user(user, rules)
        return self

    def set_user(self, user, rules):
        """ACL SETUSER user <rules> (a string split on blanks, or a list: selectors "(...)")."""
        args = rules.split() if isinstance(rules, str) else list(rules)
        self.client().execute_command("ACL", "SETUSER", user, *args)

    def client(self, db=0):
        tls = {}
        if self.tls is not None:
            tls = {"ssl": True, "ssl_ca_certs": self.tls.ca, "ssl_certfile": self.tls.client_cert,
                   "ssl_keyfile": self.tls.client_key}
        return redis.Redis(host=self.host, port=self.port, db=db, password=self.password,
                           socket_timeout=20, **tls)

    def digest(self):
        """DEBUG DIGEST: one hash of every key, value and expiry flag of every db."""
        return self.client().execute_command("DEBUG", "DIGEST")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.kill()
        self.start()

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_config(*, port, primary, shadow=None, admin_port=None, mode=None, workers=2,
                 mirror=None, primary_extra="", shadow_extra="", listener_extra="",
                 log_level="info"):
    """A config file text: listener r on 127.0.0.1:port, primary blue, shadow green.

    listener_extra: lines added inside the listener (reads { }, canary rules...)."""
    lines = [f"workers {workers};", "log_format text;", f"log_level {log_level};"]
    if admin_port:
        lines.append(f"admin {{ listen 127.0.0.1:{admin_port}; }}")
    lines += ["backend blue {", f"    address {primary.address};"]
    lines += [f"    {ln.strip()}" for ln in primary_extra.splitlines() if ln.strip()]
    lines.append("}")
    if shadow is not None:
        lines += ["backend green {", f"    address {shadow.address};"]
        lines += [f"    {ln.strip()}" for ln in shadow_extra.splitlines() if ln.strip()]
        lines.append("}")
    lines += ["listener r {", f"    listen 127.0.0.1:{port};", "    protocol redis;",
              "    primary blue;"]
    if shadow is not None:
        lines.append("    shadow green;")
    lines.append(f"    mode {mode or ('shadow' if shadow is not None else 'passthrough')};")
    if mirror:
        lines.append("    mirror { " + " ".join(f"{k} {v};" for k, v in mirror.items()) + " }")
    lines += [f"    {ln}" for ln in listener_extra.splitlines() if ln.strip()]
    lines.append("}")
    return "\n".join(lines) + "\n"


def start_redis_tandem(factory, primary, shadow=None, **cfg):
    """A tandem with listener r in front of PRIMARY (and SHADOW), with an admin port."""
    port, admin = free_port(), free_port()
    text = redis_config(port=port, admin_port=admin, primary=primary, shadow=shadow, **cfg)
    return factory(config_text=text, port=port, admin_port=admin)


MIRROR_ALL = {"reads": "100%", "queue": "4MB", "timeout": "5s"}


def start_redis_mode(factory, primary, shadow, mode):
    """A tandem in MODE on flushed servers: passthrough (PRIMARY alone), shadow
    (every read compared) or split (reads 50/50, none compared)."""
    primary.client().flushall()
    shadow.client().flushall()
    if mode == "passthrough":
        return start_redis_tandem(factory, primary)
    if mode == "shadow":
        return start_redis_tandem(factory, primary, shadow, mirror=MIRROR_ALL)
    return start_redis_tandem(factory, primary, shadow, mode="split", mirror={"reads": "0%"},
                              listener_extra="reads { blue weight=50; green weight=50; }")


def tandem_client(t, **kw):
    """A redis-py client through tandem T."""
    return redis.Redis(host="127.0.0.1", port=t.port, socket_timeout=20, **kw)
