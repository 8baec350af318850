#!/usr/bin/env bash
#
# scripts/demo.sh - the README's demo: tandem in front of two throwaway
# PostgreSQL 15 servers, a short workload through it, and what it showed.
#
#   1. scripts/deps.sh (Debian packages), cmake build into build/
#   2. a primary ("blue") and a shadow ("green") PostgreSQL on free loopback
#      ports (scripts/lib/pgctl.sh), both loaded with `pgbench -i`
#   3. tandem postgres --listen 127.0.0.1:6432 --primary blue --shadow green
#      --mode shadow --admin 127.0.0.1:9090 (other free ports when 6432 or
#      9090 are taken; passthrough without the shadow when this tandem does
#      not run shadow mode yet)
#   4. pgbench -T $DEMO_SECONDS and a few psql statements through tandem
#   5. prints the pgbench summary, tandem_ metrics, the shadow report (in
#      shadow mode) and where to look
#   6. a whole migration with `tandem ctl` while pgbench keeps writing:
#      split (reads 50/50), cutover (green becomes the primary), rollback;
#      then checks both servers hold the same rows, and runs until Ctrl-C,
#      which stops everything it started
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
LOG=$ROOT/build/demo-tandem.log
TANDEM_PID=

cleanup() {
    trap - EXIT INT TERM
    if [ -n "$TANDEM_PID" ] && kill -0 "$TANDEM_PID" 2>/dev/null; then
        kill -TERM "$TANDEM_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$TANDEM_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$TANDEM_PID" 2>/dev/null || true
    fi
    pgctl_stop_all
    echo "demo: stopped tandem and both PostgreSQL servers (log kept: $LOG)"
}
trap cleanup EXIT
trap 'echo; exit 130' INT
trap 'exit 143' TERM

# --- 1. dependencies and build ---------------------------------------------

demo_build
mkdir -p "$(dirname "$LOG")"

# --- 2. PostgreSQL: primary and shadow ---------------------------------------

say "PostgreSQL 15: primary (blue) and shadow (green)"
pgctl_start blue
BLUE_PORT=$PGCTL_PORT BLUE_DIR=$PGCTL_DIR
pgctl_start green
GREEN_PORT=$PGCTL_PORT
for port in "$BLUE_PORT" "$GREEN_PORT"; do
    pgbench -i -q -h 127.0.0.1 -p "$port" -U postgres postgres >"$BLUE_DIR/pgbench-init-$port.log" 2>&1 ||
        { cat "$BLUE_DIR/pgbench-init-$port.log" >&2; exit 1; }
done
echo "blue  127.0.0.1:$BLUE_PORT  (pgbench -i done)"
echo "green 127.0.0.1:$GREEN_PORT  (pgbench -i done)"

# --- 3. tandem ---------------------------------------------------------------

PORT=6432
port_is_free "$PORT" || PORT=$(free_port)
ADMIN_PORT=9090
port_is_free "$ADMIN_PORT" || ADMIN_PORT=$(free_port)

# start_tandem ARG...: true when it runs and listens on $PORT.
start_tandem() {
    "$TANDEM_BIN" postgres --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN_PORT" \
        --workers 2 "$@" >"$LOG" 2>&1 &
    TANDEM_PID=$!
    for _ in $(seq 100); do
        kill -0 "$TANDEM_PID" 2>/dev/null || { wait "$TANDEM_PID" 2>/dev/null || true; TANDEM_PID=; return 1; }
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

say "tandem on 127.0.0.1:$PORT, admin on 127.0.0.1:$ADMIN_PORT"
MODE=shadow
if ! start_tandem --primary "blue=127.0.0.1:$BLUE_PORT" --shadow "green=127.0.0.1:$GREEN_PORT" --mode shadow; then
    echo "this tandem does not run --mode shadow yet:"
    sed 's/^/    /' "$LOG"
    echo "falling back to passthrough (blue only)"
    MODE=passthrough
    start_tandem --primary "blue=127.0.0.1:$BLUE_PORT" ||
        { echo "tandem did not start:" >&2; cat "$LOG" >&2; exit 1; }
fi
echo "mode $MODE, pid $TANDEM_PID, log $LOG"

# --- 4. workload ---------------------------------------------------------------

say "workload through tandem: pgbench -T $DEMO_SECONDS -c 4 -j 2 (tpcb-like)"
PGB_OUT=$(pgbench -n -h 127.0.0.1 -p "$PORT" -U postgres -T "$DEMO_SECONDS" -c 4 -j 2 -M extended postgres 2>&1) ||
    { echo "$PGB_OUT"; echo "pgbench through tandem failed" >&2; exit 1; }
grep -E '^(transaction type|query mode|number of clients|number of trans|number of failed|latency average|tps)' <<<"$PGB_OUT"

say "psql through tandem"
psql -h 127.0.0.1 -p "$PORT" -U postgres -X -v ON_ERROR_STOP=1 postgres <<'SQL'
CREATE TABLE IF NOT EXISTS demo_notes (id serial PRIMARY KEY, note text NOT NULL, at timestamptz DEFAULT now());
INSERT INTO demo_notes (note) VALUES ('written through tandem'), ('mirrored to the shadow in shadow mode');
UPDATE demo_notes SET note = note || ' (updated)' WHERE id = 1;
SELECT id, note FROM demo_notes ORDER BY id;
SELECT count(*) AS accounts, sum(abalance) AS balance_sum FROM pgbench_accounts;
SQL

# --- 5. what happened ----------------------------------------------------------

say "metrics: curl -s http://127.0.0.1:$ADMIN_PORT/metrics | grep tandem_"
metrics=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" || true)
if [ -n "$metrics" ]; then
    grep '^tandem_' <<<"$metrics" | grep -v '_bucket{' | head -n 20 || echo "(no tandem_ series)"
else
    echo "(the admin endpoint did not answer)"
fi

if [ "$MODE" = shadow ]; then
    say "shadow: what the primary and the shadow hold now"
    # summary PORT: history rows, balance sum, demo_notes rows of one server.
    summary() {
        psql -h 127.0.0.1 -p "$1" -U postgres -XAtc "select 'pgbench_history rows ' ||
            (select count(*) from pgbench_history) || ', balance sum ' ||
            (select sum(abalance) from pgbench_accounts) || ', demo_notes ' ||
            case when to_regclass('demo_notes') is null then 'missing' else 'present' end" postgres
    }
    # same_on_both TRIES: print both servers' summaries, true when equal.
    # Mirrors are asynchronous: the shadow gets TRIES half-seconds to catch up.
    same_on_both() {
        for _ in $(seq "$1"); do
            BLUE_SUM=$(summary "$BLUE_PORT")
            GREEN_SUM=$(summary "$GREEN_PORT")
            [ "$BLUE_SUM" = "$GREEN_SUM" ] && break
            sleep 0.5
        done
        echo "blue   $BLUE_SUM"
        echo "green  $GREEN_SUM"
        [ "$BLUE_SUM" = "$GREEN_SUM" ]
    }
    if same_on_both 10; then
        echo "the shadow received every write: both servers hold the same"
    elif [ "$GREEN_SUM" = "pgbench_history rows 0, balance sum 0, demo_notes missing" ]; then
        echo "the shadow received no write: this tandem accepts --mode shadow but does not mirror yet"
    else
        echo "the shadow differs from the primary (mirrors still in flight, or dropped: see the report)"
    fi
    say "shadow report: curl -s http://127.0.0.1:$ADMIN_PORT/api/shadow/report"
    report=$(curl -s --max-time 5 -w '\n%{http_code}' "http://127.0.0.1:$ADMIN_PORT/api/shadow/report" || true)
    if [ "${report##*$'\n'}" = 200 ]; then
        head -c 2000 <<<"${report%$'\n'*}"
        echo
    else
        echo "(not served by this tandem yet: HTTP ${report##*$'\n'})"
    fi
fi

# --- 6. a migration, with tandem ctl --------------------------------------------

if [ "$MODE" = shadow ]; then
    ctl() {
        echo "\$ tandem ctl $*"
        "$TANDEM_BIN" ctl --admin "127.0.0.1:$ADMIN_PORT" "$@"
    }
    say "a migration while pgbench writes: split, cutover, rollback (tandem ctl)"
    pgbench -n -h 127.0.0.1 -p "$PORT" -U postgres -T $((DEMO_SECONDS + 12)) -c 4 -j 2 \
        postgres >"$LOG.migration-pgbench" 2>&1 &
    MIG_PGBENCH=$!
    sleep 2
    ctl mode split
    ctl weights blue=50 green=50
    sleep 2
    ctl cutover --max-pause 5s
    ctl status
    sleep 2
    ctl rollback --max-pause 5s
    ctl weights blue=100 green=0
    wait "$MIG_PGBENCH" ||
        { cat "$LOG.migration-pgbench"; echo "pgbench failed during the migration" >&2; exit 1; }
    grep -E '^(number of trans|number of failed)' "$LOG.migration-pgbench"
    if same_on_both 20; then
        echo "no write lost: through cutover and rollback both servers hold the same rows"
    else
        echo "the servers differ after the migration: see the report" >&2
        exit 1
    fi

    say "the comparison, after the migration"
    # a read whose answers differed is run again on both before it counts (up to ~3 s)
    sleep 4
    ctl report --top 3
    outcomes=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        sed -n 's/^tandem_shadow_operations_total{.*outcome="\([a-z_]*\)"} \([0-9]*\)$/\1 \2/p' |
        paste -sd, - | sed 's/,/, /g')
    echo "final outcomes: $outcomes"
fi

say "where to look"
cat <<EOF
psql through tandem:  psql "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
primary (blue):       psql "host=127.0.0.1 port=$BLUE_PORT user=postgres dbname=postgres"
shadow (green):       psql "host=127.0.0.1 port=$GREEN_PORT user=postgres dbname=postgres"
metrics:              http://127.0.0.1:$ADMIN_PORT/metrics
health:               http://127.0.0.1:$ADMIN_PORT/healthz
report page:          http://127.0.0.1:$ADMIN_PORT/report
tandem ctl:           $TANDEM_BIN ctl --admin 127.0.0.1:$ADMIN_PORT status
EOF
[ "$MODE" = shadow ] && echo "shadow report:        http://127.0.0.1:$ADMIN_PORT/api/shadow/report"
echo "tandem log:           $LOG"

if [ "${DEMO_NONINTERACTIVE:-0}" = 1 ]; then
    exit 0
fi
echo
echo "running; Ctrl-C stops tandem and both servers"
while kill -0 "$TANDEM_PID" 2>/dev/null; do
    sleep 1
done
echo "tandem exited on its own; its log:" >&2
tail -n 20 "$LOG" >&2
exit 1
