"""Small helpers shared by the harness and the tests."""
import os
import socket
import time
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
ARTIFACTS = os.path.join(REPO, "tests", "integration", "artifacts")

# Binaries of the PostgreSQL 15 server and its clients (Debian layout).
PG_BINDIR = os.environ.get("TANDEM_PG_BINDIR", "/usr/lib/postgresql/15/bin")


def pg_tool(name):
    """Path of a PostgreSQL client/server program: the versioned dir first."""
    path = os.path.join(PG_BINDIR, name)
    if os.path.exists(path):
        return path
    return "/usr/bin/" + name


def free_port():
    """A loopback TCP port nobody listens on right now (bind :0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, interval=0.05):
    """Poll pred() until it returns a true value; raise TimeoutError after timeout.

    timeout is an upper bound only: no test asserts how fast anything is.
    """
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}"
                               + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def port_accepts(port, host="127.0.0.1"):
    """True when a TCP connect to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def http_get(port, path, host="127.0.0.1", timeout=10, token=None):
    """GET http://host:port/path [with "Authorization: Bearer TOKEN"] -> (status, body
    text).  HTTP errors are answers too."""
    req = urllib.request.Request(f"http://{host}:{port}{path}")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def proc_kib(pid, field="VmRSS"):
    """A size from /proc/PID/status (VmRSS, VmHWM ...), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def sanitized(pid):
    """Whether PID runs under AddressSanitizer, whose shadow memory and
    quarantine make its RSS say nothing about what tandem keeps."""
    with open(f"/proc/{pid}/maps") as f:
        return "libasan" in f.read()


def tail(path, lines=60):
    """The last lines of a text file ("" when it does not exist)."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
