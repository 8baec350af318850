#!/usr/bin/env bash
#
# scripts/demo-fleet.sh - three tandems as one fleet (README "A fleet"):
#   1. scripts/deps.sh (Debian packages), cmake build into build/
#   2. a primary ("blue") and a shadow ("green") PostgreSQL on free loopback
#      ports (scripts/lib/pgctl.sh), both loaded with `pgbench -i`, and a
#      redis-server as the fleet's store
#   3. three tandems (m1, m2, m3), each with its own listener and admin
#      port, in shadow mode, one fleet "demo" in the store, a state file each
#   4. pgbench through m1 and m2 all along; a cutover asked of m2 flips all
#      three; m3 is SIGKILLed and restarted and comes back on green (its
#      shadow marked diverged, as after any kill: the operator clears it);
#      a rollback asked of m3 flips all three back
#   5. checks that pgbench saw no failed transaction and that both servers
#      hold the same rows, prints the fleet and its merged report
#
# Environment: DEMO_NONINTERACTIVE=1 exits after printing (for tests);
# DEMO_SECONDS=10 workload length; DEMO_SKIP_DEPS=1 skips deps.sh;
# TANDEM_BIN to use a binary instead of building build/tandem.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib/demo.sh
. "$ROOT/scripts/lib/demo.sh"

DEMO_SECONDS=${DEMO_SECONDS:-10}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-fleet-demo.XXXXXX")
STORE_PID=
declare -A PIDS=() LISTEN=() ADMIN=()

stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}

cleanup() {
    trap - EXIT INT TERM
    for m in "${!PIDS[@]}"; do stop_pid "${PIDS[$m]}"; done
    [ -n "$STORE_PID" ] && stop_pid "$STORE_PID"
    pgctl_stop_all
    echo "demo: stopped the three tandems, the store and both PostgreSQL servers (logs kept: $WORK)"
}
trap cleanup EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

# --- 1. dependencies and build ---------------------------------------------

demo_build

# --- 2. PostgreSQL and the store ---------------------------------------------

say "PostgreSQL 15: primary (blue) and shadow (green); Redis: the fleet's store"
pgctl_start blue
BLUE_PORT=$PGCTL_PORT
pgctl_start green
GREEN_PORT=$PGCTL_PORT
for port in "$BLUE_PORT" "$GREEN_PORT"; do
    pgbench -i -q -h 127.0.0.1 -p "$port" -U postgres postgres >"$WORK/pgbench-init-$port.log" 2>&1 ||
        { cat "$WORK/pgbench-init-$port.log" >&2; exit 1; }
done
STORE_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$STORE_PORT" --save "" --appendonly no \
    --dir "$WORK" >"$WORK/store.log" 2>&1 &
STORE_PID=$!
wait_port 127.0.0.1 "$STORE_PORT" || { cat "$WORK/store.log" >&2; exit 1; }
echo "blue  127.0.0.1:$BLUE_PORT   green 127.0.0.1:$GREEN_PORT   store redis://127.0.0.1:$STORE_PORT"

# --- 3. three members --------------------------------------------------------

# start_member M: start (or restart) member M with its configuration; true once ready.
start_member() {
    local m=$1
    "$TANDEM_BIN" -c "$WORK/$m.conf" >>"$WORK/$m.log" 2>&1 &
    PIDS[$m]=$!
    for _ in $(seq 150); do
        kill -0 "${PIDS[$m]}" 2>/dev/null || { tail -n 20 "$WORK/$m.log" >&2; return 1; }
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://${ADMIN[$m]}/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

say "three tandems, one fleet \"demo\""
for m in m1 m2 m3; do
    LISTEN[$m]=127.0.0.1:$(free_port)
    ADMIN[$m]=127.0.0.1:$(free_port)
    cat >"$WORK/$m.conf" <<EOF
control { store redis://127.0.0.1:$STORE_PORT; fleet demo; member $m; state_file $WORK/$m.state; }
admin { listen ${ADMIN[$m]}; }
backend blue  { address 127.0.0.1:$BLUE_PORT; }
backend green { address 127.0.0.1:$GREEN_PORT; }
listener pg { listen ${LISTEN[$m]}; primary blue; shadow green; mode shadow; }
EOF
    start_member "$m" || { echo "member $m did not start" >&2; exit 1; }
    echo "$m  listen ${LISTEN[$m]}  admin ${ADMIN[$m]}  pid ${PIDS[$m]}"
done

# roles_everywhere: each member's own view of its roles (its status's second line).
roles_everywhere() {
    for m in m1 m2 m3; do
        echo "$m: $("$TANDEM_BIN" ctl --admin "${ADMIN[$m]}" status | sed -n 2p)"
    done
}

ctl() {
    local m=$1
    shift
    echo "\$ tandem ctl --admin ${ADMIN[$m]} $*      # $m"
    "$TANDEM_BIN" ctl --admin "${ADMIN[$m]}" "$@"
}
ctl m1 fleet

# --- 4. a migration across the fleet ----------------------------------------

# pgbench_through M SECONDS: a tpcb-like run through member M, in the background.
pgbench_through() {
    local host=${LISTEN[$1]%:*} port=${LISTEN[$1]##*:}
    pgbench -n -h "$host" -p "$port" -U postgres -T "$2" -c 2 -j 1 postgres \
        >"$WORK/pgbench-$1.log" 2>&1 &
}

say "pgbench through m1 and m2 (and m3, before it is killed)"
pgbench_through m1 $((DEMO_SECONDS + 14))
PGB1=$!
pgbench_through m2 $((DEMO_SECONDS + 14))
PGB2=$!
pgbench_through m3 "$DEMO_SECONDS"
PGB3=$!
wait "$PGB3" || { cat "$WORK/pgbench-m3.log"; echo "pgbench through m3 failed" >&2; exit 1; }

say "cutover asked of m2: every member flips to green, or none does"
ctl m2 cutover --max-pause 5s
roles_everywhere

say "m3 killed (SIGKILL) and started again: it comes back on green"
kill -KILL "${PIDS[m3]}"
wait "${PIDS[m3]}" 2>/dev/null || true
start_member m3 || { echo "member m3 did not come back" >&2; exit 1; }
ctl m3 status | sed -n '1,12p'
# A member killed without its drain cannot know whether mirrored writes were
# in flight, so it marks its shadow diverged and refuses to flip onto it.
# m3 had no client left when it was killed (its pgbench had ended): nothing
# was in flight, and the operator says so (else: tandem ctl verify first).
ctl m3 resynced pg

say "rollback asked of m3: every member flips back to blue"
ctl m3 rollback --max-pause 5s
roles_everywhere
sleep 1.5 # one heartbeat: the listing shows each member's latest view
ctl m1 fleet

for m in m1 m2; do
    pid=$PGB1
    [ "$m" = m2 ] && pid=$PGB2
    wait "$pid" || { cat "$WORK/pgbench-$m.log"; echo "pgbench through $m failed" >&2; exit 1; }
    echo "$m: $(grep -E '^number of (trans|failed)' "$WORK/pgbench-$m.log" | paste -sd';' - | sed 's/;/; /')"
done

# --- 5. what the servers hold --------------------------------------------------

summary() {
    psql -h 127.0.0.1 -p "$1" -U postgres -XAtc "select 'pgbench_history rows ' ||
        (select count(*) from pgbench_history) || ', balance sum ' ||
        (select sum(abalance) from pgbench_accounts)" postgres
}
say "blue and green after cutover, restart and rollback"
for _ in $(seq 40); do
    BLUE_SUM=$(summary "$BLUE_PORT")
    GREEN_SUM=$(summary "$GREEN_PORT")
    [ "$BLUE_SUM" = "$GREEN_SUM" ] && break
    sleep 0.5
done
echo "blue   $BLUE_SUM"
echo "green  $GREEN_SUM"
if [ "$BLUE_SUM" != "$GREEN_SUM" ]; then
    echo "the servers differ after the migration: see the report" >&2
    exit 1
fi
echo "no write lost: the whole fleet went to green and back, both servers hold the same rows"

say "one report for the fleet"
ctl m1 report --fleet --top 3

say "where to look"
for m in m1 m2 m3; do
    echo "$m: psql \"host=${LISTEN[$m]%:*} port=${LISTEN[$m]##*:} user=postgres dbname=postgres\"   report http://${ADMIN[$m]}/report   log $WORK/$m.log"
done
echo "store: redis-cli -p $STORE_PORT --scan --pattern 'fleet:demo:*'"

if [ "${DEMO_NONINTERACTIVE:-0}" = 1 ]; then
    exit 0
fi
echo
echo "running; Ctrl-C stops the fleet, the store and both servers"
while kill -0 "${PIDS[m1]}" 2>/dev/null; do
    sleep 1
done
exit 1
