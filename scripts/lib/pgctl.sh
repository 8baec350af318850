# shellcheck shell=bash
#
# pgctl.sh - throwaway PostgreSQL 15 servers and port helpers, shared by
# scripts/demo.sh and the benchmarks in bench/.  Source it; it runs nothing
# by itself:
#
#     . "$ROOT/scripts/lib/pgctl.sh"
#     trap pgctl_stop_all EXIT
#     pgctl_start blue                      # or: pgctl_start blue max_connections=1100
#     psql -h 127.0.0.1 -p "$PGCTL_PORT" -U postgres -c 'select 1'
#     pgctl_stop "$PGCTL_DIR"               # or let pgctl_stop_all do it
#
# pgctl_start NAME [KEY=VALUE ...]
#     initdb + start a server in a new temp dir (mktemp, owned by the postgres
#     system user; initdb refuses root, so under root every server command
#     runs through `runuser -u postgres --`).  The server listens on
#     127.0.0.1 and a free port, with its unix socket in the temp dir, and is
#     tuned for throwaway use: fsync=off, synchronous_commit=off,
#     full_page_writes=off, shared_buffers=128MB, max_connections=300, `trust`
#     authentication for local and loopback connections only.  Each KEY=VALUE
#     is appended to postgresql.conf (it overrides the defaults above).
#     Sets PGCTL_DIR (temp dir: data/, postgres.log, socket) and PGCTL_PORT,
#     and remembers the dir for pgctl_stop_all.  Returns non-zero (and prints
#     the log's tail) when the server does not come up.
# pgctl_stop DIR      fast shutdown, then remove DIR.  Safe to call twice.
# pgctl_stop_all      pgctl_stop every server this shell started (for traps).
# free_port           print a TCP port on 127.0.0.1 that is free right now.
# port_is_free PORT   true when 127.0.0.1:PORT can be bound right now.
# wait_port HOST PORT [SECONDS]
#                     wait until HOST:PORT accepts a TCP connection
#                     (default 15 s); false on timeout.
#
# Environment: PGCTL_BIN (default /usr/lib/postgresql/15/bin),
# PGCTL_TMP (parent of the temp dirs, default ${TMPDIR:-/tmp}).
# Nothing here uses a network address other than 127.0.0.1.

PGCTL_BIN=${PGCTL_BIN:-/usr/lib/postgresql/15/bin}
PGCTL_DIRS=()

# The python used for port probes: Debian's, not whatever PATH prefers.
_pgctl_py() { /usr/bin/python3 "$@"; }

free_port() {
    _pgctl_py -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

port_is_free() {
    _pgctl_py -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

wait_port() {
    local host=$1 port=$2 secs=${3:-15} i
    for ((i = 0; i < secs * 10; i++)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "wait_port: $host:$port not accepting after ${secs}s" >&2
    return 1
}

# Run a command as the postgres system user when we are root, as ourselves
# otherwise; always from / so the user can read its working directory.
# runuser's PAM session resets the soft open-files limit (to 1024 here): the
# command gets the caller's limit back, which a proxy holding thousands of
# connections needs.
_pgctl_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u postgres -- /bin/sh -c 'ulimit -n "$0" 2>/dev/null; exec "$@"' \
            "$(ulimit -n)" "$@")
    else
        (cd / && "$@")
    fi
}

pgctl_start() {
    local name=${1:?pgctl_start NAME [KEY=VALUE ...]}
    shift
    local dir port kv
    dir=$(mktemp -d "${PGCTL_TMP:-${TMPDIR:-/tmp}}/tandem-pg-$name.XXXXXX") || return 1
    chmod 0755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir"
    fi
    PGCTL_DIRS+=("$dir")

    if ! _pgctl_as_pg "$PGCTL_BIN/initdb" -D "$dir/data" -U postgres \
        --auth=trust --encoding=UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1; then
        echo "pgctl: initdb failed for '$name':" >&2
        tail -n 20 "$dir/initdb.log" >&2
        return 1
    fi

    port=$(free_port) || return 1
    {
        echo
        echo "# pgctl.sh: throwaway server '$name'"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir'"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "full_page_writes = off"
        echo "shared_buffers = 128MB"
        echo "max_connections = 300"
        echo "logging_collector = off"
        echo "log_min_messages = warning"
        for kv in "$@"; do
            echo "${kv%%=*} = '${kv#*=}'"
        done
    } >>"$dir/data/postgresql.conf"

    if ! _pgctl_as_pg "$PGCTL_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" \
        -w -t 60 start >"$dir/pg_ctl.log" 2>&1; then
        echo "pgctl: PostgreSQL '$name' did not start:" >&2
        tail -n 20 "$dir/postgres.log" >&2
        return 1
    fi
    PGCTL_DIR=$dir
    PGCTL_PORT=$port
}

pgctl_stop() {
    local dir=$1 pid
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    if [ -f "$dir/data/postmaster.pid" ]; then
        if ! _pgctl_as_pg "$PGCTL_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 \
            stop >/dev/null 2>&1; then
            pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
            [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null
            sleep 1
        fi
    fi
    rm -rf "$dir"
}

pgctl_stop_all() {
    local dir
    for dir in "${PGCTL_DIRS[@]}"; do
        pgctl_stop "$dir"
    done
    PGCTL_DIRS=()
}
