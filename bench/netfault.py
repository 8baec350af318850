"""Client throughput with a healthy shadow vs. a slow, lossy one (issue 16).

Run by bench/netfault.sh.  The shadow servers sit in a network namespace
(tests/integration/harness/netns.py); the primaries on loopback.  For each
protocol: the same load through tandem (shadow mode) with the shadow's link
clean, then with DELAY ms (+/- 10%) and LOSS% each way.  Prints TPS/ops,
client errors and mirrors dropped.  Figures, not assertions.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
from harness.certs import Certs  # noqa: E402
from harness.clients import _env  # noqa: E402
from harness.netns import NetFault, unavailable  # noqa: E402
from harness.pgserver import PgServer  # noqa: E402
from harness.redisserver import RedisServer  # noqa: E402
from harness.tandemproc import TandemFactory, metric_value  # noqa: E402
from harness.util import free_port, pg_tool  # noqa: E402

SECONDS = int(os.environ.get("NETFAULT_SECONDS", "20"))
DELAY = int(os.environ.get("NETFAULT_DELAY_MS", "200"))
LOSS = float(os.environ.get("NETFAULT_LOSS_PCT", "5"))
BIN = os.environ.get("TANDEM_BIN", os.path.join(os.path.dirname(__file__), "..", "build", "tandem"))


def config(proto, port, admin, primary, shadow):
    listener = "pg" if proto == "postgres" else "r"
    return (f"workers 2;\nadmin {{ listen 127.0.0.1:{admin}; }}\n"
            f"backend blue {{ address {primary.address}; }}\n"
            f"backend green {{ address {shadow.address}; }}\n"
            f"listener {listener} {{ listen 127.0.0.1:{port}; protocol {proto}; primary blue; "
            f"shadow green; mode shadow; mirror {{ reads 10%; timeout 5s; }} }}\n")


def figures(t, listener):
    text = t.metrics()
    return (metric_value(text, "tandem_client_errors_total", listener=listener) or 0,
            metric_value(text, "tandem_shadow_mirror_dropped_total", listener=listener) or 0)


def pgbench(port):
    r = subprocess.run([pg_tool("pgbench"), "-n", "-c", "8", "-j", "2", "-T", str(SECONDS), "-h",
                        "127.0.0.1", "-p", str(port), "-U", "postgres", "postgres"],
                       env=_env("postgres", None), capture_output=True, text=True)
    tps = re.search(r"tps = ([0-9.]+)", r.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", r.stdout)
    return (float(tps.group(1)) if tps else 0.0, r.returncode,
            int(failed.group(1)) if failed else -1)


def redis_bench(port):
    r = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "8", "-n",
                        str(20000 * SECONDS), "-t", "set,get", "-q"], capture_output=True,
                       text=True)
    rates = [float(x) for x in re.findall(r"([0-9.]+) requests per second", r.stdout)]
    return (sum(rates) / len(rates) if rates else 0.0, r.returncode,
            r.stdout.lower().count("error"))


def main():
    why = unavailable()
    if why:
        print(f"netfault: skipped: {why}")
        return 0
    certs_dir = tempfile.mkdtemp(prefix="tandem-certs-")
    os.chmod(certs_dir, 0o755)
    certs = Certs(certs_dir)
    factory = TandemFactory(os.path.abspath(BIN), "bench-netfault")
    rows = []
    with NetFault() as net:
        pg_p, pg_s = PgServer("bn-primary", certs).start(), PgServer("bn-shadow", certs, netns=net).start()
        r_p, r_s = RedisServer("bn-primary").start(), RedisServer("bn-shadow", netns=net).start()
        try:
            for s in (pg_p, pg_s):
                subprocess.run([pg_tool("pgbench"), "-i", "-q", "-s", "4", "-h", s.host, "-p",
                                str(s.port), "-U", "postgres", "postgres"],
                               env=_env("postgres", None), check=True, capture_output=True)
            for proto, p, s, run, listener in (("postgres", pg_p, pg_s, pgbench, "pg"),
                                               ("redis", r_p, r_s, redis_bench, "r")):
                for label, impair in (("healthy shadow", None),
                                      (f"shadow +{DELAY}ms {LOSS}% loss", (DELAY, LOSS))):
                    net.clear()
                    if impair:
                        net.impair(delay_ms=impair[0], jitter_ms=impair[0] // 10,
                                   loss_pct=impair[1])
                    port, admin = free_port(), free_port()
                    t = factory(config_text=config(proto, port, admin, p, s), port=port,
                                admin_port=admin)
                    rate, rc, errs = run(port)
                    cerr, dropped = figures(t, listener)
                    t.stop()
                    rows.append((proto, label, rate, rc, errs, cerr, dropped))
        finally:
            net.clear()
            for s in (pg_p, pg_s, r_p, r_s):
                s.stop()
            factory.close()
            shutil.rmtree(certs_dir, ignore_errors=True)
    print(f"\n{'protocol':9} {'shadow link':28} {'client tps/ops':>14} {'exit':>5} "
          f"{'failed':>7} {'client_err':>10} {'dropped':>8}")
    for proto, label, rate, rc, errs, cerr, dropped in rows:
        print(f"{proto:9} {label:28} {rate:14.0f} {rc:5d} {errs:7d} {cerr:10.0f} {dropped:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
