"""Real client programs: psql and pgbench, with upper-bound timeouts."""
import os
import re
import subprocess

from psycopg.conninfo import make_conninfo

from .pgserver import PASSWORDS
from .util import pg_tool


def _env(user, password):
    env = dict(os.environ)
    env.pop("PGSERVICE", None)
    if password is None:
        password = PASSWORDS.get(user)
    if password is not None:
        env["PGPASSWORD"] = password
    else:
        env.pop("PGPASSWORD", None)
    return env


def psql(port, *args, user="trustuser", password=None, sslmode="disable", dbname="postgres",
         timeout=60, **conninfo_kw):
    """Run psql -X -At against 127.0.0.1:port; return CompletedProcess (text)."""
    conninfo = make_conninfo(host="127.0.0.1", port=port, user=user, dbname=dbname,
                             sslmode=sslmode, connect_timeout=10, **conninfo_kw)
    return subprocess.run([pg_tool("psql"), "-X", "-v", "ON_ERROR_STOP=1", "-At",
                           "-d", conninfo, *args],
                          env=_env(user, password), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def pgbench_init(port, user="postgres", scale=1):
    """pgbench -i (tables pgbench_*) straight on a server."""
    r = subprocess.run([pg_tool("pgbench"), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1",
                        "-p", str(port), "-U", user, "postgres"],
                       env=_env(user, None), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"pgbench -i failed:\n{r.stdout}\n{r.stderr}"


def pgbench_cmd(port, clients=4, seconds=3, mode="simple", user="postgres", extra=()):
    return [pg_tool("pgbench"), "-n", "-c", str(clients), "-j", "2", "-T", str(seconds),
            "-M", mode, *extra, "-h", "127.0.0.1", "-p", str(port), "-U", user, "postgres"]


def pgbench_popen(port, **kw):
    return subprocess.Popen(pgbench_cmd(port, **kw), env=_env(kw.get("user", "postgres"), None),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def check_pgbench(proc, timeout=120):
    """Wait for a pgbench run; assert exit 0, no failed transaction, some processed.

    Returns the number of processed transactions.
    """
    out, err = proc.communicate(timeout=timeout)
    text = f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    assert proc.returncode == 0, f"pgbench failed: {text}"
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if failed:
        assert int(failed.group(1)) == 0, f"pgbench had failed transactions: {text}"
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    assert processed and int(processed.group(1)) > 0, f"pgbench processed nothing: {text}"
    assert "aborted" not in err, f"pgbench clients aborted: {text}"
    return int(processed.group(1))
