"""bench/redis-suite.sh's reading of runtest output, and the shadow's key check.

  redis_suite_report.py report OUTDIR "MODES" "FILES"
      the table: per mode tests passed / failed / not run, the failures only
      through tandem, shadow metrics; exit 1 when a test fails only through
      tandem.
  redis_suite_report.py keydiff PRIMARY_PORT SHADOW_PORT
      "equal" when DEBUG DIGEST agrees, else the keys that differ.

Also imported by tests/integration/test_redis_suite.py (parse_run, compare).
"""
import collections
import json
import os
import re
import sys

RESULT = re.compile(r"^\[(ok|err|ignore|skip|exception|TIMEOUT)\]: (.*)$")
OK_TIME = re.compile(r" \(\d+ ms\)$")
ERR_IN = re.compile(r" in tests/\S+\.tcl$")


class Run:
    """One runtest output: tests in order as (status, name), the failure
    messages by name, the exception that ended the file (or None)."""

    def __init__(self):
        self.tests = []
        self.messages = {}
        self.exception = None
        self.ignored = 0


def parse_run(text):
    run = Run()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = RESULT.match(line)
        if not m:
            continue
        status, rest = m.groups()
        if status == "ok":
            run.tests.append(("ok", OK_TIME.sub("", rest)))
        elif status == "err":
            name = ERR_IN.sub("", rest)
            run.tests.append(("err", name))
            run.messages[name] = lines[i + 1].strip() if i + 1 < len(lines) else ""
        elif status in ("ignore", "skip"):
            run.ignored += 1
        else:  # exception, TIMEOUT: the file ends here
            run.exception = rest.strip() or (lines[i + 1].strip() if i + 1 < len(lines) else "")
            break
    if run.exception is None and "The End" not in text:
        run.exception = "runtest ended before the file did (killed, or its timeout)"
    return run


def compare(direct, other):
    """(passed, failed, not_run, only_here): failed counts the test an
    exception ended; not_run the tests after it that ran directly;
    only_here the failures (name, message) the direct run did not have."""
    d_status = collections.defaultdict(list)
    for st, name in direct.tests:
        d_status[name].append(st)
    o_count = collections.Counter(name for _, name in other.tests)
    passed = sum(1 for st, _ in other.tests if st == "ok")
    failed = sum(1 for st, _ in other.tests if st == "err")
    only = [(name, other.messages.get(name, ""))
            for st, name in other.tests if st == "err" and "ok" in d_status.get(name, ["ok"])]
    missing = []
    for st, name in direct.tests:
        if o_count[name] > 0:
            o_count[name] -= 1
        else:
            missing.append((st, name))
    not_run = len(missing)
    if other.exception and not direct.exception:
        failed += 1
        if missing:
            not_run -= 1
            only.append((missing[0][1], "exception: " + other.exception))
        else:
            only.append(("(after the last test)", "exception: " + other.exception))
    elif other.exception and direct.exception and missing:
        # both ended early: only the extra tests that never ran are ours
        pass
    return passed, failed, not_run, only


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return None


METRIC = re.compile(r'^(\w+)(?:\{([^}]*)\})? ([0-9.eE+-]+)$')


def metrics(text):
    """{(name, label value of interest): sum} for the shadow's figures."""
    out = collections.Counter()
    for line in (text or "").splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if name == "tandem_shadow_operations_total":
            out[("outcome", lab.get("outcome", ""))] += value
        elif name == "tandem_shadow_noise_total":
            out[("noise", lab.get("reason", ""))] += value
        elif name == "tandem_shadow_mirror_dropped_total":
            out[("dropped", lab.get("reason", ""))] += value
        elif name == "tandem_shadow_diverged":
            out[("diverged", "")] += value
        elif name == "tandem_client_errors_total":
            out[("client_error", lab.get("reason", ""))] += value
    return out


def report(outdir, modes, files):
    modes, files = modes.split(), files.split()
    rows, only_rows, notes = [], [], []
    shadow_tot = collections.Counter()
    key_diffs, undrained = [], []
    runs = {}
    for m in modes:
        for f in files:
            base = os.path.join(outdir, m, f.replace("/", "__"))
            text = read(base + ".txt")
            runs[m, f] = parse_run(text) if text is not None and "[ready]" in text else None
            if m != "direct":
                shadow_tot_m = metrics(read(base + ".metrics"))
                for k, v in shadow_tot_m.items():
                    shadow_tot[m, k] += v
            if m == "shadow":
                keys = (read(base + ".keys") or "keys not compared").strip()
                if keys.startswith("Traceback"):  # the check itself failed: its last line says why
                    keys = "keys not compared: " + keys.splitlines()[-1]
                if not keys.startswith("equal"):
                    key_diffs.append((f, keys))
                if os.path.exists(base + ".undrained"):
                    undrained.append(f)
    bad = 0
    for m in modes:
        p = fl = nr = ign = 0
        for f in files:
            run, direct = runs[m, f], runs.get(("direct", f))
            if run is None:
                notes.append(f"{m} {f}: runtest did not run (see its output)")
                continue
            if direct is None or m == "direct":
                p += sum(1 for s, _ in run.tests if s == "ok")
                fl += sum(1 for s, _ in run.tests if s == "err") + (1 if run.exception else 0)
                ign += run.ignored
                if m == "direct":
                    for name, msg in ([(n, run.messages[n]) for s, n in run.tests if s == "err"]
                                      + ([("(exception)", run.exception)] if run.exception else [])):
                        notes.append(f"direct {f}: {name}: {msg[:150]}")
                continue
            a, b, c, only = compare(direct, run)
            p, fl, nr, ign = p + a, fl + b, nr + c, ign + run.ignored
            for name, msg in only:
                only_rows.append((m, f, name, msg))
        rows.append((m, p, fl, nr, ign))
        if m != "direct":
            bad += sum(1 for r in only_rows if r[0] == m)

    print()
    print("Redis's test suite (external-server mode), per mode")
    print(f"{'mode':<12} {'passed':>7} {'failed':>7} {'not run':>8} {'skipped':>8}")
    for m, p, fl, nr, ign in rows:
        print(f"{m:<12} {p:>7} {fl:>7} {nr:>8} {ign:>8}")
    print("(not run: ran directly, never reached because an exception ended the file;"
          " skipped: tags and external:skip)")
    if notes:
        print()
        print("Direct failures (the server's own) and runs that did not happen:")
        for n in notes:
            print("  " + n)
    print()
    if only_rows:
        print(f"Failing only through tandem ({len(only_rows)}):")
        for m, f, name, msg in only_rows:
            print(f"  {m:<11} {f}: {name}: {msg[:200]}")
    else:
        print("Failing only through tandem: none")
    for m in modes:
        if m == "direct":
            continue
        tot = {k: v for (mm, k), v in shadow_tot.items() if mm == m}
        if not tot:
            continue
        print()
        print(f"tandem's /metrics, {m} mode, summed over the files' runs:")
        for kind in ("outcome", "noise", "dropped", "client_error", "diverged"):
            items = sorted((lab, v) for (k, lab), v in tot.items() if k == kind and v)
            if items or kind in ("dropped", "diverged"):
                print(f"  {kind:<13} " + (", ".join(f"{lab or kind} {v:.0f}" for lab, v in items)
                                           or "0"))
    if "shadow" in modes:
        bad_cmds = collections.defaultdict(collections.Counter)
        for f in files:
            rep = read(os.path.join(outdir, "shadow", f.replace("/", "__")) + ".report.json")
            for st in (json.loads(rep).get("statements", []) if rep else []):
                for o in ("mismatch", "shadow_error", "dropped", "shadow_timeout"):
                    n = st.get("count", {}).get(o, 0)
                    if n:
                        bad_cmds[(o, st.get("statement", "?"))][f] += n
        if bad_cmds:
            print()
            print("Shadow outcomes other than match/noise, per command (files):")
            for (o, cmd), per in sorted(bad_cmds.items(), key=lambda kv: -sum(kv[1].values())):
                print(f"  {o:<14} {sum(per.values()):>5}  {cmd[:40]:<40} "
                      + ", ".join(f"{f} {n}" for f, n in per.most_common(4)))
        print()
        print(f"Shadow's data after each file: {len(files) - len(key_diffs)} of {len(files)} "
              "files end with the shadow equal to the primary (DEBUG DIGEST)")
        for f, k in key_diffs:
            print(f"  {f}: {k[:300]}")
        for f in undrained:
            print(f"  {f}: the mirrors did not drain in 30 s")
    return 1 if bad else 0


def keydiff(pport, sport):
    import redis
    p = redis.Redis(port=int(pport), socket_timeout=30)
    s = redis.Redis(port=int(sport), socket_timeout=30)
    dp, ds = p.execute_command("DEBUG", "DIGEST"), s.execute_command("DEBUG", "DIGEST")
    if dp == ds:
        print("equal", dp.decode())
        return 0
    diffs, nkeys = [], 0
    dbs = set()
    for c in (p, s):
        dbs |= {int(k[2:]) for k in c.info("keyspace")}
    for db in sorted(dbs):
        p.execute_command("SELECT", db)
        s.execute_command("SELECT", db)
        keys = set(p.scan_iter(count=1000)) | set(s.scan_iter(count=1000))
        nkeys += len(keys)
        for k in sorted(keys):
            a = p.execute_command("DEBUG", "DIGEST-VALUE", k)[0]
            b = s.execute_command("DEBUG", "DIGEST-VALUE", k)[0]
            if a != b:
                diffs.append(f"{db}:{k.decode(errors='replace')}"
                             f" ({p.type(k).decode()}/{s.type(k).decode()})")
    print(f"differ: {len(diffs)} of {nkeys} keys: " + " ".join(diffs[:10])
          + (" ..." if len(diffs) > 10 else "")
          + ("" if diffs else " (no key differs: functions or expiry)"))
    return 1


if __name__ == "__main__":
    if sys.argv[1] == "report":
        sys.exit(report(*sys.argv[2:5]))
    sys.exit(keydiff(*sys.argv[2:4]))
