#!/usr/bin/env bash
#
# bench/corpus.sh - a varied workload's validation figure (bench/corpus.py).
#
# Two freshly initialised, identical PostgreSQL servers; one tandem in
# shadow mode in front of them with every read compared
# (`mirror { reads 100%; }`); bench/corpus.py sends psql meta-commands, an
# ORM's introspection, sequences, partitioned tables, large objects,
# LISTEN/NOTIFY and COPY through it, then prints the outcome counts, the
# validation figure and every statement that mismatched or failed on the
# shadow.
#
# Usage: bench/corpus.sh      Environment: TANDEM_BIN=build/tandem
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh"
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

cleanup() {
    bench_stop_procs
    pgctl_stop_all
}
trap cleanup EXIT INT TERM

bench_ensure_deps initdb psql
bench_ensure_tandem
/usr/bin/python3 -c 'import psycopg, sqlalchemy, psycopg2' 2>/dev/null ||
    bash "$ROOT/scripts/deps.sh" # python3-psycopg, python3-sqlalchemy, python3-psycopg2

pgctl_start corpus-blue >/dev/null; BLUE=$PGCTL_PORT
pgctl_start corpus-green >/dev/null; GREEN=$PGCTL_PORT
TPORT=$(free_port) APORT=$(free_port)
CONF=$(mktemp /tmp/tandem-corpus.XXXXXX.conf)
cat >"$CONF" <<EOT
workers 1;
admin { listen 127.0.0.1:$APORT; }
backend blue { address 127.0.0.1:$BLUE; }
backend green { address 127.0.0.1:$GREEN; }
listener pg {
    listen 127.0.0.1:$TPORT; primary blue; shadow green; mode shadow;
    mirror { reads 100%; timeout 10s; }
}
EOT
LOG=$(mktemp /tmp/tandem-corpus.XXXXXX.log)
tandem_start "$TPORT" "$LOG" -c "$CONF"
/usr/bin/python3 "$ROOT/bench/corpus.py" "$TPORT" "$APORT"
echo "tandem log: $LOG"
