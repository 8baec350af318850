"""A throw-away PKI made with the openssl CLI: a test CA, a server cert, a wrong CA."""
import os
import subprocess


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _make_ca(directory, name, cn):
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "30",
             "-subj", f"/CN={cn}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)


class Certs:
    """Files: ca.crt/ca.key, server.crt/server.key (CN=localhost,
    SAN IP:127.0.0.1 + DNS:localhost, signed by ca), wrong_ca.crt (unrelated CA),
    client.crt/client.key (CN=tandem, a client certificate signed by ca)."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        _make_ca(directory, "ca", "tandem test CA")
        _make_ca(directory, "wrong_ca", "tandem wrong CA")
        with open(os.path.join(directory, "server.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes",
                 "-keyout", "server.key", "-out", "server.csr",
                 "-subj", "/CN=localhost", cwd=directory)
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt",
                 "-CAkey", "ca.key", "-set_serial", "0x" + os.urandom(8).hex(),
                 "-days", "30", "-extfile", "server.ext", "-out", "server.crt",
                 cwd=directory)
        os.chmod(os.path.join(directory, "server.key"), 0o600)
        with open(os.path.join(directory, "client.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=clientAuth\n")
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes",
                 "-keyout", "client.key", "-out", "client.csr",
                 "-subj", "/CN=tandem", cwd=directory)
        _openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.crt",
                 "-CAkey", "ca.key", "-set_serial", "0x" + os.urandom(8).hex(),
                 "-days", "30", "-extfile", "client.ext", "-out", "client.crt",
                 cwd=directory)
        os.chmod(os.path.join(directory, "client.key"), 0o600)
        self.ca = os.path.join(directory, "ca.crt")
        self.wrong_ca = os.path.join(directory, "wrong_ca.crt")
        self.server_cert = os.path.join(directory, "server.crt")
        self.server_key = os.path.join(directory, "server.key")
        self.client_cert = os.path.join(directory, "client.crt")
        self.client_key = os.path.join(directory, "client.key")
