"""Real load through tandem: pgbench's TPC-B-like script (tables made directly
on the server), with no failed transaction."""
import pytest

from harness.clients import check_pgbench, pgbench_popen


@pytest.fixture(scope="module")
def t(tandem_module, pgbench_db):
    return tandem_module.pg(primary=pgbench_db)


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_tpcb_like(t, mode):
    proc = pgbench_popen(t.port, clients=4, seconds=3, mode=mode)
    check_pgbench(proc)


def test_pgbench_select_only_many_clients(t):
    proc = pgbench_popen(t.port, clients=16, seconds=3, mode="prepared", extra=["-S"])
    check_pgbench(proc)
