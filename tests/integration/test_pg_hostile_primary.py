"""A malicious primary costs its own sessions, never the process.

The primary is harness.fakepg.FakePg: a few lines of Python that log a
client in and then send the bytes under test.  Every test checks that a
fresh session through the same tandem still works afterwards.
"""
import struct

import pytest

from harness import pgwire
from harness.fakepg import FakePg, auth_ok, key_data, msg, param, ready, select_one
from harness.util import free_port, wait_until


def config(port, admin, primary_port, limits=""):
    return (f"workers 2;\nlog_level info;\n{limits}"
            f"admin {{ listen 127.0.0.1:{admin}; }}\n"
            f"backend fake {{\n    address 127.0.0.1:{primary_port};\n}}\n"
            f"listener pg {{\n    listen 127.0.0.1:{port};\n    protocol postgres;\n"
            "    primary fake;\n    mode passthrough;\n}\n")


def start(tandem, fake):
    port, admin = free_port(), free_port()
    return tandem(config_text=config(port, admin, fake.port), port=port, admin_port=admin)


def cancel(port, pid, key):
    """Send a CancelRequest on a connection of its own; True when tandem closed it."""
    with pgwire.PgRaw(port) as raw:
        raw.send(struct.pack("!iiII", 16, pgwire.CANCEL_REQUEST, pid, key))
        return raw.is_closed()


def still_serves(t):
    with pgwire.PgRaw(t.port) as raw:
        raw.login("anyone")
        assert raw.simple_query("SELECT 1")[0] == [["1"]]


def test_backend_key_data_twice_registers_one_cancel_entry(tandem):
    """BackendKeyData twice: the second replaces the first.  Before the fix the
    session's entry was linked into the process-wide cancel table twice (a
    self-loop): a CancelRequest whose key falls in the same bucket looped for
    ever under the global lock, and after the session ended the table kept a
    pointer to its freed memory."""
    two_keys = auth_ok() + key_data(111, 222) + key_data(333, 444) + param("a", "b") + ready()
    with FakePg(login=lambda c: c.send(two_keys)) as fake:
        t = start(tandem, fake)
        raw = pgwire.PgRaw(t.port)
        raw.login("anyone")
        pid, key = (v & 0xFFFFFFFF for v in raw.backend_key)

        # same bucket of the table (the hash keeps the low 12 bits), another key
        assert cancel(t.port, pid, key ^ 0x1000)
        # the client's own key reaches the primary with the key it sent last
        assert cancel(t.port, pid, key)
        wait_until(lambda: (333, 444) in fake.cancels, 15, "the cancel to reach the primary")
        assert (111, 222) not in fake.cancels
        assert raw.simple_query("SELECT 1")[0] == [["1"]]

        closed = t.metric("tandem_client_disconnections_total") or 0
        raw.close()
        t.wait_metric("tandem_client_disconnections_total", closed + 1)
        # the session is gone: so is its key, and nothing reaches the primary
        forwarded = len(fake.cancels)
        unknown = t.metric("tandem_cancel_requests_ignored_total", listener="pg") or 0
        assert cancel(t.port, pid, key)
        t.wait_metric("tandem_cancel_requests_ignored_total", unknown + 1, listener="pg")
        assert len(fake.cancels) == forwarded
        still_serves(t)


SHORT_READY = b"Z" + struct.pack("!i", 4)  # ReadyForQuery without its status byte


def test_short_ready_for_query_at_login_is_08P01(tandem):
    """ReadyForQuery of length 4 ending the login: the status byte tandem
    read was not in the message.  Now: 08P01 to the client, session closed."""
    with FakePg(login=lambda c: c.send(auth_ok() + key_data(1, 2) + SHORT_READY)) as fake:
        t = start(tandem, fake)
        before = t.metric("tandem_client_errors_total", reason="backend_lost") or 0
        with pgwire.PgRaw(t.port) as raw:
            raw.send(pgwire.startup_message("anyone"))
            fields = raw.expect_error_and_close()
        assert fields["C"] == "08P01", fields
        assert "ReadyForQuery" in fields["M"], fields
        t.wait_metric("tandem_client_errors_total", before + 1, reason="backend_lost")


@pytest.mark.parametrize("answer", [
    SHORT_READY,
    msg(b"C", b"SELECT 1\0") + SHORT_READY + msg(b"Z", b"I"),
    msg(b"1") + msg(b"n", b"x") + msg(b"Z", b"I"),
], ids=["ready_len_4", "ready_len_4_then_more", "nodata_with_a_body"])
def test_short_fixed_size_message_after_login_is_08P01(tandem, answer):
    """The same in the middle of a session: the client gets an ErrorResponse
    08P01 naming the backend and the session ends; tandem serves on."""
    def query(conn, payload):
        conn.send(answer if b"bad" in payload else select_one())
    with FakePg(query=query) as fake:
        t = start(tandem, fake)
        with pgwire.PgRaw(t.port) as raw:
            raw.login("anyone")
            assert raw.simple_query("SELECT 1")[0] == [["1"]]
            raw.send(pgwire.query_message("SELECT 'bad'"))
            fields = raw.expect_error_and_close()
        assert fields["C"] == "08P01", fields
        assert 'backend "fake"' in fields["M"] and "with length" in fields["M"], fields
        still_serves(t)


def shadowed_fake(tandem, fake, pg_shadow):
    """tandem in shadow mode: the fake server as the primary, a real shadow."""
    port, admin = free_port(), free_port()
    text = (f"workers 2;\nadmin {{ listen 127.0.0.1:{admin}; }}\n"
            f"backend fake {{\n    address 127.0.0.1:{fake.port};\n}}\n"
            f"backend green {{\n    address {pg_shadow.address};\n}}\n"
            f"listener pg {{\n    listen 127.0.0.1:{port};\n    protocol postgres;\n"
            "    primary fake;\n    shadow green;\n    mode shadow;\n}\n")
    return tandem(config_text=text, port=port, admin_port=admin)


def test_copy_in_response_claiming_a_gigabyte_is_08P01(tandem, pg_shadow):
    """A CopyInResponse header claiming 1 GB was waited for whole in shadow
    mode (+363 MiB).  Its real size is at most 7 + 2 * 65535 bytes: a larger
    one is refused from its header, 08P01 to the client."""
    def query(conn, payload):
        if b"COPY" in payload:
            conn.send(b"G" + struct.pack("!i", 1 << 30) + b"\0" * 65536)
        else:
            conn.send(select_one())
    with FakePg(query=query) as fake:
        t = shadowed_fake(tandem, fake, pg_shadow)
        with pgwire.PgRaw(t.port) as raw:
            raw.login("trustuser")
            raw.send(pgwire.query_message("COPY t FROM STDIN"))
            fields = raw.expect_error_and_close()
        assert fields["C"] == "08P01", fields
        assert "with length 1073741824" in fields["M"], fields
        still_serves(t)


def test_ready_for_query_claiming_a_gigabyte_is_08P01(tandem, pg_shadow):
    """The other half of the same finding: a ReadyForQuery header claiming
    1 GB (its real length is 5) was waited for whole in shadow mode.  Refused
    from its header: 08P01 naming the length, and tandem serves on."""
    def query(conn, payload):
        if b"huge" in payload:
            conn.send(msg(b"C", b"SELECT 1\0") + b"Z" + struct.pack("!i", 1 << 30) +
                      b"I" * 65536)
        else:
            conn.send(select_one())
    with FakePg(query=query) as fake:
        t = shadowed_fake(tandem, fake, pg_shadow)
        with pgwire.PgRaw(t.port) as raw:
            raw.login("trustuser")
            assert raw.simple_query("SELECT 1")[0] == [["1"]]
            raw.send(pgwire.query_message("SELECT 'huge'"))
            fields = raw.expect_error_and_close()
        assert fields["C"] == "08P01", fields
        assert "with length 1073741824" in fields["M"], fields
        still_serves(t)
