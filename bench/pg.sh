#!/usr/bin/env bash
#
# bench/pg.sh - tandem side by side with direct PostgreSQL and PgBouncer.
#
# One throwaway PostgreSQL 15 (scripts/lib/pgctl.sh) and, in front of it,
# started once each and all on loopback:
#   direct     pgbench straight to PostgreSQL
#   pgbouncer  Debian's PgBouncer, session pool mode, pool_size >= clients
#   tandem     tandem postgres --listen ... --primary ... (passthrough)
#   shadow     with --shadow: tandem --mode shadow, mirroring to a second
#              PostgreSQL initialised alike (tpcb-like only; skipped if this
#              tandem rejects --mode shadow)
#   split      with --split: tandem --mode split, reads weighted 50/50
#              between the two servers (select-only; no comparison mirror)
#
# For each workload (pgbench -S select-only, -b tpcb-like) and each protocol
# (-M simple, extended, prepared) the targets run in alternation: direct,
# pgbouncer, tandem[, shadow], direct, ... for ROUNDS rounds of DURATION
# seconds each, so drift of the machine spreads over all of them.  Reported:
# median TPS per target, the ratios tandem/direct, tandem/pgbouncer,
# pgbouncer/direct (and shadow/tandem), and each proxy's CPU time per
# transaction: utime+stime from /proc/PID/stat before and after each run,
# divided by the run's transactions, in microseconds (median over rounds).
#
# Usage: bench/pg.sh [--quick] [--shadow] [--split] [--rounds R] [--time T]
#                    [--clients C] [--jobs J] [--workers N] [--scale S]
# Environment (flags win): ROUNDS=3 DURATION=10 CLIENTS=16 JOBS=2 WORKERS=2
#   SCALE=10 WORKLOADS="select tpcb" MODES="simple extended prepared"
#   TANDEM_BIN=build/tandem RESULTS_DIR=bench/results
# --quick: ROUNDS=1 DURATION=3 SCALE=1, about a minute.
#
# Output: a table on stdout, the same rows as TSV in
# $RESULTS_DIR/pg-<date>.tsv, and every single run in pg-<date>-runs.tsv.
# Everything started here is stopped on exit, also on Ctrl-C.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-16}
JOBS=${JOBS:-2}
WORKERS=${WORKERS:-2}
SCALE=${SCALE:-10}
WORKLOADS=${WORKLOADS:-select tpcb}
MODES=${MODES:-simple extended prepared}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
SHADOW=0
SPLIT=0

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
    --quick) ROUNDS=1 DURATION=3 SCALE=1 ;;
    --shadow) SHADOW=1 ;;
    --split) SPLIT=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --time) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --scale) SCALE=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "pg.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
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
bench_ensure_tandem || { echo "pg.sh: no tandem binary" >&2; exit 1; }
"$TANDEM_BIN" --version >/dev/null 2>&1 || echo "note: '$TANDEM_BIN --version' failed" >&2

if pgrep -x pgbench >/dev/null; then
    echo "pg.sh: another pgbench is running; results would be skewed" >&2
    pgrep -a pgbench >&2
    [ "${BENCH_FORCE:-0}" = 1 ] || exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench.XXXXXX")
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
RUNS_TSV=$RESULTS_DIR/pg-$STAMP-runs.tsv
SUMMARY_TSV=$RESULTS_DIR/pg-$STAMP.tsv

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- servers ---------------------------------------------------------------

log "starting PostgreSQL (scale $SCALE)"
pgctl_start blue
PG_PORT=$PGCTL_PORT
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >"$WORK/init-blue.log" 2>&1 ||
    { cat "$WORK/init-blue.log" >&2; exit 1; }

log "starting PgBouncer (session pool, pool_size $((CLIENTS + 4)))"
bouncer_start bench "$PG_PORT" $((CLIENTS + 4)) $((CLIENTS * 2 + 100))
PGB_PID=$BOUNCER_PID PGB_PORT=$BOUNCER_PORT

TANDEM_PORT=$(free_port)
log "starting tandem passthrough ($WORKERS workers)"
tandem_start "$TANDEM_PORT" "$WORK/tandem.log" postgres \
    --listen "127.0.0.1:$TANDEM_PORT" --primary "127.0.0.1:$PG_PORT" --workers "$WORKERS"
TD_PID=$TANDEM_PID

SHADOW_PID= SHADOW_PORT= SPLIT_PID= SPLIT_PORT=
if [ "$SHADOW" = 1 ] || [ "$SPLIT" = 1 ]; then
    log "starting a second PostgreSQL for shadow / split mode"
    pgctl_start green
    PG2_PORT=$PGCTL_PORT
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG2_PORT" -U postgres postgres >"$WORK/init-green.log" 2>&1 ||
        { cat "$WORK/init-green.log" >&2; exit 1; }
fi
if [ "$SPLIT" = 1 ]; then
    SPLIT_PORT=$(free_port)
    tandem_start "$SPLIT_PORT" "$WORK/tandem-split.log" postgres \
        --listen "127.0.0.1:$SPLIT_PORT" --primary "blue=127.0.0.1:$PG_PORT" \
        --shadow "green=127.0.0.1:$PG2_PORT" --mode split --read-weights blue=50,green=50 \
        --mirror-reads 0% --workers "$WORKERS"
    SPLIT_PID=$TANDEM_PID
fi
if [ "$SHADOW" = 1 ]; then
    SHADOW_PORT=$(free_port)
    if tandem_start "$SHADOW_PORT" "$WORK/tandem-shadow.log" postgres \
        --listen "127.0.0.1:$SHADOW_PORT" --primary "127.0.0.1:$PG_PORT" \
        --shadow "127.0.0.1:$PG2_PORT" --mode shadow --workers "$WORKERS" 2>"$WORK/shadow-start.err"; then
        SHADOW_PID=$TANDEM_PID
    else
        log "shadow mode skipped: this tandem does not run --mode shadow:"
        sed 's/^/    /' "$WORK/shadow-start.err" >&2
    fi
fi

port_of() {
    case $1 in
    direct) echo "$PG_PORT" ;;
    pgbouncer) echo "$PGB_PORT" ;;
    tandem) echo "$TANDEM_PORT" ;;
    shadow) echo "$SHADOW_PORT" ;;
    split) echo "$SPLIT_PORT" ;;
    esac
}
pid_of() {
    case $1 in
    direct) echo "" ;;
    pgbouncer) echo "$PGB_PID" ;;
    tandem) echo "$TD_PID" ;;
    shadow) echo "$SHADOW_PID" ;;
    split) echo "$SPLIT_PID" ;;
    esac
}

# --- runs ------------------------------------------------------------------

# run_one WORKLOAD MODE TARGET ROUND: one pgbench run, one line in RUNS_TSV.
run_one() {
    local workload=$1 mode=$2 target=$3 round=$4 port pid wl t0 t1 out rc tps txns
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    case $workload in
    select) wl=(-S) ;;
    tpcb) wl=(-b tpcb-like) ;;
    esac
    out=$WORK/run-$workload-$mode-$target-$round.log
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        log "  $target is not running any more; run skipped"
        printf '%s\t%s\t%s\t%s\tfail\t0\t0\n' "$workload" "$mode" "$target" "$round" >>"$RUNS_TSV"
        return 0
    fi
    t0=0
    [ -n "$pid" ] && t0=$(proc_cpu_ticks "$pid")
    pgbench -n -h 127.0.0.1 -p "$port" -U postgres -M "$mode" "${wl[@]}" \
        -T "$DURATION" -c "$CLIENTS" -j "$JOBS" postgres >"$out" 2>&1 &
    PGBENCH_PID=$!
    rc=0
    wait "$PGBENCH_PID" || rc=$?
    PGBENCH_PID=
    t1=0
    [ -n "$pid" ] && t1=$(proc_cpu_ticks "$pid")
    tps=$(awk '/^tps = / { print $3; exit }' "$out")
    txns=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1]; exit }' "$out")
    if [ "$rc" -ne 0 ] || [ -z "$tps" ]; then
        log "  pgbench against $target failed (exit $rc):"
        tail -n 5 "$out" | sed 's/^/    /' >&2
        tps=fail txns=0
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$workload" "$mode" "$target" "$round" \
        "$tps" "${txns:-0}" $((t1 - t0)) >>"$RUNS_TSV"
    log "  $workload $mode $target round $round: tps $tps"
}

printf 'workload\tmode\ttarget\tround\ttps\ttransactions\tcpu_ticks\n' >"$RUNS_TSV"
for workload in $WORKLOADS; do
    targets="direct pgbouncer tandem"
    if [ "$workload" = tpcb ] && [ -n "$SHADOW_PID" ]; then
        targets="$targets shadow"
    fi
    if [ "$workload" = select ] && [ -n "$SPLIT_PID" ]; then
        targets="$targets split"
    fi
    for mode in $MODES; do
        log "$workload -M $mode: $ROUNDS rounds of ${DURATION}s, -c $CLIENTS -j $JOBS ($targets)"
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in $targets; do
                run_one "$workload" "$mode" "$target" "$round"
            done
        done
    done
done

# Did the shadow get every write?  tpcb-like appends one pgbench_history row
# per transaction, and only the shadow runs write to the second server, so
# after the last run (mirrors are asynchronous: give them a few seconds) it
# should hold as many rows as the shadow runs committed transactions.
SHADOW_NOTE=
if [ -n "$SHADOW_PID" ]; then
    shadow_tx=$(awk -F'\t' '$3 == "shadow" { n += $6 } END { print n + 0 }' "$RUNS_TSV")
    for _ in $(seq 10); do
        green_rows=$(psql -h 127.0.0.1 -p "$PG2_PORT" -U postgres -XAtc 'select count(*) from pgbench_history' postgres 2>/dev/null || echo 0)
        [ "$green_rows" -ge "$shadow_tx" ] && break
        sleep 0.5
    done
    SHADOW_NOTE="shadow mode: $shadow_tx transactions committed through it; the shadow server holds $green_rows of their pgbench_history rows"
    if [ "$green_rows" -lt "$shadow_tx" ]; then
        SHADOW_NOTE="$SHADOW_NOTE ($((shadow_tx - green_rows)) writes never reached the shadow)"
    fi
    [ "$green_rows" = 0 ] && SHADOW_NOTE="$SHADOW_NOTE -- NOTHING WAS MIRRORED: the shadow column measures a passthrough"
fi

# --- report ----------------------------------------------------------------

/usr/bin/python3 - "$RUNS_TSV" "$SUMMARY_TSV" "$CLK_TCK" <<'PY'
import csv, statistics, sys

runs_path, summary_path, clk_tck = sys.argv[1], sys.argv[2], int(sys.argv[3])
runs = {}
order = []
with open(runs_path) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        key = (r["workload"], r["mode"])
        if key not in runs:
            runs[key] = {}
            order.append(key)
        runs[key].setdefault(r["target"], []).append(r)

def median_tps(rs):
    v = [float(r["tps"]) for r in rs if r["tps"] != "fail"]
    return statistics.median(v) if v else None

def median_cpu(rs):
    v = [int(r["cpu_ticks"]) * 1e6 / clk_tck / int(r["transactions"])
         for r in rs if r["tps"] != "fail" and int(r["transactions"]) > 0]
    return statistics.median(v) if v else None

def ratio(a, b):
    return a / b if a is not None and b else None

cols = ["workload", "mode", "direct_tps", "pgbouncer_tps", "tandem_tps",
        "shadow_tps", "split_tps", "tandem/direct", "tandem/pgbouncer", "pgbouncer/direct",
        "shadow/tandem", "split/tandem", "pgbouncer_cpu_us_tx", "tandem_cpu_us_tx",
        "shadow_cpu_us_tx", "split_cpu_us_tx", "rounds"]
rows = []
for key in order:
    t = runs[key]
    tps = {n: median_tps(t.get(n, [])) for n in ("direct", "pgbouncer", "tandem", "shadow", "split")}
    cpu = {n: median_cpu(t.get(n, [])) for n in ("pgbouncer", "tandem", "shadow", "split")}
    rows.append({
        "workload": key[0], "mode": key[1],
        "direct_tps": tps["direct"], "pgbouncer_tps": tps["pgbouncer"],
        "tandem_tps": tps["tandem"], "shadow_tps": tps["shadow"], "split_tps": tps["split"],
        "tandem/direct": ratio(tps["tandem"], tps["direct"]),
        "tandem/pgbouncer": ratio(tps["tandem"], tps["pgbouncer"]),
        "pgbouncer/direct": ratio(tps["pgbouncer"], tps["direct"]),
        "shadow/tandem": ratio(tps["shadow"], tps["tandem"]),
        "split/tandem": ratio(tps["split"], tps["tandem"]),
        "pgbouncer_cpu_us_tx": cpu["pgbouncer"], "tandem_cpu_us_tx": cpu["tandem"],
        "shadow_cpu_us_tx": cpu["shadow"], "split_cpu_us_tx": cpu["split"],
        "rounds": max(len(v) for v in t.values()),
    })

def fmt(c, v):
    if v is None:
        return "-"
    if isinstance(v, str) or isinstance(v, int):
        return str(v)
    if c.endswith("_tps"):
        return "%.0f" % v
    if "/" in c:
        return "%.3f" % v
    return "%.1f" % v

with open(summary_path, "w") as f:
    f.write("\t".join(cols) + "\n")
    for r in rows:
        f.write("\t".join(fmt(c, r[c]) for c in cols) + "\n")

has_shadow = any(r["shadow_tps"] is not None for r in rows)
has_split = any(r["split_tps"] is not None for r in rows)
show = [c for c in cols if (has_shadow or not c.startswith("shadow"))
        and (has_split or not c.startswith("split"))]
heads = {"workload": "workload", "mode": "mode", "direct_tps": "direct",
         "pgbouncer_tps": "pgbouncer", "tandem_tps": "tandem", "shadow_tps": "shadow",
         "tandem/direct": "tdm/dir", "tandem/pgbouncer": "tdm/pgb",
         "pgbouncer/direct": "pgb/dir", "shadow/tandem": "shd/tdm",
         "pgbouncer_cpu_us_tx": "pgb us/tx", "tandem_cpu_us_tx": "tdm us/tx",
         "shadow_cpu_us_tx": "shd us/tx", "split_tps": "split", "split/tandem": "spl/tdm",
         "split_cpu_us_tx": "spl us/tx", "rounds": "n"}
table = [[heads[c] for c in show]] + [[fmt(c, r[c]) for c in show] for r in rows]
widths = [max(len(row[i]) for row in table) for i in range(len(show))]
print()
print("median TPS; ratios of medians; proxy CPU (user+sys) per transaction in microseconds")
for i, row in enumerate(table):
    print("  ".join(s.ljust(w) if j < 2 else s.rjust(w) for j, (s, w) in enumerate(zip(row, widths))))
    if i == 0:
        print("  ".join("-" * w for w in widths))
PY

echo
echo "clients $CLIENTS, threads $JOBS, ${DURATION}s x $ROUNDS rounds, scale $SCALE, tandem workers $WORKERS, $(nproc) CPUs"
echo "tandem: $("$TANDEM_BIN" --version 2>&1 | head -n 1); $(/usr/sbin/pgbouncer --version | head -n 1); $(pgbench --version)"
[ -n "$SHADOW_NOTE" ] && echo "$SHADOW_NOTE"
echo "results: $SUMMARY_TSV"
echo "runs:    $RUNS_TSV"
