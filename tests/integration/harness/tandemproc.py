"""Start a tandem process for a test, and look at it: metrics, log, exit.

    t = tandem_factory.pg(primary=pg_primary, admin=True)   # config built here
    t = tandem_factory(config_text=..., port=..., admin_port=...)
    t = tandem_factory(args=["postgres", "--listen", ...], port=...)

Every process is stopped at teardown with SIGTERM, and the test fails when
it crashed: killed by a signal the test did not send, an exit nobody asked
for, or sanitizer output in its stderr.
"""
import os
import re
import signal
import subprocess
import tempfile

import psycopg
from psycopg.conninfo import make_conninfo

from .pgserver import PASSWORDS
from .util import ARTIFACTS, free_port, http_get, port_accepts, tail, wait_until

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "runtime error:", "ERROR: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


def pg_config(*, port, primary, admin_port=None, workers=2, log_format="text",
              log_level="info", limits=None, backend_extra="", listener_extra="",
              extra=""):
    """A config file text: one postgres listener on 127.0.0.1:port -> backend blue."""
    lines = [f"workers {workers};", f"log_format {log_format};", f"log_level {log_level};"]
    if limits:
        lines.append("limits {")
        lines += [f"    {k} {v};" for k, v in limits.items()]
        lines.append("}")
    if admin_port:
        lines.append(f"admin {{ listen 127.0.0.1:{admin_port}; }}")
    lines += ["backend blue {", f"    address {primary.address};"]
    lines += [f"    {ln.strip()}" for ln in backend_extra.splitlines() if ln.strip()]
    lines += ["}", "listener pg {", f"    listen 127.0.0.1:{port};", "    protocol postgres;",
              "    primary blue;", "    mode passthrough;"]
    lines += [f"    {ln.strip()}" for ln in listener_extra.splitlines() if ln.strip()]
    lines.append("}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


# -- Prometheus text ------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text -> list of (name, {label: value}, float).  Comments skipped."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise AssertionError(f"not a Prometheus sample line: {line!r}")
        labels = dict(_LABEL.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def metric_value(text, name, **labels):
    """Sum of the samples of NAME whose labels include LABELS; None when none matches."""
    total, found = 0.0, False
    for sname, slabels, value in parse_metrics(text):
        if sname == name and all(slabels.get(k) == v for k, v in labels.items()):
            total += value
            found = True
    return total if found else None


# -- the process ------------------------------------------------------------------

class TandemProcess:
    def __init__(self, binary, workdir, name, config_text=None, args=None, port=None,
                 admin_port=None, extra_args=(), env=None, shutdown_timeout=30):
        self.binary = binary
        self.port = port
        self.admin_port = admin_port
        self.http_token = None  # sent by http() when the admin needs a token to read
        self.name = name
        self.conf_path = None
        self.shutdown_timeout = shutdown_timeout
        self.signals_sent = set()
        self.expect_exit = False
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.log_path = os.path.join(ARTIFACTS, f"{name}.stderr.log")
        self.out_path = os.path.join(ARTIFACTS, f"{name}.stdout.log")
        if config_text is not None:
            self.conf_path = os.path.join(workdir, "tandem.conf")
            self.write_config(config_text)
            cmd = [binary, "-c", self.conf_path, *extra_args]
        else:
            cmd = [binary, *(args or []), *extra_args]
        self.cmd = cmd
        with open(self.log_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, cwd=workdir,
                                         env={**os.environ, **(env or {})})
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"tandem exited with {self.proc.returncode} during startup")
            if self.port and not port_accepts(self.port):
                return False
            if self.admin_port and not port_accepts(self.admin_port):
                return False
            return True
        try:
            wait_until(ready, 20, f"tandem to listen on {self.port}/{self.admin_port}")
        except (TimeoutError, RuntimeError) as exc:
            raise AssertionError(f"{exc}\ncommand: {self.cmd}\nstderr:\n{self.log()}") from None

    # -- configuration ------------------------------------------------------

    def write_config(self, text):
        """Replace the config file atomically (write + rename), as an operator's tool would."""
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf_path)

    # -- looking at it ------------------------------------------------------

    def dsn(self, user="trustuser", dbname="postgres", password=None, **kw):
        """A libpq conninfo string for a session through tandem (sslmode=disable by default)."""
        if password is None and user in PASSWORDS:
            password = PASSWORDS[user]
        if password is not None:
            kw["password"] = password
        kw.setdefault("sslmode", "disable")
        kw.setdefault("connect_timeout", 10)
        return make_conninfo(host="127.0.0.1", port=self.port, user=user, dbname=dbname, **kw)

    def connect(self, user="trustuser", autocommit=True, **kw):
        """A psycopg 3 connection through tandem."""
        return psycopg.connect(self.dsn(user=user, **kw), autocommit=autocommit)

    def log(self):
        with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
            return f.read()

    def http(self, path, timeout=10):
        assert self.admin_port, "this tandem has no admin listener"
        return http_get(self.admin_port, path, token=self.http_token, timeout=timeout)

    def metrics(self):
        status, body = self.http("/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:500]}"
        return body

    def metric(self, name, **labels):
        return metric_value(self.metrics(), name, **labels)

    def wait_metric(self, name, at_least, timeout=15, **labels):
        """Wait until metric NAME{labels} >= at_least; return its value."""
        def reached():
            v = self.metric(name, **labels)
            return v is not None and v >= at_least and (v,)
        try:
            return wait_until(reached, timeout, f"{name}{labels} >= {at_least}")[0]
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; now {self.metric(name, **labels)}") from None

    # -- signals and exit ---------------------------------------------------

    def signal(self, sig):
        self.signals_sent.add(sig)
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        """Wait (upper bound) for the process to exit; return its return code."""
        return self.proc.wait(timeout=timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def crash_report(self):
        """A description of how the process crashed, or None when it did not."""
        rc = self.proc.returncode
        problems = []
        if rc is not None and rc < 0 and -rc not in self.signals_sent:
            problems.append(f"killed by signal {signal.Signals(-rc).name}")
        if rc is not None and not self.expect_exit and not self.signals_sent:
            problems.append(f"exited by itself with status {rc}")
        log = self.log()
        for marker in SANITIZER_MARKERS:
            if marker in log:
                problems.append(f"sanitizer report in stderr ({marker!r})")
        return "; ".join(problems) or None

    def stop(self):
        """SIGTERM (unless it already exited), wait; return the exit code.

        Fails (AssertionError) when it does not exit within shutdown_timeout
        plus a margin, or when it crashed.
        """
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.shutdown_timeout + 15)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"tandem did not exit after SIGTERM\n{tail(self.log_path)}")
        report = self.crash_report()
        if report:
            raise AssertionError(f"tandem crashed: {report}\ncommand: {self.cmd}\n"
                                 f"stderr ({self.log_path}):\n{tail(self.log_path, 80)}")
        return self.proc.returncode


class TandemFactory:
    """Starts TandemProcess objects and stops them all at teardown."""

    def __init__(self, binary, name):
        self.binary = binary
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-120:]
        self.procs = []
        self.tmpdirs = []

    def __call__(self, config_text=None, args=None, port=None, admin_port=None, **kw):
        workdir = tempfile.mkdtemp(prefix="tandem-proc-")
        self.tmpdirs.append(workdir)
        name = self.name + (f"-{len(self.procs)}" if self.procs else "")
        proc = TandemProcess(self.binary, workdir, name, config_text=config_text, args=args,
                             port=port, admin_port=admin_port, **kw)
        self.procs.append(proc)
        return proc

    def pg(self, primary, admin=True, shutdown_timeout=None, limits=None, **cfg):
        """A tandem with one postgres listener in front of PRIMARY (a PgServer)."""
        port = free_port()
        admin_port = free_port() if admin else None
        limits = dict(limits or {})
        if shutdown_timeout is not None:
            limits["shutdown_timeout"] = f"{shutdown_timeout}s"
        text = pg_config(port=port, primary=primary, admin_port=admin_port,
                         limits=limits, **cfg)
        return self(config_text=text, port=port, admin_port=admin_port,
                    shutdown_timeout=shutdown_timeout or 30)

    def close(self):
        """Stop every process; return the list of failures (crashes, hangs)."""
        failures = []
        for proc in self.procs:
            try:
                proc.stop()
            except AssertionError as exc:
                failures.append(str(exc))
        for d in self.tmpdirs:
            subprocess.run(["rm", "-rf", d], check=False)
        return failures
