#!/usr/bin/env bash
#
# bench/fleet.sh - a fleet's cutover against a single tandem's, under load.
#
# Two throwaway PostgreSQL 15 (blue, green; scripts/lib/pgctl.sh), pgbench
# tables on both, a redis-server as the fleet's store, and, all on loopback:
#   single   one tandem in shadow mode (blue primary, green shadow)
#   fleet    three tandems in shadow mode, members m1 m2 m3 of one fleet
#            (control { store ...; fleet bench; }), same backends
#
# Each round runs both targets, in alternation (single first in odd rounds,
# the fleet first in even ones): pgbench -b tpcb-like with CLIENTS clients
# in all (the fleet's split evenly over its three members) for DURATION
# seconds (pgbench threads: 3 for the single, 1 per member); a third of the way in, POST /api/cutover (on m1 for the fleet,
# max_pause 10 s); once pgbench ended, a rollback without load puts blue
# back for the next run.  The write pause is each tandem's own: its
# operation's pause_ms (pause to resume, in ms, as GET /api/operations
# reports it).  Reported: per member p50/max over the rounds, the fleet's
# total (per round the longest member pause: writes were held somewhere
# that long) p50/max, the single tandem's p50/max, and the ratios
# fleet/single (target: within 1.5); where the fleet's pause goes: "drain"
# (per round the slowest member's own drain, from its log) and "coord" (the
# fleet's pause minus that: the store's round trips); pgbench's failed transactions
# and pgbench_history's rows on both servers at the end (equal: no write
# lost by a cutover or rollback).  Exit 1 when either check fails.
#
# Usage: bench/fleet.sh [--quick] [--rounds R] [--time T] [--clients C]
#                       [--workers N] [--scale S]
# Environment (flags win): ROUNDS=5 DURATION=9 CLIENTS=12 WORKERS=1
#   SCALE=5 TANDEM_BIN=build/tandem RESULTS_DIR=bench/results
# --quick: ROUNDS=2 DURATION=6 SCALE=1, about a minute.
#
# Output: a table on stdout, every single pause in
# $RESULTS_DIR/fleet-<date>-runs.tsv and the table as TSV in fleet-<date>.tsv.
# Everything started here is stopped on exit, also on Ctrl-C.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-9}
CLIENTS=${CLIENTS:-12}
WORKERS=${WORKERS:-1}
SCALE=${SCALE:-5}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
MEMBERS=3

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
    --quick) ROUNDS=2 DURATION=6 SCALE=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --time) DURATION=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --scale) SCALE=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fleet.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ $((CLIENTS % MEMBERS)) -ne 0 ] || [ "$CLIENTS" -lt "$MEMBERS" ]; then
    echo "fleet.sh: CLIENTS must be a multiple of $MEMBERS (each member gets CLIENTS/$MEMBERS)" >&2
    exit 2
fi

PGBENCH_PIDS=()
STORE_PID=
cleanup() {
    trap - EXIT INT TERM
    local p
    for p in "${PGBENCH_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    [ -n "$STORE_PID" ] && bench_kill "$STORE_PID"
    bench_stop_procs
    pgctl_stop_all
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "interrupted; cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM

bench_ensure_deps pgbench psql redis-server curl jq /usr/lib/postgresql/15/bin/initdb
bench_ensure_tandem || { echo "fleet.sh: no tandem binary" >&2; exit 1; }

bench_begin fleet

# --- servers ---------------------------------------------------------------

log "starting PostgreSQL blue and green (scale $SCALE)"
pgctl_start blue
BLUE=$PGCTL_PORT
pgctl_start green
GREEN=$PGCTL_PORT
for port in "$BLUE" "$GREEN"; do
    pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$port" -U postgres postgres >"$WORK/init-$port.log" 2>&1 ||
        { cat "$WORK/init-$port.log" >&2; exit 1; }
done

log "starting the store (redis-server)"
STORE=$(free_port)
mkdir -p "$WORK/store"
redis-server --port "$STORE" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/store" \
    --logfile "$WORK/store/redis.log" &
STORE_PID=$!
wait_port 127.0.0.1 "$STORE" 10

# write_conf FILE PORT ADMIN [CONTROL]: a tandem in shadow mode, blue -> green
write_conf() {
    {
        echo "workers $WORKERS;"
        echo "log_format text;"
        [ -n "${4:-}" ] && echo "$4"
        echo "admin { listen 127.0.0.1:$3; }"
        echo "backend blue { address 127.0.0.1:$BLUE; }"
        echo "backend green { address 127.0.0.1:$GREEN; }"
        echo "listener pg { listen 127.0.0.1:$2; primary blue; shadow green; mode shadow;"
        echo "    mirror { reads 0%; timeout 10s; } }"
    } >"$1"
}

SINGLE_PORT=$(free_port) SINGLE_ADMIN=$(free_port)
write_conf "$WORK/single.conf" "$SINGLE_PORT" "$SINGLE_ADMIN"
tandem_start "$SINGLE_PORT" "$WORK/single.log" -c "$WORK/single.conf" || exit 1
M_PORT=() M_ADMIN=()
for i in $(seq 1 $MEMBERS); do
    M_PORT+=("$(free_port)")
    M_ADMIN+=("$(free_port)")
    write_conf "$WORK/m$i.conf" "${M_PORT[-1]}" "${M_ADMIN[-1]}" \
        "control { store redis://127.0.0.1:$STORE; fleet bench; member m$i; }"
    tandem_start "${M_PORT[-1]}" "$WORK/m$i.log" -c "$WORK/m$i.conf" || exit 1
done
for i in $(seq 0 $((MEMBERS - 1))); do
    for _ in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:${M_ADMIN[$i]}/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
done
for _ in $(seq 1 100); do
    [ "$(curl -fsS "http://127.0.0.1:${M_ADMIN[0]}/api/fleet" | jq '.members | length')" = $MEMBERS ] && break
    sleep 0.2
done

# --- one run ---------------------------------------------------------------

# api ADMIN METHOD PATH [BODY]: the JSON answer
api() {
    curl -sS -X "$2" -H 'Content-Type: application/json' ${4:+-d "$4"} "http://127.0.0.1:$1$3"
}

# operation ADMIN PATH: ask it, wait for its end; prints "state pause_ms fleet_operation"
operation() {
    local id reply state
    reply=$(api "$1" POST "$2" '{"max_pause_ms": 10000}')
    id=$(jq -r '.operation.id // empty' <<<"$reply")
    [ -n "$id" ] || { echo "fleet.sh: $2 refused: $reply" >&2; return 1; }
    for _ in $(seq 1 600); do
        reply=$(api "$1" GET "/api/operations/$id")
        state=$(jq -r '.operation.state' <<<"$reply")
        case $state in completed | failed) break ;; esac
        sleep 0.05
    done
    jq -r '"\(.operation.state) \(.operation.pause_ms) \(.operation.fleet_operation // "-")"' <<<"$reply"
}

# member_pause ADMIN FLEET_OP: that member's pause for the fleet's operation (waits for its end)
member_pause() {
    local doc
    for _ in $(seq 1 400); do
        doc=$(api "$1" GET /api/status | jq -c '.operation')
        if [ "$(jq -r '.fleet_operation' <<<"$doc")" = "$2" ] &&
            [ "$(jq -r '.state' <<<"$doc")" = completed ]; then
            jq -r '.pause_ms' <<<"$doc"
            return 0
        fi
        sleep 0.05
    done
    echo "fleet.sh: member on admin $1 did not complete $2" >&2
    return 1
}

# failed_tx LOG: pgbench's failed transactions (its exit status is checked too)
failed_tx() {
    awk -F': ' '/number of failed transactions/ { split($2, a, " "); n += a[1] } END { print n + 0 }' "$1"
}

# drained_ms LOG FLEET_OP: how long that member's own drain took ("drained after N ms")
drained_ms() {
    grep -o "($2): drained after [0-9]* ms" "$1" | tail -n 1 | awk '{ print $4 }'
}

FAILED=0
# run TARGET ROUND: pgbench through TARGET, cutover a third of the way in, rollback after
run() {
    local target=$1 round=$2 ports=() admins=() per jobs i out fop state pause
    if [ "$target" = single ]; then
        ports=("$SINGLE_PORT") admins=("$SINGLE_ADMIN") per=$CLIENTS jobs=$MEMBERS
    else
        ports=("${M_PORT[@]}") admins=("${M_ADMIN[@]}") per=$((CLIENTS / MEMBERS)) jobs=1
    fi
    PGBENCH_PIDS=()
    for i in "${!ports[@]}"; do
        pgbench -n -b tpcb-like -c "$per" -j "$jobs" -T "$DURATION" \
            -h 127.0.0.1 -p "${ports[$i]}" -U postgres postgres >"$WORK/pgbench-$target-$round-$i.log" 2>&1 &
        PGBENCH_PIDS+=($!)
    done
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 3 }')"
    out=$(operation "${admins[0]}" /api/cutover) || return 1
    read -r state pause fop <<<"$out"
    [ "$state" = completed ] || { echo "fleet.sh: $target cutover $state" >&2; return 1; }
    if [ "$target" = single ]; then
        printf '%s\t%s\t%s\t%s\t%s\n' "$round" single single "$pause" "$pause" >>"$RUNS_TSV"
    else
        for i in "${!admins[@]}"; do
            pause=$(member_pause "${admins[$i]}" "$fop") || return 1
            printf '%s\t%s\tm%s\t%s\t%s\n' "$round" fleet "$((i + 1))" "$pause" \
                "$(drained_ms "$WORK/m$((i + 1)).log" "$fop")" >>"$RUNS_TSV"
        done
    fi
    for i in "${!PGBENCH_PIDS[@]}"; do
        if ! wait "${PGBENCH_PIDS[$i]}"; then
            echo "fleet.sh: pgbench through $target failed:" >&2
            tail -n 5 "$WORK/pgbench-$target-$round-$i.log" >&2
            FAILED=$((FAILED + 1))
        fi
        FAILED=$((FAILED + $(failed_tx "$WORK/pgbench-$target-$round-$i.log")))
    done
    PGBENCH_PIDS=()
    out=$(operation "${admins[0]}" /api/rollback) || return 1
    [ "${out%% *}" = completed ] || { echo "fleet.sh: $target rollback: $out" >&2; return 1; }
    if [ "$target" = fleet ]; then
        for i in "${!admins[@]}"; do member_pause "${admins[$i]}" "${out##* }" >/dev/null || return 1; done
    fi
}

printf 'round\ttarget\tmember\tpause_ms\tdrain_ms\n' >"$RUNS_TSV"
for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="single fleet"; else order="fleet single"; fi
    for target in $order; do
        log "round $round/$ROUNDS: $target"
        run "$target" "$round" || exit 1
    done
done

# --- report ----------------------------------------------------------------

# stats: "p50 max" of the numbers on stdin (p50: the lower middle one)
stats() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit } print v[int((NR + 1) / 2)], v[NR] }'
}

{
    printf 'what\tp50_ms\tmax_ms\n'
    for m in $(seq 1 $MEMBERS); do
        printf 'm%s\t%s\n' "$m" "$(awk -F'\t' -v m="m$m" '$3 == m { print $4 }' "$RUNS_TSV" | stats | tr ' ' '\t')"
    done
    printf 'fleet\t%s\n' "$(awk -F'\t' '$2 == "fleet" { if ($4 > t[$1]) t[$1] = $4; seen[$1] = 1 }
        END { for (r in seen) print t[r] + 0 }' "$RUNS_TSV" | stats | tr ' ' '\t')"
    printf 'single\t%s\n' "$(awk -F'\t' '$2 == "single" { print $4 }' "$RUNS_TSV" | stats | tr ' ' '\t')"
    # where the fleet's pause goes: the slowest member's own drain, and the rest (the store's
    # round trips and each member waiting for the slowest)
    printf 'drain\t%s\n' "$(awk -F'\t' '$2 == "fleet" { if ($5 > d[$1]) d[$1] = $5; seen[$1] = 1 }
        END { for (r in seen) print d[r] + 0 }' "$RUNS_TSV" | stats | tr ' ' '\t')"
    printf 'coord\t%s\n' "$(awk -F'\t' '$2 == "fleet" { if ($5 > d[$1]) d[$1] = $5; if ($4 > t[$1]) t[$1] = $4; seen[$1] = 1 }
        END { for (r in seen) print t[r] - d[r] }' "$RUNS_TSV" | stats | tr ' ' '\t')"
} >"$SUMMARY_TSV"

read -r F50 FMAX < <(awk -F'\t' '$1 == "fleet" { print $2, $3 }' "$SUMMARY_TSV")
read -r S50 SMAX < <(awk -F'\t' '$1 == "single" { print $2, $3 }' "$SUMMARY_TSV")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

echo
echo "write pause at a cutover under pgbench -b tpcb-like (-c $CLIENTS in all, ${DURATION}s), $ROUNDS rounds"
echo "tandem: $(bench_bin_id "$TANDEM_BIN")"
printf '%-8s %8s %8s\n' "" "p50 ms" "max ms"
tail -n +2 "$SUMMARY_TSV" | while IFS=$'\t' read -r what p50 max; do
    printf '%-8s %8s %8s\n' "$what" "$p50" "$max"
done
printf 'fleet/single: p50 %s, max %s (target: within 1.5)\n' "$(ratio "$F50" "$S50")" "$(ratio "$FMAX" "$SMAX")"
printf 'failed transactions: %s\n' "$FAILED"
# every run mirrored each write: both servers hold the same history (nothing lost either way)
rows() { psql -X -qAt -h 127.0.0.1 -p "$1" -U postgres -c 'SELECT count(*) FROM pgbench_history' postgres; }
SAME=0
for _ in $(seq 1 100); do
    HB=$(rows "$BLUE") HG=$(rows "$GREEN")
    [ "$HB" = "$HG" ] && { SAME=1; break; }
    sleep 0.1
done
printf 'pgbench_history rows: blue %s, green %s\n' "$HB" "$HG"
echo "runs: $RUNS_TSV"
[ "$FAILED" -eq 0 ] && [ "$SAME" = 1 ]
