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
# Before/after: --baseline BIN (or TANDEM_BASELINE_BIN=BIN) starts every
# tandem above a second time, alike, from BIN, and runs it as one more
# target right beside its twin (tandem_base, shadow_base, split_base; the
# twin goes first in odd rounds, the baseline in even ones).  The report
# then adds tandem(base), the ratio tandem/base of the median TPS and of the
# CPU per transaction (below 1: the change costs less CPU), and the same for
# shadow and split.
#
# Usage: bench/pg.sh [--quick] [--shadow] [--split] [--rounds R] [--time T]
#                    [--clients C] [--jobs J] [--workers N] [--scale S]
#                    [--baseline BIN]
# Environment (flags win): ROUNDS=3 DURATION=10 CLIENTS=16 JOBS=2 WORKERS=2
#   SCALE=10 WORKLOADS="select tpcb" MODES="simple extended prepared"
#   TANDEM_BIN=build/tandem TANDEM_BASELINE_BIN= RESULTS_DIR=bench/results
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
    --baseline) TANDEM_BASELINE_BIN=$2; shift ;;
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
bench_ensure_baseline || exit 1
BASE=$TANDEM_BASELINE_BIN
"$TANDEM_BIN" --version >/dev/null 2>&1 || echo "note: '$TANDEM_BIN --version' failed" >&2

bench_begin pg

# --- servers ---------------------------------------------------------------

log "starting PostgreSQL (scale $SCALE)"
pgctl_start blue
PG_PORT=$PGCTL_PORT
pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >"$WORK/init-blue.log" 2>&1 ||
    { cat "$WORK/init-blue.log" >&2; exit 1; }

log "starting PgBouncer (session pool, pool_size $((CLIENTS + 4)))"
bouncer_start bench "$PG_PORT" $((CLIENTS + 4)) $((CLIENTS * 2 + 100))
PGB_PID=$BOUNCER_PID PGB_PORT=$BOUNCER_PORT

# Every tandem configuration is started by one function for both binaries:
# start_passthrough BIN SUFFIX sets TD_PID$SUFFIX / TANDEM_PORT$SUFFIX, and
# likewise start_split and start_shadow (SUFFIX "" or "_BASE").
start_passthrough() {
    local bin=$1 sfx=$2 port
    port=$(free_port)
    tandem_start_bin "$bin" "$port" "$WORK/tandem$sfx.log" postgres \
        --listen "127.0.0.1:$port" --primary "127.0.0.1:$PG_PORT" --workers "$WORKERS" || exit 1
    printf -v "TANDEM_PORT$sfx" %s "$port"
    printf -v "TD_PID$sfx" %s "$TANDEM_PID"
}
start_split() {
    local bin=$1 sfx=$2 port
    port=$(free_port)
    tandem_start_bin "$bin" "$port" "$WORK/tandem-split$sfx.log" postgres \
        --listen "127.0.0.1:$port" --primary "blue=127.0.0.1:$PG_PORT" \
        --shadow "green=127.0.0.1:$PG2_PORT" --mode split --read-weights blue=50,green=50 \
        --mirror-reads 0% --workers "$WORKERS" || exit 1
    printf -v "SPLIT_PORT$sfx" %s "$port"
    printf -v "SPLIT_PID$sfx" %s "$TANDEM_PID"
}
start_shadow() {
    local bin=$1 sfx=$2 port
    port=$(free_port)
    if tandem_start_bin "$bin" "$port" "$WORK/tandem-shadow$sfx.log" postgres \
        --listen "127.0.0.1:$port" --primary "127.0.0.1:$PG_PORT" \
        --shadow "127.0.0.1:$PG2_PORT" --mode shadow --workers "$WORKERS" 2>"$WORK/shadow-start$sfx.err"; then
        printf -v "SHADOW_PORT$sfx" %s "$port"
        printf -v "SHADOW_PID$sfx" %s "$TANDEM_PID"
    else
        log "shadow mode skipped for $bin: it does not run --mode shadow:"
        sed 's/^/    /' "$WORK/shadow-start$sfx.err" >&2
    fi
}

log "starting tandem passthrough ($WORKERS workers)"
TD_PID_BASE='' TANDEM_PORT_BASE=''
start_passthrough "$TANDEM_BIN" ""
if [ -n "$BASE" ]; then
    log "starting the baseline tandem passthrough ($BASE)"
    start_passthrough "$BASE" _BASE
fi

SHADOW_PID= SHADOW_PORT= SPLIT_PID= SPLIT_PORT=
SHADOW_PID_BASE='' SHADOW_PORT_BASE='' SPLIT_PID_BASE='' SPLIT_PORT_BASE=''
if [ "$SHADOW" = 1 ] || [ "$SPLIT" = 1 ]; then
    log "starting a second PostgreSQL for shadow / split mode"
    pgctl_start green
    PG2_PORT=$PGCTL_PORT
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG2_PORT" -U postgres postgres >"$WORK/init-green.log" 2>&1 ||
        { cat "$WORK/init-green.log" >&2; exit 1; }
fi
if [ "$SPLIT" = 1 ]; then
    start_split "$TANDEM_BIN" ""
    [ -n "$BASE" ] && start_split "$BASE" _BASE
fi
if [ "$SHADOW" = 1 ]; then
    start_shadow "$TANDEM_BIN" ""
    [ -n "$BASE" ] && start_shadow "$BASE" _BASE
fi

port_of() {
    case $1 in
    direct) echo "$PG_PORT" ;;
    pgbouncer) echo "$PGB_PORT" ;;
    tandem) echo "$TANDEM_PORT" ;;
    shadow) echo "$SHADOW_PORT" ;;
    split) echo "$SPLIT_PORT" ;;
    tandem_base) echo "$TANDEM_PORT_BASE" ;;
    shadow_base) echo "$SHADOW_PORT_BASE" ;;
    split_base) echo "$SPLIT_PORT_BASE" ;;
    esac
}
pid_of() {
    case $1 in
    direct) echo "" ;;
    pgbouncer) echo "$PGB_PID" ;;
    tandem) echo "$TD_PID" ;;
    shadow) echo "$SHADOW_PID" ;;
    split) echo "$SPLIT_PID" ;;
    tandem_base) echo "$TD_PID_BASE" ;;
    shadow_base) echo "$SHADOW_PID_BASE" ;;
    split_base) echo "$SPLIT_PID_BASE" ;;
    esac
}

# round_targets ROUND TARGET...: the targets of one round, each tandem
# followed (odd rounds) or preceded (even rounds) by its baseline twin when
# that one runs.
round_targets() {
    local round=$1 t out=()
    shift
    for t in "$@"; do
        case $t in
        tandem | shadow | split)
            if [ -n "$(pid_of "${t}_base")" ]; then
                if ((round % 2)); then out+=("$t" "${t}_base"); else out+=("${t}_base" "$t"); fi
                continue
            fi
            ;;
        esac
        out+=("$t")
    done
    echo "${out[*]}"
}

# With a baseline, which writes reached the shadow server is counted per
# binary: after each shadow run, up to 5 s for the server's pgbench_history
# to catch up, the growth goes to that run's target.
declare -A MIRRORED=([shadow]=0 [shadow_base]=0)
GREEN_ROWS=0
green_rows() {
    psql -h 127.0.0.1 -p "$PG2_PORT" -U postgres -XAtc 'select count(*) from pgbench_history' postgres 2>/dev/null || echo 0
}
count_mirrored() {
    local target=$1 txns=$2 now i
    for ((i = 0; i < 50; i++)); do
        now=$(green_rows)
        [ "$now" -ge $((GREEN_ROWS + txns)) ] && break
        sleep 0.1
    done
    MIRRORED[$target]=$((MIRRORED[$target] + now - GREEN_ROWS))
    GREEN_ROWS=$now
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
    if [ -n "$BASE" ] && [ -n "$SHADOW_PID_BASE" ] && [[ $target == shadow* ]]; then
        count_mirrored "$target" "${txns:-0}"
    fi
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
        # shellcheck disable=SC2086
        log "$workload -M $mode: $ROUNDS rounds of ${DURATION}s, -c $CLIENTS -j $JOBS ($(round_targets 1 $targets))"
        for ((round = 1; round <= ROUNDS; round++)); do
            # shellcheck disable=SC2086
            for target in $(round_targets "$round" $targets); do
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
    shadow_tx=$(awk -F'\t' '$3 == "shadow" || $3 == "shadow_base" { n += $6 } END { print n + 0 }' "$RUNS_TSV")
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
    if [ -n "$SHADOW_PID_BASE" ]; then
        for t in shadow shadow_base; do
            t_tx=$(awk -F'\t' -v t="$t" '$3 == t { n += $6 } END { print n + 0 }' "$RUNS_TSV")
            SHADOW_NOTE="$SHADOW_NOTE
  $t: $t_tx transactions, ${MIRRORED[$t]} rows reached the shadow server within 5 s of the run's end"
            [ "${MIRRORED[$t]}" -lt "$t_tx" ] && SHADOW_NOTE="$SHADOW_NOTE ($((t_tx - MIRRORED[$t])) missing)"
        done
    fi
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

TANDEMS = ("tandem", "shadow", "split")
# the columns up to "rounds" are those of the runs without a baseline; the
# baseline's are appended after them, so the file keeps its layout
cols = ["workload", "mode", "direct_tps", "pgbouncer_tps", "tandem_tps",
        "shadow_tps", "split_tps", "tandem/direct", "tandem/pgbouncer", "pgbouncer/direct",
        "shadow/tandem", "split/tandem", "pgbouncer_cpu_us_tx", "tandem_cpu_us_tx",
        "shadow_cpu_us_tx", "split_cpu_us_tx", "rounds"]
base_cols = ([f"{n}_base_tps" for n in TANDEMS] + [f"{n}/base" for n in TANDEMS]
             + [f"{n}_base_cpu_us_tx" for n in TANDEMS] + [f"{n}/base_cpu" for n in TANDEMS])
rows = []
for key in order:
    t = runs[key]
    names = ("direct", "pgbouncer") + TANDEMS + tuple(f"{n}_base" for n in TANDEMS)
    tps = {n: median_tps(t.get(n, [])) for n in names}
    cpu = {n: median_cpu(t.get(n, [])) for n in names if n != "direct"}
    row = {
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
    }
    for n in TANDEMS:
        row[f"{n}_base_tps"] = tps[f"{n}_base"]
        row[f"{n}/base"] = ratio(tps[n], tps[f"{n}_base"])
        row[f"{n}_base_cpu_us_tx"] = cpu[f"{n}_base"]
        row[f"{n}/base_cpu"] = ratio(cpu[n], cpu[f"{n}_base"])
    rows.append(row)

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

has_base = any(r[f"{n}_base_tps"] is not None for r in rows for n in TANDEMS)
with open(summary_path, "w") as f:
    out_cols = cols + (base_cols if has_base else [])
    f.write("\t".join(out_cols) + "\n")
    for r in rows:
        f.write("\t".join(fmt(c, r[c]) for c in out_cols) + "\n")

def print_table(show, heads, rows):
    table = [[heads[c] for c in show]] + [[fmt(c, r[c]) for c in show] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(show))]
    for i, row in enumerate(table):
        print("  ".join(s.ljust(w) if j < 2 else s.rjust(w) for j, (s, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))

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
print()
print("median TPS; ratios of medians; proxy CPU (user+sys) per transaction in microseconds")
print_table(show, heads, rows)

if has_base:
    # one row per workload, protocol and tandem configuration
    ba = []
    for r in rows:
        for n in TANDEMS:
            if r[f"{n}_base_tps"] is None and r[f"{n}_tps"] is None:
                continue
            ba.append({"workload": r["workload"], "mode": r["mode"],
                       "config": {"tandem": "passthrough"}.get(n, n),
                       "tandem_tps": r[f"{n}_tps"], "base_tps": r[f"{n}_base_tps"],
                       "tandem/base": r[f"{n}/base"],
                       "tandem_cpu": r[f"{n}_cpu_us_tx"], "base_cpu": r[f"{n}_base_cpu_us_tx"],
                       "tandem/base_cpu": r[f"{n}/base_cpu"]})
    bcols = ["workload", "mode", "config", "tandem_tps", "base_tps", "tandem/base",
             "tandem_cpu", "base_cpu", "tandem/base_cpu"]
    bheads = {"workload": "workload", "mode": "mode", "config": "config",
              "tandem_tps": "tandem", "base_tps": "tandem(base)", "tandem/base": "tandem/base",
              "tandem_cpu": "us/tx", "base_cpu": "us/tx(base)",
              "tandem/base_cpu": "us/tx tandem/base"}
    print()
    print("before/after: TANDEM_BIN (tandem) against TANDEM_BASELINE_BIN (tandem(base)), same runs;")
    print("median TPS and its ratio (above 1: faster), CPU per transaction and its ratio (below 1: cheaper)")
    # print_table left-aligns the first two columns; the config is text too
    table = [[bheads[c] for c in bcols]] + [[fmt(c, r[c]) for c in bcols] for r in ba]
    widths = [max(len(row[i]) for row in table) for i in range(len(bcols))]
    for i, row in enumerate(table):
        print("  ".join(s.ljust(w) if j < 3 else s.rjust(w) for j, (s, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    def gm(v):
        v = [x for x in v if x]
        if not v:
            return "-"
        prod = 1.0
        for x in v:
            prod *= x
        return "%.3f" % prod ** (1 / len(v))
    for cfg in dict.fromkeys(r["config"] for r in ba):
        sel = [r for r in ba if r["config"] == cfg]
        print(f"{cfg}: geometric mean over its {len(sel)} row(s): TPS tandem/base "
              f"{gm(r['tandem/base'] for r in sel)}, CPU per transaction tandem/base "
              f"{gm(r['tandem/base_cpu'] for r in sel)}")
PY

echo
echo "clients $CLIENTS, threads $JOBS, ${DURATION}s x $ROUNDS rounds, scale $SCALE, tandem workers $WORKERS, $(nproc) CPUs"
echo "tandem: $(bench_bin_id "$TANDEM_BIN")"
[ -n "$BASE" ] && echo "tandem(base): $(bench_bin_id "$BASE")"
echo "$(/usr/sbin/pgbouncer --version | head -n 1); $(pgbench --version)"
[ -n "$SHADOW_NOTE" ] && echo "$SHADOW_NOTE"
echo "results: $SUMMARY_TSV"
echo "runs:    $RUNS_TSV"
