"""Shadow mode: a config with a primary and a shadow backend, a look at the
shadow metrics and report, and rough handling of a shadow server's processes
(SIGSTOP/SIGCONT, SIGKILL, restart on the same data directory and port).

    text = shadow_config(port=..., admin_port=..., primary=pg_primary, shadow=pg_shadow,
                         mirror={"reads": "100%", "timeout": "2s"})
    t = tandem(config_text=text, port=port, admin_port=admin_port)
    outcomes(t)           -> {"match": 12.0, "mismatch": 0.0, ...}
    report(t)             -> the parsed /api/shadow/report
"""
import json
import os
import signal
import subprocess
import time

import psycopg

from .clients import _env
from .pgserver import _as_postgres
from .util import PG_BINDIR, pg_tool, tail, wait_until

OUTCOMES = ("match", "mismatch", "noise", "shadow_error", "primary_error", "shadow_timeout",
            "dropped", "transient", "skipped_lag")
RECHECK_RESULTS = ("confirmed", "transient", "busy", "unsupported", "failed")


def shadow_config(*, port, admin_port, primary, shadow, listener="pg", workers=2,
                  log_level="info", mode="shadow", mirror=None, compare=None,
                  shadow_backend_extra="", listener_extra="", backend_extra=""):
    """A config file text: listener LISTENER on 127.0.0.1:port, primary blue, shadow green.

    mirror / compare are dicts of directive -> value text, written as blocks
    (None: no block).  shadow_backend_extra is added inside `backend green`.
    """
    lines = [f"workers {workers};", "log_format text;", f"log_level {log_level};",
             f"admin {{ listen 127.0.0.1:{admin_port}; }}",
             "backend blue {", f"    address {primary.address};"]
    lines += [f"    {ln.strip()}" for ln in backend_extra.splitlines() if ln.strip()]
    lines += ["}", "backend green {", f"    address {shadow.address};"]
    lines += [f"    {ln.strip()}" for ln in (backend_extra + "\n" + shadow_backend_extra).splitlines()
              if ln.strip()]
    lines += ["}", f"listener {listener} {{", f"    listen 127.0.0.1:{port};",
              "    protocol postgres;", "    primary blue;", "    shadow green;",
              f"    mode {mode};"]
    for block, body in (("mirror", mirror), ("compare", compare)):
        if body is not None:
            inner = " ".join(f"{k} {v};" for k, v in body.items())
            lines.append(f"    {block} {{ {inner} }}")
    lines += [f"    {ln}" for ln in listener_extra.splitlines() if ln.strip()]
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- metrics and report ------------------------------------------------------------

def outcomes(t, listener="pg"):
    """tandem_shadow_operations_total{listener} by outcome (0.0 when absent)."""
    text = t.metrics()
    from .tandemproc import metric_value
    return {o: metric_value(text, "tandem_shadow_operations_total", listener=listener,
                            outcome=o) or 0.0
            for o in OUTCOMES}


def rechecks(t, listener="pg"):
    """tandem_shadow_rechecks_total{listener} by result (0.0 when absent)."""
    text = t.metrics()
    from .tandemproc import metric_value
    return {r: metric_value(text, "tandem_shadow_rechecks_total", listener=listener,
                            result=r) or 0.0
            for r in RECHECK_RESULTS}


def delta(after, before):
    return {k: after[k] - before.get(k, 0.0) for k in after}


def report(t):
    status, body = t.http("/api/shadow/report", timeout=30)  # large under a sanitizer
    assert status == 200, f"/api/shadow/report answered {status}: {body[:500]}"
    return json.loads(body)


def listener_report(rep, listener="pg"):
    for entry in rep.get("listeners", []):
        if entry.get("name") == listener:
            return entry
    raise AssertionError(f"listener {listener!r} not in the report: {rep.get('listeners')}")


def statements_about(rep, needle):
    """The report's statements entries whose statement text contains NEEDLE."""
    return [s for s in rep.get("statements", []) if needle in (s.get("statement") or "")]


def samples_about(rep, needle):
    return [s for s in rep.get("samples", []) if needle in (s.get("statement") or "")]


def wait_drained(t, timeout=30, listener="pg"):
    """Wait until every request unit sent was answered by every backend it went to and
    recorded (units_open, read live), the mirror lag is 0 and no mirror bytes are queued."""
    from .tandemproc import metric_value

    def drained():
        text = t.metrics()
        lag = metric_value(text, "tandem_shadow_lag_seconds", listener=listener)
        queued = metric_value(text, "tandem_shadow_queue_bytes")
        units = metric_value(text, "tandem_shadow_units_open", listener=listener)
        return lag == 0 and (queued or 0) == 0 and units == 0
    try:
        wait_until(drained, timeout, "the mirror to drain (lag 0, queue empty)", interval=0.2)
    except TimeoutError as exc:
        text = t.metrics()
        raise AssertionError(
            f"{exc}; lag={metric_value(text, 'tandem_shadow_lag_seconds', listener=listener)} "
            f"queue={metric_value(text, 'tandem_shadow_queue_bytes')} "
            f"units_open={metric_value(text, 'tandem_shadow_units_open', listener=listener)}"
        ) from None


# -- databases on both servers ----------------------------------------------------------

def create_database(server, name):
    """CREATE DATABASE name on SERVER (dropped first when it exists)."""
    with server.connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def pgbench_init_db(server, dbname, scale=1):
    r = subprocess.run([pg_tool("pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1",
                        "-p", str(server.port), "-U", "postgres", dbname],
                       env=_env("postgres", None), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"pgbench -i on {server.name} failed:\n{r.stdout}\n{r.stderr}"


def pgbench_db_popen(port, dbname, clients=4, seconds=4, mode="simple", extra=()):
    """pgbench tpcb-like (by default) against 127.0.0.1:port, database DBNAME."""
    cmd = [pg_tool("pgbench"), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds),
           "-M", mode, *extra, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", dbname]
    return subprocess.Popen(cmd, env=_env("postgres", None), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def table_digest(server, dbname, table, columns="t"):
    """md5 over the rows of TABLE (as `columns`, text), in a fixed order."""
    with psycopg.connect(server.socket_dsn(dbname=dbname), autocommit=True) as conn:
        return conn.execute(f"SELECT count(*), md5(string_agg(x, ',' ORDER BY x)) FROM "
                            f"(SELECT ({columns})::text AS x FROM {table} t) s").fetchone()


PGBENCH_KEYED = ("pgbench_accounts", "pgbench_tellers", "pgbench_branches")


def answering_port(t, dbname="postgres"):
    """The port of the server answering a new session through tandem T."""
    with t.connect(dbname=dbname) as conn:
        return conn.execute("SELECT inet_server_port()").fetchone()[0]


def assert_same_data(primary, shadow, db):
    """pgbench's keyed tables equal on both servers, and as many history rows."""
    for table in PGBENCH_KEYED:
        assert table_digest(primary, db, table) == table_digest(shadow, db, table), table
    count = "SELECT count(*) FROM pgbench_history"
    with psycopg.connect(primary.socket_dsn(dbname=db)) as a, \
            psycopg.connect(shadow.socket_dsn(dbname=db)) as b:
        assert a.execute(count).fetchone() == b.execute(count).fetchone()


def rows(server, sql, dbname="postgres"):
    with psycopg.connect(server.socket_dsn(dbname=dbname), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def execute(server, sql, dbname="postgres"):
    with psycopg.connect(server.socket_dsn(dbname=dbname), autocommit=True) as conn:
        conn.execute(sql)


# -- a shadow server's processes -------------------------------------------------------------

def server_pids(server):
    """The postmaster's pid and its children's (backends and helpers).

    PostgreSQL's children each call setsid(), so a signal to the
    postmaster's process group does not reach them: find them by parent.
    """
    root = server.proc.pid
    pids = [root]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after ')'
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == root:
            pids.append(int(entry))
    return pids


def signal_server(server, sig):
    """Send SIG to the postmaster first (no new children), then to each child."""
    pids = server_pids(server)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    return pids


def kill_server(server):
    """SIGKILL the postmaster and all its children; wait until they are gone."""
    pids = signal_server(server, signal.SIGKILL)
    server.proc.wait(timeout=30)

    def gone():
        for pid in pids[1:]:
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                pass
        return True
    wait_until(gone, 30, f"the processes of postgres {server.name} to exit")


def restart_server(server):
    """Start the postgres of SERVER again on its data directory and port."""
    logf = open(server.log, "ab")
    server.proc = subprocess.Popen(
        [os.path.join(PG_BINDIR, "postgres"), "-D", server.data],
        cwd=server.dir, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
        start_new_session=True, **_as_postgres())
    logf.close()

    def ready():
        if server.proc.poll() is not None:
            raise RuntimeError(f"postgres {server.name} exited {server.proc.returncode}:\n"
                               + tail(server.log))
        try:
            # over TCP on its port too: that is where tandem connects
            with psycopg.connect(server.socket_dsn(), connect_timeout=2), \
                    psycopg.connect(server.dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False
    wait_until(ready, 60, f"postgres {server.name} to accept connections again")
