# shellcheck shell=bash
#
# bench/lib.sh - what the benchmarks share beyond scripts/lib/pgctl.sh:
# PgBouncer and tandem processes, and per-process figures from /proc.
# Source it after pgctl.sh; it runs nothing by itself.
#
# bench_ensure_deps CMD...     run scripts/deps.sh when one of CMD is missing
# bench_ensure_tandem          set TANDEM_BIN (default build/tandem),
#                              building it with cmake when it is absent
# bench_ensure_baseline        check TANDEM_BASELINE_BIN (a second tandem to
#                              measure before/after in the same run; empty:
#                              none) and make it an absolute path
# bench_bin_id BIN             one line naming a binary: path, --version,
#                              first 12 hex digits of its sha256
# bouncer_start NAME PGPORT POOL MAXCLIENT [KEY=VALUE ...]
#                              PgBouncer (Debian's) in session pool mode in a
#                              temp dir (ini, userlist, log, pid, socket),
#                              as the postgres user, on 127.0.0.1 and a free
#                              port, forwarding every database to
#                              127.0.0.1:PGPORT with `trust` auth (KEY=VALUE
#                              lines come later and win: auth_type=...; the
#                              userlist is $BOUNCER_USERLIST, default
#                              "postgres" "").  Sets
#                              BOUNCER_PID, BOUNCER_PORT, BOUNCER_DIR.
# tandem_start PORT LOG ARG... run "$TANDEM_BIN" ARG... in the background,
#                              output to LOG, wait until PORT accepts.
#                              Sets TANDEM_PID; false (log tail printed) when
#                              it exits or does not listen.
# tandem_start_bin BIN PORT LOG ARG...
#                              the same with the binary BIN (the baseline)
# bench_begin NAME             refuse to run (unless BENCH_FORCE=1) while
#                              another pgbench runs; set WORK (a temp dir),
#                              STAMP, RUNS_TSV and SUMMARY_TSV
#                              ($RESULTS_DIR/NAME-STAMP[-runs].tsv)
# log TEXT...                  a timestamped line on stderr
# bench_stop_procs             stop every PgBouncer/tandem started here and
#                              remove their temp dirs (for traps).
# proc_cpu_ticks PID           utime+stime of the whole process, in ticks
# proc_rss_kb PID              VmRSS in KiB
# CLK_TCK                      ticks per second

BENCH_ROOT=${BENCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
CLK_TCK=$(getconf CLK_TCK)
BENCH_PIDS=()
BENCH_DIRS=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

bench_begin() {
    if pgrep -x pgbench >/dev/null; then
        echo "$1: another pgbench is running; results would be skewed" >&2
        pgrep -a pgbench >&2
        [ "${BENCH_FORCE:-0}" = 1 ] || exit 1
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench-$1.XXXXXX")
    mkdir -p "$RESULTS_DIR"
    STAMP=$(date +%Y%m%d-%H%M%S)
    RUNS_TSV=$RESULTS_DIR/$1-$STAMP-runs.tsv
    SUMMARY_TSV=$RESULTS_DIR/$1-$STAMP.tsv
}

bench_ensure_deps() {
    local c missing=()
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || missing+=("$c")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ -x "$BENCH_ROOT/scripts/deps.sh" ] || [ -f "$BENCH_ROOT/scripts/deps.sh" ]; then
        echo "missing: ${missing[*]}; running scripts/deps.sh" >&2
        bash "$BENCH_ROOT/scripts/deps.sh" || return 1
    else
        echo "missing: ${missing[*]} (and scripts/deps.sh is not there to install them)" >&2
        return 1
    fi
}

bench_ensure_tandem() {
    TANDEM_BIN=${TANDEM_BIN:-$BENCH_ROOT/build/tandem}
    if [ ! -x "$TANDEM_BIN" ]; then
        echo "building tandem ($TANDEM_BIN is absent)" >&2
        cmake -S "$BENCH_ROOT" -B "$BENCH_ROOT/build" >/dev/null &&
            cmake --build "$BENCH_ROOT/build" -j"$(nproc)" --target tandem >/dev/null ||
            return 1
    fi
    [ -x "$TANDEM_BIN" ]
}

bench_ensure_baseline() {
    TANDEM_BASELINE_BIN=${TANDEM_BASELINE_BIN:-}
    [ -z "$TANDEM_BASELINE_BIN" ] && return 0
    if [ ! -x "$TANDEM_BASELINE_BIN" ] || [ -d "$TANDEM_BASELINE_BIN" ]; then
        echo "baseline tandem '$TANDEM_BASELINE_BIN' is not an executable file" >&2
        return 1
    fi
    TANDEM_BASELINE_BIN=$(cd "$(dirname "$TANDEM_BASELINE_BIN")" && pwd)/$(basename "$TANDEM_BASELINE_BIN")
}

bench_bin_id() {
    printf '%s (%s, sha256 %s)\n' "$1" "$("$1" --version 2>&1 | head -n 1)" \
        "$(sha256sum "$1" 2>/dev/null | cut -c1-12)"
}

proc_cpu_ticks() {
    # Fields 14 and 15 of /proc/PID/stat (after the parenthesised comm,
    # which may itself hold spaces): utime and stime of all threads.
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return 0; }
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

proc_rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null
}

bouncer_start() {
    local name=$1 pgport=$2 pool=$3 maxclient=$4 dir port kv i
    shift 4
    dir=$(mktemp -d "${TMPDIR:-/tmp}/tandem-bouncer-$name.XXXXXX") || return 1
    BENCH_DIRS+=("$dir")
    port=$(free_port)
    cat >"$dir/pgbouncer.ini" <<EOF
; generated by bench/lib.sh for a benchmark run
[databases]
* = host=127.0.0.1 port=$pgport

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $dir
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = session
default_pool_size = $pool
max_client_conn = $maxclient
max_db_connections = 0
listen_backlog = 4096
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
ignore_startup_parameters = extra_float_digits
EOF
    for kv in "$@"; do
        echo "${kv%%=*} = ${kv#*=}" >>"$dir/pgbouncer.ini"
    done
    printf '%s\n' "${BOUNCER_USERLIST:-\"postgres\" \"\"}" >"$dir/userlist.txt"
    if [ "$(id -u)" -eq 0 ]; then
        chown -R postgres:postgres "$dir"
    fi
    # -d: daemonize, so the pidfile names pgbouncer itself, not runuser.
    if ! _pgctl_as_pg /usr/sbin/pgbouncer -d "$dir/pgbouncer.ini" >"$dir/start.log" 2>&1; then
        echo "pgbouncer did not start:" >&2
        cat "$dir/start.log" >&2
        tail -n 20 "$dir/pgbouncer.log" >&2 2>/dev/null
        return 1
    fi
    for ((i = 0; i < 50; i++)); do
        [ -s "$dir/pgbouncer.pid" ] && break
        sleep 0.1
    done
    BOUNCER_PID=$(cat "$dir/pgbouncer.pid" 2>/dev/null)
    if [ -z "$BOUNCER_PID" ] || ! wait_port 127.0.0.1 "$port" 10; then
        echo "pgbouncer is not listening:" >&2
        tail -n 20 "$dir/pgbouncer.log" >&2 2>/dev/null
        return 1
    fi
    BENCH_PIDS+=("$BOUNCER_PID")
    BOUNCER_PORT=$port
    BOUNCER_DIR=$dir
}

# twemproxy_start DIR REDIS_PORT [WRAPPER ...]: Debian's nutcracker with one
# pool of the one redis-server at REDIS_PORT (one server connection, as
# twemproxy is deployed in front of a server), its config and log in DIR,
# run under WRAPPER when given (valgrind ...); sets TW_PORT and TW_PID.
twemproxy_start() {
    local dir=$1 server=$2
    shift 2
    TW_PORT=$(free_port)
    cat >"$dir/nutcracker.yml" <<EOF
bench:
  listen: 127.0.0.1:$TW_PORT
  redis: true
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: false
  server_connections: 1
  servers:
   - 127.0.0.1:$server:1
EOF
    "$@" nutcracker -c "$dir/nutcracker.yml" -o "$dir/nutcracker.log" -s "$(free_port)" \
        -a 127.0.0.1 >>"$dir/nutcracker.out" 2>&1 &
    TW_PID=$!
    BENCH_PIDS+=("$TW_PID")
    wait_port 127.0.0.1 "$TW_PORT" 60
}

tandem_start() {
    tandem_start_bin "$TANDEM_BIN" "$@"
}

tandem_start_bin() {
    local bin=$1 port=$2 log=$3 i
    shift 3
    "$bin" "$@" >"$log" 2>&1 &
    TANDEM_PID=$!
    BENCH_PIDS+=("$TANDEM_PID")
    for ((i = 0; i < 100; i++)); do
        if ! kill -0 "$TANDEM_PID" 2>/dev/null; then
            wait "$TANDEM_PID" 2>/dev/null
            echo "tandem exited at start ($bin $*):" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "tandem is not listening on 127.0.0.1:$port after 10s:" >&2
    tail -n 20 "$log" >&2
    return 1
}

# Stop one process we started: TERM, up to 5 s, then KILL.
bench_kill() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
}

bench_stop_procs() {
    local pid dir
    for pid in "${BENCH_PIDS[@]}"; do
        bench_kill "$pid"
    done
    for dir in "${BENCH_DIRS[@]}"; do
        rm -rf "$dir"
    done
    BENCH_PIDS=()
    BENCH_DIRS=()
}
