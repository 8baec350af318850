#!/usr/bin/env bash
#
# bench/redis-suite.sh - Redis's own test suite through tandem.
#
# The suite of the source package Debian ships (redis 7.0.15, the version of
# Debian's redis-server; fetched once and verified by
# scripts/redis-suite-src.sh) in external-server mode (`runtest --host
# --port`, which skips by itself every test tagged external:skip: those
# start servers of their own), three ways:
#   direct       against a redis-server
#   passthrough  through `tandem redis --primary` to one
#   shadow       through `tandem redis --mode shadow --mirror-reads 100%`,
#                with a second redis-server as the shadow
# Every test file runs on its own, on fresh servers (and a fresh tandem):
# a file that aborts (an exception ends a file, and leaves its CONFIG SET
# overrides behind) touches no other file, and in shadow mode the primary's
# and the shadow's data are compared after each file.  The servers get what
# Redis's own external-server CI gives them: --enable-debug-command,
# --enable-protected-configs and --enable-module-command yes, --save "".
# Tags excluded by default: `slow` (as Redis's external CI does).
#
# Reported: tests passed / failed / not run per mode ("not run": passed or
# failed directly, but never reached in that mode because an exception
# ended its file), the tests that fail only through tandem, and for shadow
# mode tandem's figures from /metrics (compared operations by outcome,
# noise, dropped mirrors by reason, diverged) and the files after which the
# shadow's data differ from the primary's (DEBUG DIGEST, then per key
# DEBUG DIGEST-VALUE / TYPE to name the keys).
#
# Usage: bench/redis-suite.sh [--files "unit/type/list unit/expire ..."]
#          [--modes "direct passthrough shadow"] [--jobs N] [--tags "-slow"]
#          [--mirror-reads P] [--timeout S] [--workers N] [--keep]
#   --files   test files (default: every file of the suite's ::all_tests)
#   --jobs    test files run at once, each on its own servers (default 2;
#             runtest itself runs one test client against an external server)
#   --tags    runtest's --tags (default "-slow"; "" for every test)
#   --timeout runtest's per-file silence timeout in seconds (default 120): a
#             test waiting for ever (a blocked client never served) ends there
#   --workers tandem's worker threads (default: tandem's own default)
#   --keep    keep the work dir (every file's output, metrics, key diffs)
# Environment: TANDEM_BIN=build/tandem, TANDEM_CACHE_DIR (the tarball's cache)
#
# Output: the table on stdout; each run's runtest output under the work dir
# (kept with --keep, its path printed).  Exit 0 when no test fails only
# through tandem, 1 otherwise.  Everything started here is stopped on exit.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh" # free_port
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

FILES=${FILES:-}
MODES=${MODES:-direct passthrough shadow}
JOBS=${JOBS:-2}
TAGS=${TAGS--slow}
MIRROR_READS=${MIRROR_READS:-100%}
TIMEOUT=${TIMEOUT:-120}
WORKERS=${WORKERS:-}
KEEP=0

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
    --files) FILES=$2; shift ;;
    --modes) MODES=$2; shift ;;
    --jobs | --clients) JOBS=$2; shift ;;
    --tags) TAGS=$2; shift ;;
    --mirror-reads) MIRROR_READS=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --keep) KEEP=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "redis-suite.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for m in $MODES; do
    case $m in direct | passthrough | shadow) ;;
    *) echo "redis-suite.sh: unknown mode '$m'" >&2; exit 2 ;;
    esac
done

cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in $(jobs -p); do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bench_stop_procs
    if [ "$KEEP" = 1 ]; then
        echo "work dir kept: $WORK" >&2
    elif [ -n "${WORK:-}" ]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'echo; echo "interrupted; cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM

bench_ensure_deps redis-server redis-cli redis-benchmark tclsh curl
bench_ensure_tandem || { echo "redis-suite.sh: no tandem binary" >&2; exit 1; }
TARBALL=$("$ROOT/scripts/redis-suite-src.sh") || exit 1

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-redis-suite.XXXXXX")
SRC=$WORK/src
mkdir -p "$SRC"
tar -xzf "$TARBALL" -C "$SRC" --strip-components=1
# The suite runs src/redis-cli and src/redis-benchmark (and, for the tests
# external mode skips, src/redis-server): Debian's, the same version.
for b in redis-server redis-cli redis-benchmark; do
    ln -sf "$(command -v $b)" "$SRC/src/$b"
done
if [ -z "$FILES" ]; then
    FILES=$(sed -n '/^set ::all_tests {/,/^}/{/^ /p}' "$SRC/tests/test_helper.tcl" | tr -s ' \n' ' ')
fi


# redis_start DIR: a throwaway redis-server configured as Redis's external
# CI configures it, in DIR; sets REDIS_PORT (retries on a port race).
redis_start() {
    local dir=$1 try
    mkdir -p "$dir"
    for try in 1 2 3; do
        REDIS_PORT=$(free_port)
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --dir "$dir" --logfile "$dir/redis.log" --enable-debug-command yes \
            --enable-protected-configs yes --enable-module-command yes &
        BENCH_PIDS+=($!)
        wait_port 127.0.0.1 "$REDIS_PORT" 10 && return 0
    done
    echo "redis-server did not start in $dir" >&2
    return 1
}

# metric NAME TEXT: the sum of NAME's samples in a /metrics TEXT.
metric_sum() {
    awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $2 } END { print s + 0 }' <<<"$2"
}

# shadow_settle ADMIN: up to 30 s for the mirrors to drain (no queued
# mirror bytes, no unit waiting for a backend).
shadow_settle() {
    local i m
    for ((i = 0; i < 150; i++)); do
        m=$(curl -fsS "http://127.0.0.1:$1/metrics" 2>/dev/null) || { sleep 0.2; continue; }
        if [ "$(metric_sum tandem_shadow_queue_bytes "$m")" = 0 ] &&
            [ "$(metric_sum tandem_shadow_units_open "$m")" = 0 ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# run_file MODE FILE SLOT: one test file, in a subshell with servers of its own.
run_file() {
    local mode=$1 file=$2 slot=$3
    local out=$WORK/out/$mode/${file//\//__} tree=$WORK/tree-$slot dir=$WORK/run-$slot-$mode
    BENCH_PIDS=()
    trap 'bench_stop_procs; rm -rf "$dir"' EXIT
    trap 'exit 143' TERM
    rm -rf "$dir"
    redis_start "$dir/primary" || return 1
    local primary=$REDIS_PORT port=$REDIS_PORT admin='' shadow=''
    if [ "$mode" != direct ]; then
        port=$(free_port) admin=$(free_port)
        local args=(redis --listen "127.0.0.1:$port" --primary "blue=127.0.0.1:$primary"
            --admin "127.0.0.1:$admin")
        [ -n "$WORKERS" ] && args+=(--workers "$WORKERS")
        if [ "$mode" = shadow ]; then
            redis_start "$dir/shadow" || return 1
            shadow=$REDIS_PORT
            args+=(--shadow "green=127.0.0.1:$shadow" --mode shadow --mirror-reads "$MIRROR_READS")
        fi
        tandem_start "$port" "$out.tandem.log" "${args[@]}" || return 1
    fi
    # runtest's own test server listens on a port of the 32 below --baseport
    # (and checks the one 10000 above), the fake servers some tests start on
    # ports of --portcount from it: a block of 100 per slot and try, offset
    # per invocation, so files run at once never pick the same; again on a race
    local try
    for try in 1 2 3; do
        (cd "$tree" && TERM=dumb timeout $((TIMEOUT * 3)) ./runtest --host 127.0.0.1 --port "$port" \
            --single "$file" --tags "$TAGS" --timeout "$TIMEOUT" \
            --baseport $((PORT_BASE + (slot + try * JOBS) * 100 + 32)) --portcount 60 \
            >"$out.txt" 2>&1) || true
        grep -q "^couldn't open socket" "$out.txt" || break
    done
    if [ "$mode" = shadow ]; then
        shadow_settle "$admin" || echo "the mirrors did not drain in 30 s" >"$out.undrained"
    fi
    if [ -n "$admin" ]; then
        curl -fsS "http://127.0.0.1:$admin/metrics" >"$out.metrics" 2>/dev/null || true
        curl -fsS "http://127.0.0.1:$admin/api/shadow/report" >"$out.report.json" 2>/dev/null || true
    fi
    if [ "$mode" = shadow ]; then
        /usr/bin/python3 "$ROOT/bench/redis_suite_report.py" keydiff "$primary" "$shadow" \
            >"$out.keys" 2>&1 || true
    fi
}

mkdir -p "$WORK/out"
for m in $MODES; do mkdir -p "$WORK/out/$m"; done
for ((slot = 0; slot < JOBS; slot++)); do
    cp -a "$SRC" "$WORK/tree-$slot"
done

PORT_BASE=$((20000 + RANDOM % 50 * 100))
NFILES=$(wc -w <<<"$FILES")
log "$NFILES test files x modes ($MODES), $JOBS at once, tags '${TAGS}'; tandem: $(bench_bin_id "$TANDEM_BIN")"
# a job per (file, mode), file-major, JOBS at once; a slot is a source tree
declare -A SLOT_OF=()
free_slots=()
for ((slot = 0; slot < JOBS; slot++)); do free_slots+=("$slot"); done
n=0
for f in $FILES; do
    for m in $MODES; do
        while [ ${#free_slots[@]} -eq 0 ]; do
            wait -n 2>/dev/null || true
            for pid in "${!SLOT_OF[@]}"; do
                if ! kill -0 "$pid" 2>/dev/null; then
                    free_slots+=("${SLOT_OF[$pid]}")
                    unset "SLOT_OF[$pid]"
                fi
            done
        done
        slot=${free_slots[0]}
        free_slots=("${free_slots[@]:1}")
        n=$((n + 1))
        log "[$n] $m $f"
        run_file "$m" "$f" "$slot" &
        SLOT_OF[$!]=$slot
    done
done
wait

rc=0
/usr/bin/python3 "$ROOT/bench/redis_suite_report.py" report "$WORK/out" "$MODES" "$FILES" || rc=$?
echo
echo "redis test suite $(basename "$TARBALL"), tags '${TAGS}', $JOBS files at once, $(nproc) CPUs; shadow mode mirrors reads $MIRROR_READS; tandem workers ${WORKERS:-default}"
echo "tandem: $(bench_bin_id "$TANDEM_BIN")"
echo "$(redis-server --version | head -n 1)"
exit $rc
