#!/usr/bin/env bash
#
# bench/icount.sh - instructions per transaction of tandem against a
# baseline binary, for a machine too busy for timings.
#
# CPU time per transaction (pg.sh, redis.sh) moves with everything else the
# machine runs: caches, frequency, other processes.  The number of
# instructions a proxy runs per transaction does not, so a change to the
# request path can be compared with its baseline even while the two cores
# are shared.  Each tandem runs under valgrind's callgrind (this machine's
# VM has no hardware counters for perf stat), which counts user-space
# instructions exactly; the kernel's side of the syscalls is not counted.
# Fixed workloads (pgbench -t, redis-benchmark -n) run through each binary
# in turn, ROUNDS times.
#
# Usage: bench/icount.sh --baseline BIN [--rounds R] [--keep DIR] [--shadow]
#   --keep DIR: keep each workload's last callgrind profile there
#   (DIR/WORKLOAD.new, DIR/WORKLOAD.base), for callgrind_annotate
#   --shadow: also tpcb-like -M prepared and Redis SET/GET through each
#   binary in passthrough and in --mode shadow (a second PostgreSQL and
#   Redis as the shadows), for the shadow's cost over passthrough
#   --rivals: also PgBouncer (session pool, as bench/pg.sh) and twemproxy
#   (one server connection, as bench/redis.sh) under callgrind on the same
#   -S and SET/GET workloads, for tandem/rival in user instructions (the
#   syscalls' kernel side, equal in count, is not in either figure)
# Environment: TANDEM_BIN=build/tandem ROUNDS=3 PG_TX=500 (pgbench -t, 4
#   clients) REQUESTS=10000 (redis-benchmark -n, 10 clients, SET and GET)
# Output: per workload the median instructions per transaction of each
# binary and the ratio tandem/base (below 1: the change costs less).
# Everything started here is stopped on exit.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-10000}

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; }
while [ $# -gt 0 ]; do
    case $1 in
    --baseline) TANDEM_BASELINE_BIN=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --keep) KEEP=$2; shift ;;
    --shadow) SHADOW=1 ;;
    --rivals) RIVALS=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "icount.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cleanup() {
    trap - EXIT INT TERM
    bench_stop_procs
    pgctl_stop_all
    [ -n "${REDIS_PID:-}" ] && kill "$REDIS_PID" 2>/dev/null
    [ -n "${REDIS2_PID:-}" ] && kill "$REDIS2_PID" 2>/dev/null
    [ -n "${PID_bouncer:-}" ] && kill "$PID_bouncer" 2>/dev/null
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_ensure_deps valgrind callgrind_control pgbench redis-benchmark redis-server
bench_ensure_tandem || exit 1
bench_ensure_baseline || exit 1
[ -n "${TANDEM_BASELINE_BIN:-}" ] || { echo "icount.sh: --baseline BIN is required" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-icount.XXXXXX")

pgctl_start blue || exit 1
PG_PORT=$PGCTL_PORT
pgbench -i -q -s 1 -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1 || exit 1
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no >"$WORK/redis.log" 2>&1 &
REDIS_PID=$!
wait_port 127.0.0.1 "$REDIS_PORT" || exit 1
if [ -n "${SHADOW:-}" ]; then
    pgctl_start green || exit 1
    PG2_PORT=$PGCTL_PORT
    pgbench -i -q -s 1 -h 127.0.0.1 -p "$PG2_PORT" -U postgres postgres >/dev/null 2>&1 || exit 1
    REDIS2_PORT=$(free_port)
    redis-server --port "$REDIS2_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no >"$WORK/redis2.log" 2>&1 &
    REDIS2_PID=$!
    wait_port 127.0.0.1 "$REDIS2_PORT" || exit 1
fi

# Under callgrind, each tandem's instructions are counted exactly (user
# space; the syscalls' kernel side is not): zeroed before a workload,
# dumped after, divided by its transactions.
# (strings uncompressed: each dump kept with --keep names its functions)
# start BIN NAME PROTO PRIMARY_PORT [ARG...]: sets PORT_<NAME> and PID_<NAME>
start() {
    local port bin=$1 name=$2 proto=$3 primary=$4
    shift 4
    port=$(free_port)
    tandem_start_bin valgrind "$port" "$WORK/$name.log" --tool=callgrind --compress-strings=no \
        --callgrind-out-file="$WORK/cg-$name.%p" "$bin" "$proto" --listen "127.0.0.1:$port" \
        --primary "127.0.0.1:$primary" --workers 1 "$@" || exit 1
    printf -v "PORT_$name" %s "$port"
    printf -v "PID_$name" %s "$TANDEM_PID"
}
start "$TANDEM_BIN" pg_new postgres "$PG_PORT"
start "$TANDEM_BASELINE_BIN" pg_base postgres "$PG_PORT"
start "$TANDEM_BIN" redis_new redis "$REDIS_PORT"
start "$TANDEM_BASELINE_BIN" redis_base redis "$REDIS_PORT"
if [ -n "${SHADOW:-}" ]; then
    start "$TANDEM_BIN" pgsh_new postgres "$PG_PORT" --shadow "127.0.0.1:$PG2_PORT" --mode shadow
    start "$TANDEM_BASELINE_BIN" pgsh_base postgres "$PG_PORT" --shadow "127.0.0.1:$PG2_PORT" --mode shadow
    start "$TANDEM_BIN" redissh_new redis "$REDIS_PORT" --shadow "127.0.0.1:$REDIS2_PORT" --mode shadow
    start "$TANDEM_BASELINE_BIN" redissh_base redis "$REDIS_PORT" --shadow "127.0.0.1:$REDIS2_PORT" --mode shadow
fi
if [ -n "${RIVALS:-}" ]; then
    bench_ensure_deps pgbouncer nutcracker || exit 1
    # PgBouncer refuses to run as root: it and its valgrind run as postgres
    # (callgrind_control reaches them from root), in bouncer_start's directory
    bouncer_start icount "$PG_PORT" 20 100 || exit 1
    bench_kill "$BOUNCER_PID"
    chown postgres "$WORK"
    _pgctl_as_pg valgrind --tool=callgrind --compress-strings=no \
        --callgrind-out-file="$WORK/cg-bouncer.%p" /usr/sbin/pgbouncer \
        "$BOUNCER_DIR/pgbouncer.ini" >"$WORK/bouncer.log" 2>&1 &
    wait_port 127.0.0.1 "$BOUNCER_PORT" 60 || exit 1
    PID_bouncer=$(pgrep -u postgres -f "callgrind.*pgbouncer" | head -1)
    PORT_bouncer=$BOUNCER_PORT
    twemproxy_start "$WORK" "$REDIS_PORT" valgrind --tool=callgrind --compress-strings=no \
        --callgrind-out-file="$WORK/cg-twem.%p" || exit 1
    PORT_twem=$TW_PORT PID_twem=$TW_PID
fi

# cg_control -z|-d PID: zero or dump PID's counts; vgdb finds a process by
# its user's name, so PgBouncer's valgrind is reached as postgres
cg_control() {
    if [ "$2" = "${PID_bouncer:-}" ]; then
        _pgctl_as_pg callgrind_control "$1" "$2" >/dev/null 2>&1
    else
        callgrind_control "$1" "$2" >/dev/null 2>&1
    fi
}

# measure PID LABEL CMD...: instructions the process ran while CMD ran (the
# profile kept as KEEP/LABEL with --keep)
measure() {
    local pid=$1 label=$2 dump
    shift 2
    cg_control -z "$pid"
    "$@" >"$WORK/run.out" 2>&1
    rm -f "$WORK"/cg-*."$pid".*
    cg_control -d "$pid"
    sleep 0.5
    dump=$(ls -t "$WORK"/cg-*."$pid".* | head -1)
    [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$dump" "$KEEP/$label"
    awk '/^(summary|totals):/ {print $2; exit}' "$dump"
}

PG_TX=${PG_TX:-500}
declare -A SAMPLES
for ((r = 1; r <= ROUNDS; r++)); do
    for mode in prepared extended; do
        for who in new base ${RIVALS:+bouncer}; do
            pid_var=PID_pg_$who port_var=PORT_pg_$who
            [ "$who" = bouncer ] && pid_var=PID_bouncer port_var=PORT_bouncer
            ins=$(measure "${!pid_var}" "pg-S-$mode.$who" pgbench -n -S -M "$mode" -c 4 -j 2 -t "$PG_TX" \
                -h 127.0.0.1 -p "${!port_var}" -U postgres postgres)
            SAMPLES["pg-S-$mode,$who"]+="$((ins / (4 * PG_TX))) "
        done
    done
    for p in 1 16; do
        for who in new base ${RIVALS:+twem}; do
            pid_var=PID_redis_$who port_var=PORT_redis_$who
            [ "$who" = twem ] && pid_var=PID_twem port_var=PORT_twem
            ins=$(measure "${!pid_var}" "redis-P$p.$who" redis-benchmark -q -h 127.0.0.1 -p "${!port_var}" \
                -c 10 -n "$REQUESTS" -P "$p" -t set,get)
            SAMPLES["redis-P$p,$who"]+="$((ins / (2 * REQUESTS))) "
        done
    done
    if [ -n "${SHADOW:-}" ]; then
        for who in new base; do
            for pg in pg pgsh; do
                pid_var=PID_${pg}_$who port_var=PORT_${pg}_$who
                ins=$(measure "${!pid_var}" "$pg-tpcb.$who" pgbench -n -b tpcb-like -M prepared -c 4 -j 2 \
                    -t "$PG_TX" -h 127.0.0.1 -p "${!port_var}" -U postgres postgres)
                SAMPLES["$pg-tpcb-prepared,$who"]+="$((ins / (4 * PG_TX))) "
                # and -S -M prepared (pgsh-S-pair), the noisiest figure: the passthrough
                # runs change the primary's data only, so compared reads mismatch, and
                # their re-checks, a few a second, log in to both servers
                ins=$(measure "${!pid_var}" "$pg-S.$who" pgbench -n -S -M prepared -c 4 -j 2 \
                    -t "$PG_TX" -h 127.0.0.1 -p "${!port_var}" -U postgres postgres)
                SAMPLES["$pg-S-pair,$who"]+="$((ins / (4 * PG_TX))) "
            done
            for rd in redis redissh; do
                pid_var=PID_${rd}_$who port_var=PORT_${rd}_$who
                for p in 1 16; do
                    ins=$(measure "${!pid_var}" "$rd-P$p-shadowset.$who" redis-benchmark -q -h 127.0.0.1 \
                        -p "${!port_var}" -c 10 -n "$REQUESTS" -P "$p" -t set,get)
                    SAMPLES["$rd-P$p-pair,$who"]+="$((ins / (2 * REQUESTS))) "
                done
            done
        done
    fi
    echo "round $r done" >&2
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-20s %14s %14s %10s\n' workload "ins/tx tandem" "ins/tx base" tandem/base
for w in pg-S-prepared pg-S-extended redis-P1 redis-P16 pg-tpcb-prepared pgsh-tpcb-prepared \
    pg-S-pair pgsh-S-pair redis-P1-pair redissh-P1-pair redis-P16-pair redissh-P16-pair; do
    new=$(echo "${SAMPLES[$w,new]:-}" | median)
    base=$(echo "${SAMPLES[$w,base]:-}" | median)
    [ -n "$new" ] && [ -n "$base" ] && [ "$base" -gt 0 ] || continue
    printf '%-20s %14s %14s %10.3f\n' "$w" "$new" "$base" "$(echo "$new / $base" | bc -l)"
done
if [ -n "${RIVALS:-}" ]; then
    for w in pg-S-prepared:bouncer:PgBouncer pg-S-extended:bouncer:PgBouncer \
        redis-P1:twem:twemproxy redis-P16:twem:twemproxy; do
        IFS=: read -r wl who name <<<"$w"
        new=$(echo "${SAMPLES[$wl,new]:-}" | median)
        rival=$(echo "${SAMPLES[$wl,$who]:-}" | median)
        [ -n "$new" ] && [ -n "$rival" ] && [ "$rival" -gt 0 ] || continue
        printf 'tandem/%-10s %-16s %8s / %-8s %8.3f\n' "$name" "$wl" "$new" "$rival" \
            "$(echo "$new / $rival" | bc -l)"
    done
fi
if [ -n "${SHADOW:-}" ]; then
    for who in new base; do
        for pair in "pgsh-tpcb-prepared pg-tpcb-prepared" "pgsh-S-pair pg-S-pair" \
            "redissh-P1-pair redis-P1-pair" \
            "redissh-P16-pair redis-P16-pair"; do
            set -- $pair
            sh=$(echo "${SAMPLES[$1,$who]:-}" | median)
            pt=$(echo "${SAMPLES[$2,$who]:-}" | median)
            [ -n "$sh" ] && [ -n "$pt" ] && [ "$pt" -gt 0 ] || continue
            printf 'shadow/passthrough %-20s %-4s %10.3f\n' "$2" "$who" "$(echo "$sh / $pt" | bc -l)"
        done
    done
fi
echo "tandem: $TANDEM_BIN; base: $TANDEM_BASELINE_BIN; $ROUNDS rounds, workers 1, under callgrind"
