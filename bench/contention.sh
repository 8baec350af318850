#!/usr/bin/env bash
#
# bench/contention.sh - in-transaction reads under contention, measured.
#
# pgbench -b tpcb-like at scale 1 (one branch row: every transaction
# contends on it) runs through tandem in shadow mode with
# `mirror { reads 100%; }` against two identical servers, RUNS times.
# For each run: client TPS, tandem's CPU per transaction, the outcome
# counts (match / transient / mismatch / noise / shadow_error / dropped),
# the re-checks' results, the shadow's largest lag, and whether the tables
# are equal after the drain.  A fresh pair of servers per run, so one run
# cannot leave the next its backlog.  (A stricter send order, where a unit
# waits for the shadow to acknowledge every commit before it, was built and
# measured with this script: it removed no transient and cost 0.72x the
# TPS; README "Order" has the figures.)
#
# Usage: bench/contention.sh [--time T] [--clients C] [--runs N]
# Environment (flags win): DURATION=20 CLIENTS=16 JOBS=2 WORKERS=1 RUNS=2
#   TIMEOUT=10s (mirror timeout) TANDEM_BIN=build/tandem
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

DURATION=${DURATION:-20} CLIENTS=${CLIENTS:-16} JOBS=${JOBS:-2} WORKERS=${WORKERS:-1}
RUNS=${RUNS:-2} TIMEOUT=${TIMEOUT:-10s}
while [ $# -gt 0 ]; do
    case "$1" in
    --time) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: $0 [--time T] [--clients C] [--runs N]" >&2; exit 2 ;;
    esac
done

cleanup() {
    bench_stop_procs
    pgctl_stop_all
}
trap cleanup EXIT INT TERM

bench_ensure_deps pgbench initdb curl
bench_ensure_tandem
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
PSQL=/usr/lib/postgresql/15/bin/psql

metric() { # name label-substring -> sum over matching series
    curl -s "127.0.0.1:$APORT/metrics" | awk -v n="$1" -v l="$2" \
        'index($0, n "{") == 1 && index($0, l) { s += $NF } END { print s + 0 }'
}
outcome() { metric tandem_shadow_operations_total "outcome=\"$1\""; }

# The tables' contents, as one digest per server (the drain is over when they agree).
tables_digest() {
    "$PSQL" -XAtq -h 127.0.0.1 -p "$1" -U postgres postgres -c "
        SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
          SELECT 'a' || aid || ':' || abalance AS x FROM pgbench_accounts
          UNION ALL SELECT 't' || tid || ':' || tbalance FROM pgbench_tellers
          UNION ALL SELECT 'b' || bid || ':' || bbalance FROM pgbench_branches
          UNION ALL SELECT 'h' || count(*) FROM pgbench_history) s"
}

run_once() { # run number -> one result line
    local run=$1 blue green conf log before after out tx tps ticks equal i lagmax sampler
    pgctl_start "blue-$run" >/dev/null; blue=$PGCTL_PORT
    pgctl_start "green-$run" >/dev/null; green=$PGCTL_PORT
    for port in $blue $green; do
        "$PGBENCH" -i -q -s 1 -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
    done
    TPORT=$(free_port) APORT=$(free_port)
    conf=$(mktemp /tmp/tandem-contention.XXXXXX.conf)
    cat >"$conf" <<EOF
workers $WORKERS;
admin { listen 127.0.0.1:$APORT; }
backend blue { address 127.0.0.1:$blue; }
backend green { address 127.0.0.1:$green; }
listener pg {
    listen 127.0.0.1:$TPORT; primary blue; shadow green; mode shadow;
    mirror { reads 100%; timeout $TIMEOUT; }
}
EOF
    log=$(mktemp /tmp/tandem-contention.XXXXXX.log)
    tandem_start "$TPORT" "$log" -c "$conf"
    before=$(proc_cpu_ticks "$TANDEM_PID")
    lagmax=$(mktemp /tmp/tandem-contention.XXXXXX.lag)
    ( # the shadow's lag, sampled each second while pgbench runs: its maximum
        m=0
        for ((i = 0; i < DURATION + 5; i++)); do
            l=$(metric tandem_shadow_lag_seconds 'listener="pg"')
            m=$(awk -v a="$m" -v b="$l" 'BEGIN { print (b > a) ? b : a }')
            echo "$m" >"$lagmax"
            sleep 1
        done
    ) &
    sampler=$!
    out=$("$PGBENCH" -n -b tpcb-like -c "$CLIENTS" -j "$JOBS" -T "$DURATION" \
        -h 127.0.0.1 -p "$TPORT" -U postgres postgres 2>&1)
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    tx=$(echo "$out" | awk '/actually processed/ { print $NF }')
    tps=$(echo "$out" | awk '/^tps/ { print $3 }')
    equal=no
    for ((i = 0; i < 120; i++)); do # the drain: the shadow's sessions finish what they owe
        if [ "$(tables_digest "$blue")" = "$(tables_digest "$green")" ]; then
            equal=yes
            break
        fi
        sleep 1
    done
    sleep 2 # the last re-checks (up to 2 s apart) end
    after=$(proc_cpu_ticks "$TANDEM_PID")
    ticks=$((after - before))
    printf '%-7s %8.0f %10s %8s %9s %8s %6s %7s %7s %6s\n' "$run" "$tps" \
        "$(awk -v t="$ticks" -v x="$tx" -v h="$CLK_TCK" 'BEGIN { printf "%.1f", t / h / x * 1e6 }')" \
        "$(outcome match)" "$(outcome transient)" "$(outcome mismatch)" "$(outcome noise)" \
        "$(outcome shadow_error)" "$(outcome dropped)" "$equal"
    printf '        re-checks: confirmed %s, transient %s, busy %s, failed %s; max shadow lag %.2f s\n' \
        "$(metric tandem_shadow_rechecks_total 'result="confirmed"')" \
        "$(metric tandem_shadow_rechecks_total 'result="transient"')" \
        "$(metric tandem_shadow_rechecks_total 'result="busy"')" \
        "$(metric tandem_shadow_rechecks_total 'result="failed"')" "$(cat "$lagmax")"
    rm -f "$lagmax"
    kill "$TANDEM_PID" 2>/dev/null || true
    wait "$TANDEM_PID" 2>/dev/null || true
    pgctl_stop_all
}

echo "pgbench tpcb-like, scale 1, -c $CLIENTS -j $JOBS, ${DURATION}s per run; mirror { reads 100%; }"
printf '%-7s %8s %10s %8s %9s %8s %6s %7s %7s %6s\n' run tps "µs/tx cpu" match transient \
    mismatch noise sh_err dropped equal
for ((r = 1; r <= RUNS; r++)); do
    run_once "$r"
done
