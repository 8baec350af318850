"""The command line: --version, --help, -t (check a config), and the
file-less form `tandem postgres --listen ... --primary ...`."""
import subprocess

import pytest

from harness.util import free_port, wait_until

GOOD = """\
workers 1;
log_format text;
limits {
    max_client_conn 100;
    max_packet_size 1MB;
    startup_timeout 10s;
}
admin { listen 127.0.0.1:9999; }
backend blue {
    address 127.0.0.1:5432;
}
backend green {
    address 127.0.0.1:5433;
    tls verify-full;
    tls_ca_file CA_FILE;
}
listener pg {
    listen 127.0.0.1:6432;
    protocol postgres;
    primary blue;
    shadow green;
    mode passthrough;
}
"""

# Two errors, on lines 2 and 9; everything else is valid.
BAD = """\
workers 1;
workers lots;
backend blue {
    address 127.0.0.1:5432;
}
listener pg {
    listen 127.0.0.1:6432;
    protocol postgres;
    mode sideways;
    primary blue;
}
"""


def run(tandem_bin, *args, cwd=None):
    return subprocess.run([tandem_bin, *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def test_version(tandem_bin):
    r = run(tandem_bin, "--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("tandem "), r.stdout
    assert r.stdout.split()[1][0].isdigit(), r.stdout


def test_help(tandem_bin):
    r = run(tandem_bin, "--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "-c" in out and "-t" in out and "postgres" in out, out


def test_unknown_option_fails(tandem_bin):
    r = run(tandem_bin, "--no-such-option")
    assert r.returncode != 0


def test_check_good_config(tandem_bin, tmp_path, certs):
    (tmp_path / "ca.pem").write_text(open(certs.ca).read())
    (tmp_path / "good.conf").write_text(GOOD.replace("CA_FILE", str(tmp_path / "ca.pem")))
    r = run(tandem_bin, "-t", "-c", str(tmp_path / "good.conf"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip(), "-t prints its verdict on stdout"


def test_check_bad_config_names_every_error(tandem_bin, tmp_path):
    (tmp_path / "bad.conf").write_text(BAD)
    r = run(tandem_bin, "-t", "-c", str(tmp_path / "bad.conf"))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    for line in (2, 9):
        assert f"bad.conf:{line}: " in r.stderr, f"no 'bad.conf:{line}: ' in:\n{r.stderr}"


def test_check_missing_file(tandem_bin, tmp_path):
    r = run(tandem_bin, "-t", "-c", str(tmp_path / "missing.conf"))
    assert r.returncode == 1
    assert "missing.conf" in r.stderr


def test_start_with_bad_config_fails(tandem_bin, tmp_path):
    (tmp_path / "bad.conf").write_text(BAD)
    r = run(tandem_bin, "-c", str(tmp_path / "bad.conf"))
    assert r.returncode == 1
    assert "bad.conf:2: " in r.stderr


def test_fileless_command_line(tandem, pg_primary):
    port, admin = free_port(), free_port()
    t = tandem(args=["postgres", "--listen", f"127.0.0.1:{port}",
                     "--primary", pg_primary.address, "--admin", f"127.0.0.1:{admin}",
                     "--workers", "1"],
               port=port, admin_port=admin)
    with t.connect() as conn:
        assert conn.execute("SELECT 'cli'").fetchone()[0] == "cli"
    wait_until(lambda: t.metric("tandem_backend_up", backend="blue") == 1, 20,
               'tandem_backend_up{backend="blue"} 1')


def test_fileless_command_line_named_backend(tandem, pg_primary):
    port = free_port()
    t = tandem(args=["postgres", "--listen", f"127.0.0.1:{port}",
                     "--primary", f"main={pg_primary.address}"], port=port)
    with t.connect(user="scramuser") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "scramuser"


def test_fileless_command_line_missing_primary(tandem_bin):
    r = run(tandem_bin, "postgres", "--listen", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0
    assert "primary" in r.stderr
