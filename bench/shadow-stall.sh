#!/usr/bin/env bash
#
# bench/shadow-stall.sh - the shadow can never hurt the client, measured.
#
# One tandem in shadow mode in front of a primary and a shadow PostgreSQL
# (both `pgbench -i` alike).  pgbench -b tpcb-like runs through it in
# alternation: with the shadow healthy, and with the shadow stalled
# (SIGSTOP on its postmaster and every backend, for the whole run, SIGCONT
# after).  Reported: median client TPS of each, their ratio (target >= 0.9),
# tandem's CPU per transaction in each, and what tandem counted while the
# shadow was stalled (shadow_timeout / dropped).
#
# Usage: bench/shadow-stall.sh [--rounds R] [--time T] [--clients C]
# Environment (flags win): ROUNDS=3 DURATION=10 CLIENTS=8 JOBS=2 WORKERS=1
#   SCALE=10 TIMEOUT=1s (mirror timeout) TANDEM_BIN=build/tandem
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-10} CLIENTS=${CLIENTS:-8} JOBS=${JOBS:-2}
WORKERS=${WORKERS:-1} SCALE=${SCALE:-10} TIMEOUT=${TIMEOUT:-1s}
while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --time) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    *) echo "usage: $0 [--rounds R] [--time T] [--clients C]" >&2; exit 2 ;;
    esac
done

cleanup() {
    [ -n "${SHADOW_PIDS:-}" ] && kill -CONT $SHADOW_PIDS 2>/dev/null
    bench_stop_procs
    pgctl_stop_all
}
trap cleanup EXIT INT TERM

bench_ensure_deps pgbench initdb
bench_ensure_tandem
PGBENCH=/usr/lib/postgresql/15/bin/pgbench

pgctl_start blue >/dev/null; BLUE=$PGCTL_PORT
pgctl_start green >/dev/null; GREEN=$PGCTL_PORT; GREEN_DIR=$PGCTL_DIR
for port in $BLUE $GREEN; do
    "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres >/dev/null 2>&1
done

TPORT=$(free_port) APORT=$(free_port)
CONF=$(mktemp /tmp/tandem-stall.XXXXXX.conf)
cat >"$CONF" <<EOF
workers $WORKERS;
admin { listen 127.0.0.1:$APORT; }
backend blue { address 127.0.0.1:$BLUE; }
backend green { address 127.0.0.1:$GREEN; }
listener pg {
    listen 127.0.0.1:$TPORT; primary blue; shadow green; mode shadow;
    mirror { reads 10%; timeout $TIMEOUT; }
}
EOF
LOG=$(mktemp /tmp/tandem-stall.XXXXXX.log)
tandem_start "$TPORT" "$LOG" -c "$CONF"

# The shadow's postmaster and all its backends (each backend is its own session).
shadow_pids() {
    local pm
    pm=$(head -1 "$GREEN_DIR/data/postmaster.pid")
    echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"
}

metric() {
    curl -s "127.0.0.1:$APORT/metrics" | awk -v n="$1" -v l="$2" \
        'index($0, n "{") == 1 && index($0, l) { s += $NF } END { print s + 0 }'
}

run() { # label -> "tps ticks tx"
    local before after out tx
    before=$(proc_cpu_ticks "$TANDEM_PID")
    out=$("$PGBENCH" -n -b tpcb-like -c "$CLIENTS" -j "$JOBS" -T "$DURATION" \
        -h 127.0.0.1 -p "$TPORT" -U postgres postgres 2>&1)
    after=$(proc_cpu_ticks "$TANDEM_PID")
    tx=$(echo "$out" | awk '/actually processed/ { print $NF }')
    echo "$(echo "$out" | awk '/^tps/ { print $3 }') $((after - before)) $tx"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

healthy_tps=() stalled_tps=() healthy_cpu=() stalled_cpu=()
for r in $(seq "$ROUNDS"); do
    read -r tps ticks tx < <(run healthy)
    healthy_tps+=("$tps"); healthy_cpu+=("$(awk -v t="$ticks" -v x="$tx" -v h="$CLK_TCK" 'BEGIN { printf "%.1f", t / h / x * 1e6 }')")
    echo "round $r healthy: $tps tps"
    SHADOW_PIDS=$(shadow_pids)
    kill -STOP $SHADOW_PIDS
    read -r tps ticks tx < <(run stalled)
    kill -CONT $SHADOW_PIDS
    SHADOW_PIDS=
    stalled_tps+=("$tps"); stalled_cpu+=("$(awk -v t="$ticks" -v x="$tx" -v h="$CLK_TCK" 'BEGIN { printf "%.1f", t / h / x * 1e6 }')")
    echo "round $r stalled: $tps tps"
    sleep 2 # let the sessions re-attach at their next idle point
done

h=$(printf '%s\n' "${healthy_tps[@]}" | median)
s=$(printf '%s\n' "${stalled_tps[@]}" | median)
hc=$(printf '%s\n' "${healthy_cpu[@]}" | median)
sc=$(printf '%s\n' "${stalled_cpu[@]}" | median)
echo
printf '%-10s %10s %14s\n' shadow "tps(median)" "tandem µs/tx"
printf '%-10s %10.0f %14s\n' healthy "$h" "$hc"
printf '%-10s %10.0f %14s\n' stalled "$s" "$sc"
printf 'stalled/healthy TPS ratio: %.3f (target >= 0.9)\n' "$(awk -v a="$s" -v b="$h" 'BEGIN { print a / b }')"
echo "counted: shadow_timeout=$(metric tandem_shadow_operations_total 'outcome="shadow_timeout"')" \
     "dropped=$(metric tandem_shadow_operations_total 'outcome="dropped"')" \
     "match=$(metric tandem_shadow_operations_total 'outcome="match"')"
