"""Bad input costs one connection, never the process: each offending client
gets an ErrorResponse with the right SQLSTATE and is closed, while another
session that was already open keeps working."""
import socket
import struct

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from harness import pgwire
from harness.tandemproc import pg_config
from harness.util import free_port, port_accepts, wait_until


@pytest.fixture(scope="module")
def setup(tandem_module, pg_primary):
    """tandem with a small max_packet_size and a 1 s startup_timeout; listener
    `pg` in front of pg_primary (backend blue), listener `deadl` in front of
    backend `dead`, an address where nothing listens."""
    port, dead_listen, admin = free_port(), free_port(), free_port()
    dead_port = free_port()
    text = pg_config(port=port, primary=pg_primary, admin_port=admin,
                     limits={"max_packet_size": "64KB", "startup_timeout": "1s"},
                     extra=(f"backend dead {{\n    address 127.0.0.1:{dead_port};\n}}\n"
                            f"listener deadl {{\n    listen 127.0.0.1:{dead_listen};\n"
                            "    protocol postgres;\n    primary dead;\n}"))
    t = tandem_module(config_text=text, port=port, admin_port=admin)
    wait_until(lambda: port_accepts(dead_listen), 20, "the second listener")
    keeper = t.connect()
    yield t, keeper, dead_listen, dead_port
    keeper.close()


@pytest.fixture
def t(setup):
    return setup[0]


@pytest.fixture
def keeper(setup):
    """An open session through tandem; every test checks it still works afterwards."""
    conn = setup[1]
    assert conn.execute("SELECT 1").fetchone()[0] == 1
    yield conn
    assert conn.execute("SELECT 'keeper ok'").fetchone()[0] == "keeper ok"


def errors(t, reason):
    return t.metric("tandem_client_errors_total", reason=reason) or 0


def login(t):
    raw = pgwire.PgRaw(t.port)
    raw.login("trustuser")
    return raw


# -- startup phase ------------------------------------------------------------

GARBAGE = {
    "http": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "tls_hello_without_sslrequest": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32),
    "protocol_2": pgwire.startup_message("trustuser", version=0x00020000),
    "protocol_9": pgwire.startup_message("trustuser", version=0x00090000),
    "length_below_8": struct.pack("!ii", 4, pgwire.PROTOCOL_3_0),
    "negative_length": struct.pack("!ii", -100, pgwire.PROTOCOL_3_0),
    "huge_length": struct.pack("!ii", 0x7FFFFFF0, pgwire.PROTOCOL_3_0),
    "unterminated_params": struct.pack("!ii", 20, pgwire.PROTOCOL_3_0) + b"user\0trustus",
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_invalid_startup_packet_gets_08P01(t, keeper, name):
    before = errors(t, "protocol")
    with pgwire.PgRaw(t.port) as raw:
        raw.send(GARBAGE[name], may_fail=True)
        fields = raw.expect_error_and_close()
    assert fields["C"] == "08P01", fields
    t.wait_metric("tandem_client_errors_total", before + 1, reason="protocol")


def test_startup_timeout_when_silent(t, keeper):
    before = errors(t, "startup_timeout")
    with pgwire.PgRaw(t.port, timeout=20) as raw:
        fields = raw.expect_error_and_close()   # we send nothing at all
    assert fields["C"] == "08P01", fields
    t.wait_metric("tandem_client_errors_total", before + 1, reason="startup_timeout")


def test_startup_timeout_when_packet_never_completes(t, keeper):
    with pgwire.PgRaw(t.port, timeout=20) as raw:
        raw.send(pgwire.startup_message("trustuser")[:10])
        fields = raw.expect_error_and_close()
    assert fields["C"] == "08P01", fields


def test_startup_timeout_during_password_prompt(t, keeper):
    """Asked for a password, the client never answers: still bounded by startup_timeout."""
    with pgwire.PgRaw(t.port, timeout=30) as raw:
        raw.send(pgwire.startup_message("scramuser"))
        mtype, payload = raw.read_message()
        assert mtype == "R" and struct.unpack("!i", payload[:4])[0] == 10
        fields = raw.expect_error_and_close()
    assert fields["C"] == "08P01", fields


def test_gssenc_request_refused_politely(t, keeper):
    with pgwire.PgRaw(t.port) as raw:
        raw.send(struct.pack("!ii", 8, 80877104))
        assert raw.read_byte() == b"N"
        raw.login("trustuser")
        assert raw.simple_query("SELECT 1")[0] == [["1"]]


def test_cancel_request_with_unknown_key_is_dropped(t, keeper):
    with pgwire.PgRaw(t.port) as raw:
        raw.send(struct.pack("!iiii", 16, pgwire.CANCEL_REQUEST, 12345, 67890))
        assert raw.is_closed()
        assert raw.buf == b""


def test_client_vanishes_mid_startup(t, keeper):
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", t.port))
        s.sendall(pgwire.startup_message("trustuser")[:7])
        s.close()
    with login(t) as raw:
        assert raw.simple_query("SELECT 2")[0] == [["2"]]


# -- after login -----------------------------------------------------------------

def test_message_length_below_4_gets_08P01(t, keeper):
    before = errors(t, "protocol")
    with login(t) as raw:
        raw.send(b"Q" + struct.pack("!i", 2))
        fields = raw.expect_error_and_close()
    assert fields["C"] == "08P01", fields
    t.wait_metric("tandem_client_errors_total", before + 1, reason="protocol")


def test_message_above_the_protocol_ceiling_gets_08P01(t, keeper):
    # PostgreSQL takes no client message above 1 GB: refused from the header alone
    with login(t) as raw:
        raw.send(b"Q" + struct.pack("!i", (1 << 30) + 1))
        fields = raw.expect_error_and_close()
    assert fields["C"] == "08P01", fields


def test_query_above_max_packet_size_streams_unclassified(t, keeper):
    # max_packet_size bounds what tandem reads whole, not what a client may send:
    # a longer statement streams to the server, counted as a write (unread)
    before = t.metric("tandem_requests_total", listener="pg", backend="blue", kind="write") or 0
    blob = "x" * (100 * 1024)
    assert keeper.execute(f"SELECT length('{blob}')").fetchone()[0] == len(blob)
    assert keeper.execute("SELECT length(%s || '" + blob + "')", ("ab",)).fetchone()[0] == \
        len(blob) + 2  # a Parse as long
    after = t.metric("tandem_requests_total", listener="pg", backend="blue", kind="write")
    assert after >= before + 2


def test_query_just_below_max_packet_size_works(t, keeper):
    blob = "y" * (60 * 1024)
    assert keeper.execute(f"SELECT length('{blob}')").fetchone()[0] == len(blob)


def test_unknown_message_type_gets_08P01(t, keeper):
    with login(t) as raw:
        raw.send(pgwire.message(b"z", b"\0\0\0\0"))
        fields = raw.expect_error_and_close()
    assert fields["C"] == "08P01", fields


def test_garbage_after_login_gets_08P01(t, keeper):
    with login(t) as raw:
        raw.send(b"\x01\xff\xff\xff\xff" + b"\xee" * 64, may_fail=True)
        fields = raw.expect_error_and_close()
    assert fields["C"] == "08P01", fields


def test_terminate_closes_cleanly(t, keeper):
    with login(t) as raw:
        raw.send(pgwire.message(b"X"))
        assert raw.is_closed()
        assert raw.buf == b""


def test_client_vanishes_mid_query(t, keeper):
    for _ in range(10):
        with login(t) as raw:
            raw.send(pgwire.query_message("SELECT generate_series(1, 100000)"))
    for _ in range(10):
        with login(t) as raw:
            raw.send(pgwire.query_message("SELECT 1")[:6])
    assert keeper.execute("SELECT count(*) FROM generate_series(1, 1000)").fetchone()[0] == 1000


# -- backend unreachable -------------------------------------------------------------

def test_primary_unreachable_gets_08006_naming_the_backend(setup, keeper):
    t, _, dead_listen, dead_port = setup
    before = errors(t, "backend_unreachable")
    with pgwire.PgRaw(dead_listen) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("trustuser")
        fields = exc.value.fields
        assert raw.is_closed()
    assert fields["C"] == "08006", fields
    assert "dead" in fields["M"], fields
    assert f"127.0.0.1:{dead_port}" in fields["M"], fields
    t.wait_metric("tandem_client_errors_total", before + 1, reason="backend_unreachable")
    with pytest.raises(psycopg.OperationalError, match="dead"):
        psycopg.connect(make_conninfo(t.dsn(), port=dead_listen))
    wait_until(lambda: t.metric("tandem_backend_up", backend="dead") == 0, 20,
               'tandem_backend_up{backend="dead"} 0')
    wait_until(lambda: t.metric("tandem_backend_up", backend="blue") == 1, 20,
               'tandem_backend_up{backend="blue"} 1')


# -- too many clients ------------------------------------------------------------------

def test_max_client_conn_gets_53300(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, limits={"max_client_conn": 3})
    # the readiness probe's connection must be gone before we count
    wait_until(lambda: t.metric("tandem_client_connections") == 0, 20, "no client connections")
    keeper = t.connect()
    others = [t.connect(), t.connect()]
    before = errors(t, "too_many_clients")
    with pgwire.PgRaw(t.port) as raw:
        raw.send(pgwire.startup_message("trustuser"), may_fail=True)
        fields = raw.expect_error_and_close()
    assert fields["C"] == "53300", fields
    with pytest.raises(psycopg.OperationalError):
        t.connect()
    t.wait_metric("tandem_client_errors_total", before + 2, reason="too_many_clients")
    assert keeper.execute("SELECT 'keeper ok'").fetchone()[0] == "keeper ok"
    assert [c.execute("SELECT 1").fetchone()[0] for c in others] == [1, 1]

    # A slot freed is a slot usable again.
    others.pop().close()

    def connect_again():
        try:
            with t.connect() as conn:
                return conn.execute("SELECT 'again'").fetchone()[0] == "again"
        except psycopg.OperationalError:
            return False
    wait_until(connect_again, 20, "a connection after one closed")
    keeper.close()
    others[0].close()


# -- protocol negotiation ------------------------------------------------------------

@pytest.mark.parametrize("count,width", [(2, 10), (40, 40), (60, 150)])
def test_pq_options_are_refused_by_negotiate_protocol_version(t, keeper, count, width):
    """tandem speaks 3.0 with no _pq_. options and says so with
    NegotiateProtocolVersion listing every one, however long the list (above
    1 KiB it used to be silently left out), then the login goes on."""
    names = [f"_pq_.opt{i:02d}_" + "x" * width for i in range(count)]
    with pgwire.PgRaw(t.port) as raw:
        raw.send(pgwire.startup_message("trustuser", **{n: "on" for n in names}))
        mtype, payload = raw.read_message()
        assert mtype == "v", (mtype, payload[:100])
        newest, n = struct.unpack("!ii", payload[:8])
        assert (newest, n) == (0, count)
        assert payload[8:].split(b"\0")[:-1] == [n.encode() for n in names]
        while mtype != "Z":
            mtype, payload = raw.read_message()
            assert mtype != "E", pgwire.parse_error(payload)
        assert raw.simple_query("SELECT 'negotiated'")[0] == [["negotiated"]]
