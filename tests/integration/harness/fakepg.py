"""A small *malicious* PostgreSQL primary: the hostile input of a test, not a mock.

It speaks just enough of the v3 protocol to get a client logged in, and
lets the test decide the bytes it answers with:

    fake = FakePg(login=lambda c: c.send(auth_ok() + key_data(1, 2) + key_data(3, 4)
                                         + ready()))
    ... backend address 127.0.0.1:{fake.port} ...
    fake.cancels        # [(pid, key), ...] CancelRequests it received
    fake.passwords      # [bytes, ...] PasswordMessages it received
    fake.tls_failures   # TLS handshakes the client aborted
    fake.close()

Every connection runs in a thread of its own; every socket has a timeout.
"""
import socket
import ssl
import struct
import threading

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102


def msg(mtype, payload=b""):
    return mtype + struct.pack("!i", len(payload) + 4) + payload


def auth_ok():
    return msg(b"R", struct.pack("!i", 0))


def auth_cleartext():
    return msg(b"R", struct.pack("!i", 3))


def key_data(pid, key):
    return msg(b"K", struct.pack("!II", pid, key))


def param(name, value):
    return msg(b"S", name.encode() + b"\0" + value.encode() + b"\0")


def ready(status=b"I"):
    return msg(b"Z", status)


def select_one():
    """The answer to a simple Query: one row '1', then ReadyForQuery."""
    row_desc = (struct.pack("!h", 1) + b"?column?\0" + struct.pack("!ihihih", 0, 0, 23, 4, -1, 0))
    return (msg(b"T", row_desc) + msg(b"D", struct.pack("!hi", 1, 1) + b"1")
            + msg(b"C", b"SELECT 1\0") + ready())


class FakeConn:
    """One client connection of the fake server."""

    def __init__(self, server, sock):
        self.server = server
        self.sock = sock
        self.params = {}

    def send(self, data):
        self.sock.sendall(data)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def read_message(self):
        mtype = self.recv_exact(1)
        (length,) = struct.unpack("!i", self.recv_exact(4))
        return mtype, self.recv_exact(length - 4)


class FakePg:
    """login(conn) sends what follows the startup packet (after a password, if
    ask_password); query(conn, payload) answers each Query (default: SELECT 1)."""

    def __init__(self, login=None, query=None, tls_context=None, ask_password=False):
        self.login = login or (lambda c: c.send(auth_ok() + key_data(1, 1) + ready()))
        self.query = query or (lambda c, payload: c.send(select_one()))
        self.tls_context = tls_context
        self.ask_password = ask_password
        self.cancels, self.passwords, self.startups = [], [], []
        self.tls_failures = 0
        self.lock = threading.Lock()
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def close(self):
        self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _accept(self):
        while not self.closed:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            sock.settimeout(30)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        conn = FakeConn(self, sock)
        try:
            self._session(conn)
        except (EOFError, OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.sock.close()
            except OSError:
                pass

    def _session(self, conn):
        while True:
            (length,) = struct.unpack("!i", conn.recv_exact(4))
            body = conn.recv_exact(length - 4)
            (code,) = struct.unpack("!i", body[:4])
            if code == CANCEL_REQUEST:
                with self.lock:
                    self.cancels.append(struct.unpack("!II", body[4:12]))
                return
            if code == SSL_REQUEST and self.tls_context is not None:
                conn.send(b"S")
                try:
                    conn.sock = self.tls_context.wrap_socket(conn.sock, server_side=True)
                except (ssl.SSLError, OSError):
                    with self.lock:
                        self.tls_failures += 1
                    raise
                continue
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                conn.send(b"N")
                continue
            break
        parts = body[4:].split(b"\0")
        conn.params = {parts[i].decode(): parts[i + 1].decode()
                       for i in range(0, len(parts) - 1, 2) if parts[i]}
        with self.lock:
            self.startups.append(conn.params)
        if self.ask_password:
            conn.send(auth_cleartext())
            mtype, payload = conn.read_message()
            if mtype == b"p":
                with self.lock:
                    self.passwords.append(payload.rstrip(b"\0"))
        self.login(conn)
        while True:
            mtype, payload = conn.read_message()
            if mtype == b"X":
                return
            if mtype == b"Q":
                self.query(conn, payload)
