#!/usr/bin/env bash
#
# bench/idle.sh - memory per idle client connection: tandem vs PgBouncer.
#
# 10,000 logged-in sessions would need 10,000 PostgreSQL backends (tandem
# in passthrough, like PgBouncer in session mode, holds one server
# connection per logged-in client), more than one PostgreSQL on this machine
# takes.  So it is measured two ways, each with a fresh proxy process:
#   (1) login: K sessions that completed login (default 1000) against a
#       PostgreSQL with max_connections K+100;
#   (1s) shadow: the same K sessions through tandem in mode shadow, each
#       with its shadow session on a second PostgreSQL (tandem only: PgBouncer
#       has no shadow);
#   (2) tcp:   N connections (default 10000) that are connected but idle
#       before the startup packet: what a proxy holds for a client that
#       has sent nothing yet;
#   (3) redis: K Redis clients that each sent one PING (tandem in
#       passthrough, against twemproxy);
#   (3s) redis shadow: the same through tandem in mode shadow, each with
#       its shadow connection to a second redis-server (tandem only).
# For each: the proxy's VmRSS (/proc/PID/status) after a warm-up connection,
# then with all connections open and settled; (after-before)/connections.
# The client side is bench/idle_client.py (standard library only).
# With --baseline BIN (or TANDEM_BASELINE_BIN=BIN) a tandem from BIN,
# configured alike, is measured too, right after the first (tandem(base)).
#
# Usage: bench/idle.sh [--sessions K] [--conns N] [--workers W] [--baseline BIN]
# Environment: SESSIONS=1000 CONNS=10000 WORKERS=2 TANDEM_BIN
#   TANDEM_BASELINE_BIN RESULTS_DIR
# Output: a table on stdout and $RESULTS_DIR/idle-<date>.tsv.
# Everything started here is stopped on exit, also on Ctrl-C.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

SESSIONS=${SESSIONS:-1000}
CONNS=${CONNS:-10000}
WORKERS=${WORKERS:-2}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}

while [ $# -gt 0 ]; do
    case $1 in
    --sessions) SESSIONS=$2; shift ;;
    --conns) CONNS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --baseline) TANDEM_BASELINE_BIN=$2; shift ;;
    -h | --help) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "idle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cleanup() {
    trap - EXIT INT TERM
    bench_stop_procs
    pgctl_stop_all
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "interrupted; cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM


bench_ensure_deps psql /usr/sbin/pgbouncer /usr/lib/postgresql/15/bin/initdb redis-server nutcracker
bench_ensure_tandem || { echo "idle.sh: no tandem binary" >&2; exit 1; }
bench_ensure_baseline || exit 1

# Every process started from here on inherits this: the client, tandem and
# PgBouncer each hold one descriptor per connection (plus backends).
need=$((CONNS + SESSIONS + 512))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    CONNS=$((hard - SESSIONS - 512))
    log "hard fd limit $hard: --conns lowered to $CONNS"
fi
ulimit -n "$hard" 2>/dev/null || ulimit -n "$need"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-idle.XXXXXX")
mkdir -p "$RESULTS_DIR"
TSV=$RESULTS_DIR/idle-$(date +%Y%m%d-%H%M%S).tsv

log "starting PostgreSQL (max_connections $((SESSIONS + 100)))"
pgctl_start idle "max_connections=$((SESSIONS + 100))"
PG_PORT=$PGCTL_PORT
log "starting the shadow's PostgreSQL (max_connections $((SESSIONS + 100)))"
pgctl_start idle_shadow "max_connections=$((SESSIONS + 100))"
SHADOW_PG_PORT=$PGCTL_PORT

# redis_start NAME: a throwaway redis-server in $WORK/NAME; sets REDIS_PORT.
redis_start() {
    local name=$1
    mkdir -p "$WORK/$name"
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients $((SESSIONS + 1000)) --dir "$WORK/$name" --logfile "$WORK/$name/redis.log" &
    BENCH_PIDS+=("$!")
    wait_port 127.0.0.1 "$REDIS_PORT" 10 || { echo "idle.sh: redis-server did not start" >&2; exit 1; }
}
log "starting two redis-servers"
redis_start blue
REDIS_BLUE_PORT=$REDIS_PORT
redis_start green
REDIS_GREEN_PORT=$REDIS_PORT

client_backends() {
    psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
        "select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()" postgres
}

# Wait until the previous proxy's server connections are gone.
wait_backends_gone() {
    local i
    for ((i = 0; i < 300; i++)); do
        [ "$(client_backends)" -eq 0 ] && return 0
        sleep 0.1
    done
    log "warning: $(client_backends) backends still open"
}

# tandem from a config file, to raise its per-process client limit and the
# startup timeout (which would otherwise close the pre-startup connections
# of scenario 2).  Falls back to the command line if the file is refused.
TANDEM_CONF=$WORK/tandem.conf
declare -A WARNED_CONF=()
tandem_args() {
    local port=$1 bin=$2 mode=passthrough shadow_line='' shadow_backend=''
    local proto=postgres primary_port=$PG_PORT shadow_port=$SHADOW_PG_PORT
    case $3 in
    redis | redis_shadow) proto=redis primary_port=$REDIS_BLUE_PORT shadow_port=$REDIS_GREEN_PORT ;;
    esac
    if [ "$3" = shadow ] || [ "$3" = redis_shadow ]; then
        mode=shadow shadow_line="shadow green;"
        shadow_backend="backend green { address 127.0.0.1:$shadow_port; }"
    fi
    cat >"$TANDEM_CONF" <<EOF
# generated by bench/idle.sh
workers $WORKERS;
limits {
    max_client_conn $((CONNS + SESSIONS + 100));
    startup_timeout 10m;
}
backend blue {
    address 127.0.0.1:$primary_port;
}
$shadow_backend
listener idle {
    listen 127.0.0.1:$port;
    protocol $proto;
    primary blue;
    $shadow_line
    mode $mode;
}
EOF
    if "$bin" -t -c "$TANDEM_CONF" >"$WORK/tandem-t.log" 2>&1; then
        TANDEM_ARGS=(-c "$TANDEM_CONF")
    else
        [ -z "${WARNED_CONF[$bin]:-}" ] && log "$bin -t -c refused the config ($(head -n 3 "$WORK/tandem-t.log" | tr '\n' ' ')); using the command line (default limits)"
        WARNED_CONF[$bin]=1
        TANDEM_ARGS=("$proto" --listen "127.0.0.1:$port" --primary "127.0.0.1:$primary_port" --workers "$WORKERS")
    fi
}

# measure PROXY MODE COUNT: fresh proxy, idle_client.py, proxy stopped.
measure() {
    local proxy=$1 mode=$2 count=$3 port pid out bin client_mode=$2
    case $proxy in
    tandem | tandem_base)
        bin=$TANDEM_BIN
        [ "$proxy" = tandem_base ] && bin=$TANDEM_BASELINE_BIN
        port=$(free_port)
        tandem_args "$port" "$bin" "$mode"
        tandem_start_bin "$bin" "$port" "$WORK/$proxy-$mode.log" "${TANDEM_ARGS[@]}" || return 1
        pid=$TANDEM_PID
        ;;
    pgbouncer)
        bouncer_start "idle-$mode" "$PG_PORT" $((SESSIONS + 10)) $((CONNS + SESSIONS + 100)) \
            client_login_timeout=600 || return 1
        port=$BOUNCER_PORT pid=$BOUNCER_PID
        ;;
    twemproxy)
        twemproxy_start "$WORK" "$REDIS_BLUE_PORT" || return 1
        port=$TW_PORT pid=$TW_PID
        ;;
    esac
    case $mode in
    shadow) client_mode=login ;;
    redis_shadow) client_mode=redis ;;
    esac
    log "$proxy: $count connections, mode $mode"
    out=$(/usr/bin/python3 "$ROOT/bench/idle_client.py" --port "$port" --pid "$pid" \
        --count "$count" --mode "$client_mode")
    log "  $out"
    bench_kill "$pid"
    [ "$proxy" = twemproxy ] || wait_backends_gone
    RESULT=$out
}

kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p"; }

printf 'scenario\tproxy\tconnections\theld\tfailed\trss_before_kb\trss_after_kb\tdelta_kb\tbytes_per_conn\n' >"$TSV"
declare -A FIG
PROXIES="tandem pgbouncer"
[ -n "$TANDEM_BASELINE_BIN" ] && PROXIES="tandem tandem_base pgbouncer"
for scenario in login shadow tcp redis redis_shadow; do
    count=$SESSIONS
    [ $scenario = tcp ] && count=$CONNS
    proxies=$PROXIES
    case $scenario in
    shadow | redis_shadow) proxies=${PROXIES/ pgbouncer/} ;;
    redis) proxies=${PROXIES/pgbouncer/twemproxy} ;;
    esac
    for proxy in $proxies; do
        if measure "$proxy" "$scenario" "$count"; then
            FIG[$scenario.$proxy]=$RESULT
        else
            FIG[$scenario.$proxy]="opened=0 held=0 failed=$count rss_before_kb=0 rss_after_kb=0 delta_kb=0 bytes_per_conn=0"
        fi
        r=${FIG[$scenario.$proxy]}
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$proxy" "$count" \
            "$(kv held "$r")" "$(kv failed "$r")" "$(kv rss_before_kb "$r")" \
            "$(kv rss_after_kb "$r")" "$(kv delta_kb "$r")" "$(kv bytes_per_conn "$r")" >>"$TSV"
    done
done

echo
echo "proxy memory per idle client connection (VmRSS growth / connections held)"
printf '%-44s  %-12s  %6s  %6s  %10s  %10s  %9s\n' scenario proxy asked held "RSS before" "RSS after" "KiB/conn"
printf '%-44s  %-12s  %6s  %6s  %10s  %10s  %9s\n' -------- ----- ----- ---- ---------- --------- --------
tail -n +2 "$TSV" | while IFS=$'\t' read -r scenario proxy count held failed before after delta per; do
    case $scenario in
    login) label="(1) logged in, $SESSIONS sessions" ;;
    shadow) label="(1s) logged in + shadow, $SESSIONS sessions" ;;
    tcp) label="(2) connected, before startup, $CONNS conns" ;;
    redis) label="(3) redis, after a PING, $SESSIONS clients" ;;
    redis_shadow) label="(3s) redis + shadow, $SESSIONS clients" ;;
    esac
    [ "$proxy" = tandem_base ] && proxy='tandem(base)'
    printf '%-44s  %-12s  %6s  %6s  %7s KiB  %7s KiB  %9.2f\n' "$label" "$proxy" "$count" "$held" \
        "$before" "$after" "$(awk -v b="$per" 'BEGIN { printf "%.2f", b / 1024 }')"
done
echo
echo "(1) is bounded by PostgreSQL backends (max_connections $((SESSIONS + 100))); (2) reaches $CONNS"
echo "client connections without any backend.  tandem workers $WORKERS; $(/usr/sbin/pgbouncer --version | head -n 1);"
echo "twemproxy: $(nutcracker --version 2>&1 | head -n 1 | sed 's/^This is //')."
echo "tandem: $(bench_bin_id "$TANDEM_BIN")"
[ -n "$TANDEM_BASELINE_BIN" ] && echo "tandem(base): $(bench_bin_id "$TANDEM_BASELINE_BIN")"
echo "results: $TSV"
