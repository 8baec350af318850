"""A real PostgreSQL 15 server in a fresh temp dir, for one test session.

Runs as the `postgres` system user when the tests run as root (initdb and
postgres refuse root), listens on 127.0.0.1:<free port> with its socket
inside the temp dir, and has one role per authentication method:

    role           pg_hba method    password
    trustuser      trust            -
    md5user        md5              (md5-hashed)  md5user-pw
    scramuser      scram-sha-256    scramuser-pw
    cleartextuser  password         cleartextuser-pw
    tandemprobe    scram-sha-256    tandemprobe-Secret-71q  (tandem's own login)
    postgres       trust (superuser)

ssl=on with a server certificate from harness.certs, so clients and tandem
can use sslmode/tls require and verify-full.
"""
import os
import pwd
import shutil
import signal
import subprocess
import tempfile

import psycopg
from psycopg.conninfo import make_conninfo

from .util import PG_BINDIR, free_port, tail, wait_until

PASSWORDS = {
    "md5user": "md5user-pw",
    "scramuser": "scramuser-pw",
    "cleartextuser": "cleartextuser-pw",
    # tandem's own login in configs (backend user/password): never a client's.
    "tandemprobe": "tandemprobe-Secret-71q",
}

HBA = """\
# TYPE  DATABASE  USER           ADDRESS        METHOD
local   all       all                           trust
local   replication all                         trust
host    replication postgres     127.0.0.1/32   trust
host    all       postgres       127.0.0.1/32   trust
host    all       trustuser      127.0.0.1/32   trust
host    all       md5user        127.0.0.1/32   md5
host    all       scramuser      127.0.0.1/32   scram-sha-256
host    all       cleartextuser  127.0.0.1/32   password
host    all       all            127.0.0.1/32   scram-sha-256
"""


def _as_postgres():
    """Popen keyword arguments that run a child as the postgres user when we are root."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam("postgres")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _chown_tree(path):
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam("postgres")
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)


class PgServer:
    def __init__(self, name, certs, extra_conf="", standby_of=None, netns=None, hba=None):
        """extra_conf: more postgresql.conf lines (e.g. "wal_level = logical").
        standby_of: a running PgServer this one streams from (a physical standby,
        made with pg_basebackup).
        NETNS (a harness.netns.NetFault): run inside that namespace, listening on
        its veth address, tandem and the test reaching it across the veth.
        HBA: a pg_hba.conf text in place of the default (e.g. TLS required)."""
        self.name = name
        self.certs = certs
        self.extra_conf = extra_conf
        self.standby_of = standby_of
        self.port = None
        self.dir = None
        self.proc = None
        self.netns = netns
        self.hba = hba
        self.host = netns.ns_ip if netns else "127.0.0.1"

    # -- lifecycle -----------------------------------------------------------

    def start(self):
        self.dir = tempfile.mkdtemp(prefix=f"tandem-{self.name}-")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.sockdir = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "postgres.log")
        os.makedirs(self.sockdir)
        _chown_tree(self.dir)

        if self.standby_of is None:
            subprocess.run(
                [os.path.join(PG_BINDIR, "initdb"), "-D", self.data, "-U", "postgres",
                 "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"],
                cwd=self.dir, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                **_as_postgres())
        else:
            # a copy of the primary that keeps replaying its WAL (-R: standby.signal and
            # primary_conninfo); its settings are the primary's, ours follow and win
            src = self.standby_of
            subprocess.run(
                [os.path.join(PG_BINDIR, "pg_basebackup"), "-D", self.data, "-h", src.sockdir,
                 "-p", str(src.port), "-U", "postgres", "-R", "-X", "stream", "-c", "fast"],
                cwd=self.dir, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                **_as_postgres())

        for src, dst in ((self.certs.server_cert, "server.crt"),
                         (self.certs.server_key, "server.key")):
            shutil.copy(src, os.path.join(self.data, dst))
        os.chmod(os.path.join(self.data, "server.key"), 0o600)

        self.port = free_port()
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
# tandem integration tests
listen_addresses = '{self.host}'
port = {self.port}
unix_socket_directories = '{self.sockdir}'
max_connections = 200
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
logging_collector = off
log_min_messages = warning
log_connections = off
{self.extra_conf}
""")
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            # across a veth the clients come from the host's end of the /30
            f.write(self.hba if self.hba is not None else HBA if self.netns is None else
                    HBA.replace("127.0.0.1/32 ", f"{str(self.netns.net):<14}"))
        _chown_tree(self.dir)

        logf = open(self.log, "ab")
        cmd = [os.path.join(PG_BINDIR, "postgres"), "-D", self.data]
        if self.netns is None:
            user_kw = _as_postgres()
        else:  # into the namespace as root, then become postgres
            cmd = self.netns.wrap("postgres" if os.geteuid() == 0 else None) + cmd
            user_kw = {}
        self.proc = subprocess.Popen(
            cmd, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True, **user_kw)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres {self.name} exited {self.proc.returncode}:\n"
                                   + tail(self.log))
            try:
                with psycopg.connect(self.socket_dsn(), connect_timeout=2):
                    return True
            except psycopg.OperationalError:
                return False

        try:
            wait_until(ready, 60, f"postgres {self.name} to accept connections")
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}\n{tail(self.log)}") from None
        if self.standby_of is None:
            self._setup_roles()  # a standby has the primary's
        return self

    def _setup_roles(self):
        with psycopg.connect(self.socket_dsn(), autocommit=True) as conn:
            conn.execute("CREATE ROLE trustuser LOGIN")
            conn.execute("SET password_encryption = 'md5'")
            conn.execute(f"CREATE ROLE md5user LOGIN PASSWORD '{PASSWORDS['md5user']}'")
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(f"CREATE ROLE scramuser LOGIN PASSWORD '{PASSWORDS['scramuser']}'")
            conn.execute(
                f"CREATE ROLE cleartextuser LOGIN PASSWORD '{PASSWORDS['cleartextuser']}'")
            conn.execute(
                f"CREATE ROLE tandemprobe LOGIN PASSWORD '{PASSWORDS['tandemprobe']}'")
            # PostgreSQL 15 no longer lets every role create in public.
            conn.execute("GRANT ALL ON SCHEMA public TO PUBLIC")
            # Tests SIGKILL servers and start them again on the same data
            # directory: with fsync and synchronous_commit off, what is not
            # yet checkpointed rests on crash recovery alone.  The roles every
            # test logs in with must never depend on it.
            conn.execute("CHECKPOINT")

    def stop(self):
        """Fast shutdown (SIGINT), SIGKILL if it does not go; remove the temp dir."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    # -- connecting ----------------------------------------------------------

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def socket_dsn(self, user="postgres", dbname="postgres"):
        return f"host={self.sockdir} port={self.port} user={user} dbname={dbname}"

    def dsn(self, user="postgres", dbname="postgres", **kw):
        """A TCP libpq DSN straight to this server (no tandem)."""
        if user in PASSWORDS and "password" not in kw:
            kw["password"] = PASSWORDS[user]
        return make_conninfo(host=self.host, port=self.port, user=user, dbname=dbname, **kw)

    def connect(self, user="postgres", **kw):
        """A psycopg connection over the unix socket as superuser (or user)."""
        return psycopg.connect(self.socket_dsn(user=user), autocommit=True, **kw)

    def backend_count(self, user):
        """Number of server sessions of USER right now."""
        with self.connect() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                                (user,)).fetchone()[0]
