#!/usr/bin/env bash
#
# bench/storm.sh - connection storm: tandem, PgBouncer and direct PostgreSQL.
#
# CONNS sequential sessions, each a new TCP connection, login (startup
# packet, a password), one `SELECT 1`, Terminate and close: pgbench -C -c 1
# -t CONNS with a one-line script, so nothing but the connection churn and
# one round trip is measured.  Targets, started once each on loopback in
# front of one throwaway PostgreSQL 15 (`trust` for its own logins):
#   direct       pgbench straight to PostgreSQL (a backend forked per session;
#                `trust`, so no password exchange at all: cheaper than the
#                proxies' logins)
#   pgbouncer    Debian's PgBouncer, session pool mode, auth_type
#                scram-sha-256 (or md5) with a userlist holding PostgreSQL's
#                verifier for the user: the client's password exchange is
#                PgBouncer's, and its server connection outlives the client, so
#                PostgreSQL forks no backend per session
#   tandem       tandem in passthrough with the same userlist as its
#                auth_file (tandem runs the client's SCRAM exchange) and
#                server_connections reuse (a server connection its client left
#                is reset with DISCARD ALL and handed to the next client)
#   tandem_base  with --baseline BIN: BIN with the same auth_file, without
#                server_connections reuse (a binary that lacks it: a backend
#                per session)
# They run in alternation (direct, pgbouncer, tandem[, tandem_base], direct,
# ...; tandem and its baseline swap places in even rounds) for ROUNDS rounds.
# Reported per target: median wall time of the CONNS sessions, sessions per
# second, pgbench's average connection time, the proxy's CPU (utime+stime
# from /proc/PID/stat around the run) per session in microseconds, and the
# ratios of the median times tandem/pgbouncer, tandem/direct (above 1:
# tandem is slower) and with a baseline tandem/base (time and CPU).
#
# The password exchange is SCRAM by default; --auth md5 makes it md5 for
# both proxies (PostgreSQL's md5 hash in the userlist): the client's side of
# SCRAM (PBKDF2, 4096 rounds per login in libpq) costs more than a pooled
# session's whole round trip, so md5 shows the pooling with less of it.
#
# Usage: bench/storm.sh [--quick] [--conns N] [--rounds R] [--workers W]
#                       [--auth scram|md5] [--baseline BIN]
# Environment (flags win): CONNS=8000 ROUNDS=3 WORKERS=2 AUTH=scram
#   TANDEM_BIN=build/tandem TANDEM_BASELINE_BIN= RESULTS_DIR=bench/results
# --quick: CONNS=1000 ROUNDS=1.
#
# Output: a table on stdout, the same rows as TSV in
# $RESULTS_DIR/storm-<date>.tsv, every single run in storm-<date>-runs.tsv.
# Everything started here is stopped on exit, also on Ctrl-C.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

CONNS=${CONNS:-8000}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
AUTH=${AUTH:-scram}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
    --quick) CONNS=1000 ROUNDS=1 ;;
    --conns) CONNS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --auth) AUTH=$2; shift ;;
    --baseline) TANDEM_BASELINE_BIN=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "storm.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PGBENCH_PID=
cleanup() {
    trap - EXIT INT TERM
    [ -n "$PGBENCH_PID" ] && kill -TERM "$PGBENCH_PID" 2>/dev/null
    bench_stop_procs
    pgctl_stop_all
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "interrupted; cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM

bench_ensure_deps pgbench psql /usr/sbin/pgbouncer /usr/lib/postgresql/15/bin/initdb
bench_ensure_tandem || { echo "storm.sh: no tandem binary" >&2; exit 1; }
bench_ensure_baseline || exit 1
BASE=$TANDEM_BASELINE_BIN

bench_begin storm

# --- servers ---------------------------------------------------------------

log "starting PostgreSQL"
pgctl_start storm
PG_PORT=$PGCTL_PORT

# Every client logs in with this password, checked by the proxy (SCRAM)
# against PostgreSQL's own verifier for it in the userlist, as in
# production: neither proxy stores the password, and neither derives a
# verifier per login (a plain password in the userlist would cost each a
# PBKDF2 of 4096 rounds per login, which is what the proxies would then
# be compared on).
STORM_PASSWORD=storm-Secret-5
export PGPASSWORD=$STORM_PASSWORD
case $AUTH in
scram) ENCRYPTION=scram-sha-256 ;;
md5) ENCRYPTION=md5 ;;
*) echo "storm.sh: --auth scram or md5, not '$AUTH'" >&2; exit 2 ;;
esac
VERIFIER=$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atq \
    -c "SET password_encryption = '$ENCRYPTION'" \
    -c "ALTER ROLE postgres PASSWORD '$STORM_PASSWORD'" \
    -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
printf '"postgres" "%s"\n' "$VERIFIER" >"$WORK/userlist.txt"

log "starting PgBouncer (session pool, pool_size 4, auth_type $ENCRYPTION)"
BOUNCER_USERLIST=$(cat "$WORK/userlist.txt") bouncer_start storm "$PG_PORT" 4 100 \
    auth_type=$ENCRYPTION
PGB_PID=$BOUNCER_PID PGB_PORT=$BOUNCER_PORT

# start_passthrough BIN SUFFIX REUSE: sets TD_PID$SUFFIX and TANDEM_PORT$SUFFIX.
start_passthrough() {
    local bin=$1 sfx=$2 reuse=$3 port conf
    port=$(free_port)
    conf=$WORK/tandem$sfx.conf
    cat >"$conf" <<EOF
workers $WORKERS;
log_level warn;
backend pg { address 127.0.0.1:$PG_PORT; }
listener storm {
    listen 127.0.0.1:$port;
    protocol postgres;
    primary pg;
    mode passthrough;
    auth_file $WORK/userlist.txt;
    $reuse
}
EOF
    log "starting tandem passthrough ($WORKERS workers, auth_file, ${reuse:-no reuse}, $bin)"
    tandem_start_bin "$bin" "$port" "$WORK/tandem$sfx.log" -c "$conf" || exit 1
    printf -v "TANDEM_PORT$sfx" %s "$port"
    printf -v "TD_PID$sfx" %s "$TANDEM_PID"
}
TD_PID_BASE='' TANDEM_PORT_BASE=''
start_passthrough "$TANDEM_BIN" "" "server_connections reuse;"
[ -n "$BASE" ] && start_passthrough "$BASE" _BASE ""

port_of() {
    case $1 in
    direct) echo "$PG_PORT" ;;
    pgbouncer) echo "$PGB_PORT" ;;
    tandem) echo "$TANDEM_PORT" ;;
    tandem_base) echo "$TANDEM_PORT_BASE" ;;
    esac
}
pid_of() {
    case $1 in
    direct) echo "" ;;
    pgbouncer) echo "$PGB_PID" ;;
    tandem) echo "$TD_PID" ;;
    tandem_base) echo "$TD_PID_BASE" ;;
    esac
}
round_targets() {
    if [ -z "$BASE" ]; then
        echo "direct pgbouncer tandem"
    elif (($1 % 2)); then
        echo "direct pgbouncer tandem tandem_base"
    else
        echo "direct pgbouncer tandem_base tandem"
    fi
}

# --- runs ------------------------------------------------------------------

echo 'SELECT 1;' >"$WORK/select1.sql"

# Wall time in microseconds, from bash's clock (no fork).
now_us() { echo "${EPOCHREALTIME/[.,]/}"; }

# run_one TARGET ROUND: one storm, one line in RUNS_TSV.
run_one() {
    local target=$1 round=$2 port pid t0 t1 w0 w1 out rc conn_ms done_n secs
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    out=$WORK/run-$target-$round.log
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        log "  $target is not running any more; run skipped"
        printf '%s\t%s\tfail\t0\t0\t0\n' "$target" "$round" >>"$RUNS_TSV"
        return 0
    fi
    t0=0
    [ -n "$pid" ] && t0=$(proc_cpu_ticks "$pid")
    w0=$(now_us)
    pgbench -n -C -c 1 -j 1 -t "$CONNS" -f "$WORK/select1.sql" \
        -h 127.0.0.1 -p "$port" -U postgres postgres >"$out" 2>&1 &
    PGBENCH_PID=$!
    rc=0
    wait "$PGBENCH_PID" || rc=$?
    PGBENCH_PID=
    w1=$(now_us)
    t1=0
    [ -n "$pid" ] && t1=$(proc_cpu_ticks "$pid")
    secs=$(awk -v a="$w0" -v b="$w1" 'BEGIN { printf "%.3f", (b - a) / 1e6 }')
    conn_ms=$(awk '/^average connection time = / { print $5; exit }' "$out")
    done_n=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$out")
    if [ "$rc" -ne 0 ] || [ "${done_n:-0}" != "$CONNS" ]; then
        log "  pgbench -C against $target failed (exit $rc, ${done_n:-0} of $CONNS sessions):"
        tail -n 5 "$out" | sed 's/^/    /' >&2
        printf '%s\t%s\tfail\t%s\t%s\t%s\n' "$target" "$round" "${done_n:-0}" "${conn_ms:-0}" $((t1 - t0)) >>"$RUNS_TSV"
        return 0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$secs" "$done_n" "$conn_ms" $((t1 - t0)) >>"$RUNS_TSV"
    log "  $target round $round: $CONNS sessions in ${secs}s (connect ${conn_ms} ms)"
}

printf 'target\tround\tseconds\tsessions\tconnect_ms\tcpu_ticks\n' >"$RUNS_TSV"
log "storm: $ROUNDS rounds of $CONNS sessions (connect, login, SELECT 1, close) each ($(round_targets 1))"
START=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
    for target in $(round_targets "$round"); do
        run_one "$target" "$round"
    done
    if [ "$round" = 1 ] && [ "$ROUNDS" -gt 1 ]; then
        log "round 1 took $((SECONDS - START))s; about $(((SECONDS - START) * (ROUNDS - 1)))s to go"
    fi
done

# --- report ----------------------------------------------------------------

/usr/bin/python3 - "$RUNS_TSV" "$SUMMARY_TSV" "$CLK_TCK" "$CONNS" <<'PY'
import csv, statistics, sys

runs_path, summary_path, clk_tck, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
runs, order = {}, []
with open(runs_path) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        if r["target"] not in runs:
            runs[r["target"]] = []
            order.append(r["target"])
        runs[r["target"]].append(r)

def med(v):
    return statistics.median(v) if v else None

def ratio(a, b):
    return a / b if a is not None and b else None

rows = {}
for t in order:
    ok = [r for r in runs[t] if r["seconds"] != "fail"]
    secs = med([float(r["seconds"]) for r in ok])
    rows[t] = {
        "target": t,
        "seconds": secs,
        "sessions_per_s": conns / secs if secs else None,
        "connect_ms": med([float(r["connect_ms"]) for r in ok]),
        "cpu_us_session": None if t == "direct" else
            med([int(r["cpu_ticks"]) * 1e6 / clk_tck / int(r["sessions"]) for r in ok]),
        "runs": len(ok),
        "failed": len(runs[t]) - len(ok),
    }

def get(t, k):
    return rows[t][k] if t in rows else None

for t in order:
    r = rows[t]
    r["vs_pgbouncer"] = ratio(r["seconds"], get("pgbouncer", "seconds"))
    r["vs_direct"] = ratio(r["seconds"], get("direct", "seconds"))
    r["vs_base"] = r["cpu_vs_base"] = None
    if t == "tandem":
        r["vs_base"] = ratio(r["seconds"], get("tandem_base", "seconds"))
        r["cpu_vs_base"] = ratio(r["cpu_us_session"], get("tandem_base", "cpu_us_session"))

cols = ["target", "seconds", "sessions_per_s", "connect_ms", "cpu_us_session",
        "vs_pgbouncer", "vs_direct", "vs_base", "cpu_vs_base", "runs", "failed"]
has_base = "tandem_base" in rows
show = [c for c in cols if has_base or c not in ("vs_base", "cpu_vs_base")]

def fmt(c, v):
    if v is None:
        return "-"
    if isinstance(v, (str, int)):
        return str(v)
    if c == "seconds":
        return "%.2f" % v
    if c == "sessions_per_s":
        return "%.0f" % v
    if c == "connect_ms" or c.startswith("vs_") or c.startswith("cpu_vs"):
        return "%.3f" % v
    return "%.1f" % v

with open(summary_path, "w") as f:
    f.write("\t".join(show) + "\n")
    for t in order:
        f.write("\t".join(fmt(c, rows[t][c]) for c in show) + "\n")

heads = {"target": "target", "seconds": "median s", "sessions_per_s": "sessions/s",
         "connect_ms": "connect ms", "cpu_us_session": "proxy us/session",
         "vs_pgbouncer": "time /pgb", "vs_direct": "time /dir", "vs_base": "time /base",
         "cpu_vs_base": "us/session /base", "runs": "n", "failed": "failed"}
names = {"tandem_base": "tandem(base)"}
table = [[heads[c] for c in show]] + [
    [names.get(t, t) if c == "target" else fmt(c, rows[t][c]) for c in show] for t in order]
widths = [max(len(row[i]) for row in table) for i in range(len(show))]
print()
print("connection storm: %d sequential sessions (connect, login, SELECT 1, close) per run;" % conns)
print("median wall time and its ratio to PgBouncer's, direct's and the baseline's (above 1: slower);")
print("pgbench's average connection time; proxy CPU (user+sys) per session and its ratio to the baseline's")
for i, row in enumerate(table):
    print("  ".join(s.ljust(w) if j == 0 else s.rjust(w) for j, (s, w) in enumerate(zip(row, widths))))
    if i == 0:
        print("  ".join("-" * w for w in widths))
def show_ratio(v):
    return "-" if v is None else "%.3f" % v
print()
line = "tandem/pgbouncer (time) %s, tandem/direct %s" % (
    show_ratio(get("tandem", "vs_pgbouncer")), show_ratio(get("tandem", "vs_direct")))
if has_base:
    line += ", tandem(base)/pgbouncer %s, tandem/base: time %s, CPU per session %s" % (
        show_ratio(get("tandem_base", "vs_pgbouncer")), show_ratio(get("tandem", "vs_base")),
        show_ratio(get("tandem", "cpu_vs_base")))
print(line)
PY

echo
echo "$CONNS sessions x $ROUNDS rounds, one client (pgbench -C -c 1), tandem workers $WORKERS, $(nproc) CPUs"
echo "tandem: $(bench_bin_id "$TANDEM_BIN")"
[ -n "$BASE" ] && echo "tandem(base): $(bench_bin_id "$BASE")"
echo "$(/usr/sbin/pgbouncer --version | head -n 1) (session pool, auth_type $ENCRYPTION: no backend fork per session); $(pgbench --version)"
echo "tandem: auth_file ($AUTH), server_connections reuse; tandem(base): auth_file, no reuse; direct: trust"
echo "results: $SUMMARY_TSV"
echo "runs:    $RUNS_TSV"
