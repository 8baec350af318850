"""Raw PostgreSQL v3 wire protocol over a plain socket, for bad input and exact errors.

Nothing here is clever: build a message, send bytes, read one message,
parse an ErrorResponse into its fields.  login() speaks trust, cleartext,
md5 and SCRAM-SHA-256 so a test can see the server's exact ErrorResponse
(psycopg hides the SQLSTATE of a failed connection).
"""
import base64
import hashlib
import hmac
import os
import socket
import struct

PROTOCOL_3_0 = 196608
SSL_REQUEST = 80877103
CANCEL_REQUEST = 80877102


def startup_message(user, database="postgres", version=PROTOCOL_3_0, **params):
    body = struct.pack("!i", version)
    for key, value in [("user", user), ("database", database), *params.items()]:
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def message(mtype, payload=b""):
    """A typed frontend message: type byte, int32 length (self-inclusive), payload."""
    return mtype + struct.pack("!i", len(payload) + 4) + payload


def query_message(sql):
    return message(b"Q", sql.encode() + b"\0")


def parse_error(payload):
    """ErrorResponse/NoticeResponse payload -> {'S': 'FATAL', 'C': '08P01', 'M': ...}."""
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


class ServerClosed(Exception):
    """The server closed the connection (EOF or reset) where a message was expected."""


class LoginFailed(Exception):
    def __init__(self, fields):
        super().__init__(f"login failed: {fields}")
        self.fields = fields


class PgRaw:
    """One raw connection.  Every read has a timeout (an upper bound, not a check)."""

    def __init__(self, port, host="127.0.0.1", timeout=15, source=None):
        """source: the local address to connect from (e.g. 127.0.0.2), None for any."""
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.params = {}
        self.backend_key = None

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data, may_fail=False):
        """sendall; with may_fail, a server that already closed is not an error
        (it may answer an oversized message before reading all of it)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            if not may_fail:
                raise

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ServerClosed(f"closed after {len(self.buf)} of {n} bytes")
            self.buf += chunk

    def read_message(self):
        """Next backend message as (type char, payload bytes); ServerClosed on EOF."""
        self._fill(5)
        mtype = chr(self.buf[0])
        (length,) = struct.unpack("!i", self.buf[1:5])
        if length < 4:
            raise AssertionError(f"server sent message {mtype!r} with length {length}")
        self._fill(1 + length)
        payload = self.buf[5:1 + length]
        self.buf = self.buf[1 + length:]
        return mtype, payload

    def read_byte(self):
        """One raw byte (the answer to SSLRequest)."""
        self._fill(1)
        b, self.buf = self.buf[:1], self.buf[1:]
        return b

    def is_closed(self):
        """True when the server has closed: read until EOF (within the timeout).

        Bytes still arriving are discarded; a server that keeps the
        connection open makes this raise socket.timeout.
        """
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return True
            if not chunk:
                return True

    def expect_error(self):
        """Read until an ErrorResponse; return its fields.  Other messages are skipped."""
        seen = []
        while True:
            try:
                mtype, payload = self.read_message()
            except ServerClosed as exc:
                raise AssertionError(f"connection closed without ErrorResponse "
                                     f"(saw {seen}): {exc}") from None
            if mtype == "E":
                return parse_error(payload)
            seen.append(mtype)

    def expect_error_and_close(self):
        """The ErrorResponse fields, after checking the server closed the connection."""
        fields = self.expect_error()
        assert self.is_closed(), "connection still open after ErrorResponse"
        return fields

    # -- login -----------------------------------------------------------------

    def login(self, user, password=None, database="postgres", **params):
        """Startup + authentication up to ReadyForQuery.  LoginFailed on ErrorResponse."""
        self.send(startup_message(user, database, **params))
        while True:
            mtype, payload = self.read_message()
            if mtype == "E":
                raise LoginFailed(parse_error(payload))
            if mtype == "R":
                self._auth(user, password, payload)
            elif mtype == "S":
                key, value = payload.split(b"\0")[:2]
                self.params[key.decode()] = value.decode()
            elif mtype == "K":
                self.backend_key = struct.unpack("!ii", payload)
            elif mtype == "Z":
                return
            # 'N' notices and anything else: ignored

    def _auth(self, user, password, payload):
        (code,) = struct.unpack("!i", payload[:4])
        if code == 0:                      # AuthenticationOk
            return
        if password is None:
            raise AssertionError(f"server asked for authentication {code}, no password given")
        if code == 3:                      # cleartext
            self.send(message(b"p", password.encode() + b"\0"))
        elif code == 5:                    # md5 with salt
            salt = payload[4:8]
            inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + salt).hexdigest()
            self.send(message(b"p", b"md5" + outer.encode() + b"\0"))
        elif code == 10:                   # SASL: mechanisms list
            mechs = payload[4:].split(b"\0")
            if b"SCRAM-SHA-256" not in mechs:
                raise AssertionError(f"no SCRAM-SHA-256 in {mechs}")
            self._scram = _Scram(password)
            first = self._scram.client_first()
            self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first))
        elif code == 11:                   # SASLContinue
            self.send(message(b"p", self._scram.client_final(payload[4:])))
        elif code == 12:                   # SASLFinal
            self._scram.verify(payload[4:])
        else:
            raise AssertionError(f"unsupported authentication request {code}")

    def simple_query(self, sql):
        """Send a Query; return (rows as lists of str/None, command tags, error fields or None)."""
        self.send(query_message(sql))
        rows, tags, error = [], [], None
        while True:
            mtype, payload = self.read_message()
            if mtype == "D":
                (n,) = struct.unpack("!h", payload[:2])
                pos, row = 2, []
                for _ in range(n):
                    (ln,) = struct.unpack("!i", payload[pos:pos + 4])
                    pos += 4
                    if ln < 0:
                        row.append(None)
                    else:
                        row.append(payload[pos:pos + ln].decode())
                        pos += ln
                rows.append(row)
            elif mtype == "C":
                tags.append(payload.rstrip(b"\0").decode())
            elif mtype == "E":
                error = parse_error(payload)
            elif mtype == "Z":
                return rows, tags, error


class _Scram:
    """SCRAM-SHA-256 client side without channel binding (RFC 5802 / 7677)."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()

    def client_first(self):
        self.first_bare = f"n=,r={self.nonce}"
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        self.server_first = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in self.server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise AssertionError("server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", self.password,
                                     base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        final_bare = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{self.server_first},{final_bare}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.expected_server_sig = hmac.digest(server_key, auth_message, "sha256")
        return f"{final_bare},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final):
        attrs = dict(kv.split("=", 1) for kv in server_final.decode().split(","))
        if base64.b64decode(attrs["v"]) != self.expected_server_sig:
            raise AssertionError("SCRAM server signature does not verify")
