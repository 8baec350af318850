"""Fixtures for tandem's integration tests.

Session-scoped: two real PostgreSQL 15 servers (pg_primary, pg_shadow) with
TLS and one role per auth method (see harness/pgserver.py), and a test PKI
(certs).  Per test: `tandem`, a factory that starts tandem processes and
stops them at teardown, failing the test if one crashed.

The binary is $TANDEM_BIN, else <repo>/build/tandem.
"""
import os
import signal
import shutil
import tempfile

import pytest

from harness.certs import Certs
from harness.pgserver import PgServer
from harness.shadow import signal_server
from harness.tandemproc import TandemFactory
from harness.util import REPO

DEFAULT_BIN = os.path.join(REPO, "build", "tandem")


@pytest.fixture(scope="session")
def tandem_bin():
    path = os.environ.get("TANDEM_BIN") or DEFAULT_BIN
    if not os.access(path, os.X_OK):
        pytest.fail(f"tandem binary not found at {path}: build it (cmake --build build) "
                    "or set TANDEM_BIN")
    return path


@pytest.fixture(scope="session")
def certs():
    directory = tempfile.mkdtemp(prefix="tandem-certs-")
    os.chmod(directory, 0o755)
    yield Certs(directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_primary(certs):
    server = PgServer("primary", certs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_shadow(certs):
    server = PgServer("shadow", certs)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_victim(certs):
    """A shadow server of the test's own, to stop, kill or restart (SIGCONT at teardown)."""
    server = PgServer("victim", certs)
    try:
        server.start()
        yield server
    finally:
        try:
            signal_server(server, signal.SIGCONT)
        except (ProcessLookupError, AttributeError):
            pass
        server.stop()


def _factory(request, tandem_bin):
    factory = TandemFactory(tandem_bin, request.node.nodeid.split("/")[-1])
    yield factory
    failures = factory.close()
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def tandem(request, tandem_bin):
    """Factory: tandem(config_text=..., port=..., admin_port=...) or tandem.pg(primary=...)."""
    yield from _factory(request, tandem_bin)


@pytest.fixture(scope="module")
def tandem_module(request, tandem_bin):
    """The same factory, for tandem processes shared by the tests of one module."""
    yield from _factory(request, tandem_bin)


@pytest.fixture(scope="session")
def pgbench_db(pg_primary):
    """pgbench's tables (scale 1) in pg_primary's postgres database, made directly."""
    from harness.clients import pgbench_init
    pgbench_init(pg_primary.port)
    return pg_primary



def _redis_server(name):
    from harness.redisserver import RedisServer
    server = RedisServer(name)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_primary():
    """A real redis-server (no password), shared by the Redis tests."""
    yield from _redis_server("primary")


@pytest.fixture(scope="session")
def redis_shadow():
    yield from _redis_server("shadow")
