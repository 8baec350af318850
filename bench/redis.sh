#!/usr/bin/env bash
#
# bench/redis.sh - tandem side by side with direct Redis and twemproxy.
#
# Two throwaway redis-servers (no persistence) and, in front of the first,
# started once each and all on loopback:
#   direct     redis-benchmark straight to redis-server
#   twemproxy  Debian's nutcracker, one pool with the one server
#   tandem     tandem redis --listen ... --primary ... (passthrough)
#   shadow     tandem redis --mode shadow, mirroring writes (and 10% of
#              reads) to the second redis-server
#
# For each pipeline depth (redis-benchmark -P 1 and -P 16) the targets run
# in alternation: direct, twemproxy, tandem, shadow, direct, ... for ROUNDS
# rounds, each run `redis-benchmark -t set,get,incr,lpush,mset -n REQUESTS
# -c CLIENTS`, so drift of the machine spreads over all of them.  Reported
# per pipeline depth and command: median requests/s per target, the ratios
# tandem/twemproxy, tandem/direct, shadow/tandem, and each proxy's CPU time
# per request (utime+stime from /proc/PID/stat around each run, divided by
# the run's requests, in microseconds, median over rounds).
#
# Before/after: --baseline BIN (or TANDEM_BASELINE_BIN=BIN) starts both
# tandems (passthrough and shadow) a second time, alike, from BIN, and runs
# each as one more target right beside its twin (tandem_base, shadow_base;
# the twin goes first in odd rounds, the baseline in even ones).  The report
# then adds tandem(base), the ratio tandem/base of the median requests/s and
# of the CPU per request (below 1: the change costs less CPU), and the same
# for shadow.  Both shadows mirror to the same second redis-server.
#
# Usage: bench/redis.sh [--quick] [--rounds R] [--requests N] [--clients C]
#                       [--workers N] [--baseline BIN]
# Environment (flags win): ROUNDS=3 REQUESTS=200000 CLIENTS=50 WORKERS=2
#   PIPELINES="1 16" TESTS=set,get,incr,lpush,mset
#   TANDEM_BIN=build/tandem TANDEM_BASELINE_BIN= RESULTS_DIR=bench/results
# --quick: ROUNDS=1 REQUESTS=50000, under a minute.
#
# Output: a table on stdout, the same rows as TSV in
# $RESULTS_DIR/redis-<date>.tsv, every single run in redis-<date>-runs.tsv.
# Everything started here is stopped on exit, also on Ctrl-C.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../scripts/lib/pgctl.sh
. "$ROOT/scripts/lib/pgctl.sh" # free_port
# shellcheck source=lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
WORKERS=${WORKERS:-2}
PIPELINES=${PIPELINES:-1 16}
TESTS=${TESTS:-set,get,incr,lpush,mset}
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}

usage() { sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; }

while [ $# -gt 0 ]; do
    case $1 in
    --quick) ROUNDS=1 REQUESTS=50000 ;;
    --rounds) ROUNDS=$2; shift ;;
    --requests) REQUESTS=$2; shift ;;
    --clients) CLIENTS=$2; shift ;;
    --workers) WORKERS=$2; shift ;;
    --baseline) TANDEM_BASELINE_BIN=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "redis.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REDIS_PIDS=()
cleanup() {
    trap - EXIT INT TERM
    bench_stop_procs
    local pid
    for pid in "${REDIS_PIDS[@]}"; do
        bench_kill "$pid"
    done
    [ -n "${WORK:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "interrupted; cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM

bench_ensure_deps redis-server redis-benchmark redis-cli nutcracker
bench_ensure_tandem || { echo "redis.sh: no tandem binary" >&2; exit 1; }
bench_ensure_baseline || exit 1
BASE=$TANDEM_BASELINE_BIN

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tandem-bench-redis.XXXXXX")
mkdir -p "$RESULTS_DIR"
STAMP=$(date +%Y%m%d-%H%M%S)
RUNS_TSV=$RESULTS_DIR/redis-$STAMP-runs.tsv
SUMMARY_TSV=$RESULTS_DIR/redis-$STAMP.tsv


# local_port_up PORT: pgctl.sh's wait_port on 127.0.0.1:PORT for 10 s, saying so when nothing listens.
local_port_up() {
    wait_port 127.0.0.1 "$1" 10 && return 0
    echo "nothing listens on 127.0.0.1:$1 after 10s" >&2
    return 1
}

# redis_start NAME: a redis-server in $WORK/NAME; sets REDIS_PORT.
redis_start() {
    local name=$1
    mkdir -p "$WORK/$name"
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK/$name" --logfile "$WORK/$name/redis.log" &
    REDIS_PIDS+=($!)
    local_port_up "$REDIS_PORT"
}

# --- servers ---------------------------------------------------------------

log "starting two redis-servers"
redis_start blue
BLUE_PORT=$REDIS_PORT
redis_start green
GREEN_PORT=$REDIS_PORT

log "starting twemproxy (nutcracker)"
twemproxy_start "$WORK" "$BLUE_PORT" || exit 1

# start_tandems BIN SUFFIX: passthrough and shadow from BIN; sets
# TD_PID$SUFFIX, TANDEM_PORT$SUFFIX, SD_PID$SUFFIX, SHADOW_PORT$SUFFIX.
start_tandems() {
    local bin=$1 sfx=$2 port
    port=$(free_port)
    log "starting tandem passthrough ($WORKERS workers, $bin)"
    tandem_start_bin "$bin" "$port" "$WORK/tandem$sfx.log" redis \
        --listen "127.0.0.1:$port" --primary "127.0.0.1:$BLUE_PORT" --workers "$WORKERS" || exit 1
    printf -v "TANDEM_PORT$sfx" %s "$port"
    printf -v "TD_PID$sfx" %s "$TANDEM_PID"

    port=$(free_port)
    log "starting tandem shadow mode ($WORKERS workers, $bin)"
    tandem_start_bin "$bin" "$port" "$WORK/tandem-shadow$sfx.log" redis \
        --listen "127.0.0.1:$port" --primary "127.0.0.1:$BLUE_PORT" \
        --shadow "127.0.0.1:$GREEN_PORT" --mode shadow --mirror-reads 10% --workers "$WORKERS" || exit 1
    printf -v "SHADOW_PORT$sfx" %s "$port"
    printf -v "SD_PID$sfx" %s "$TANDEM_PID"
}
TD_PID_BASE='' TANDEM_PORT_BASE='' SD_PID_BASE='' SHADOW_PORT_BASE=''
start_tandems "$TANDEM_BIN" ""
[ -n "$BASE" ] && start_tandems "$BASE" _BASE

port_of() {
    case $1 in
    direct) echo "$BLUE_PORT" ;;
    twemproxy) echo "$TW_PORT" ;;
    tandem) echo "$TANDEM_PORT" ;;
    shadow) echo "$SHADOW_PORT" ;;
    tandem_base) echo "$TANDEM_PORT_BASE" ;;
    shadow_base) echo "$SHADOW_PORT_BASE" ;;
    esac
}
pid_of() {
    case $1 in
    direct) echo "" ;;
    twemproxy) echo "$TW_PID" ;;
    tandem) echo "$TD_PID" ;;
    shadow) echo "$SD_PID" ;;
    tandem_base) echo "$TD_PID_BASE" ;;
    shadow_base) echo "$SD_PID_BASE" ;;
    esac
}

# round_targets ROUND: the targets of one round; with a baseline each tandem
# is followed (odd rounds) or preceded (even rounds) by its baseline twin.
round_targets() {
    if [ -z "$BASE" ]; then
        echo "direct twemproxy tandem shadow"
    elif (($1 % 2)); then
        echo "direct twemproxy tandem tandem_base shadow shadow_base"
    else
        echo "direct twemproxy tandem_base tandem shadow_base shadow"
    fi
}

# --- runs ------------------------------------------------------------------

NTESTS=$(tr ',' '\n' <<<"$TESTS" | grep -c .)

# run_one PIPELINE TARGET ROUND: one redis-benchmark run, one line per command in RUNS_TSV.
run_one() {
    local pipeline=$1 target=$2 round=$3 port pid t0 t1 out rc
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    out=$WORK/run-$pipeline-$target-$round.csv
    t0=0
    [ -n "$pid" ] && t0=$(proc_cpu_ticks "$pid")
    rc=0
    redis-benchmark -h 127.0.0.1 -p "$port" -n "$REQUESTS" -c "$CLIENTS" -P "$pipeline" \
        -t "$TESTS" -r 100000 --csv >"$out" 2>"$out.err" || rc=$?
    t1=0
    [ -n "$pid" ] && t1=$(proc_cpu_ticks "$pid")
    if [ "$rc" -ne 0 ] || grep -qi error "$out" "$out.err"; then
        log "  redis-benchmark against $target failed (exit $rc):"
        tail -n 5 "$out" "$out.err" | sed 's/^/    /' >&2
        printf '%s\t%s\t%s\tfail\t0\t0\n' "$pipeline" "$target" "$round" >>"$RUNS_TSV"
        return 0
    fi
    # "SET","86206.90",... ; MSET's name holds a space: "MSET (10 keys)"
    awk -F'","' -v p="$pipeline" -v t="$target" -v r="$round" -v cpu=$((t1 - t0)) -v k="$NTESTS" \
        'NR > 1 { split(substr($1, 2), w, " "); printf "%s\t%s\t%s\t%s\t%s\t%.2f\n", p, t, r, w[1], $2, cpu / k }' \
        "$out" >>"$RUNS_TSV"
    log "  -P $pipeline $target round $round: $(awk -F'","' 'NR > 1 { printf "%s %s  ", substr($1, 2), $2 }' "$out")"
}

printf 'pipeline\ttarget\tround\tcommand\trps\tcpu_ticks\n' >"$RUNS_TSV"
for pipeline in $PIPELINES; do
    log "-P $pipeline: $ROUNDS rounds of $REQUESTS requests per command, -c $CLIENTS ($(round_targets 1))"
    for ((round = 1; round <= ROUNDS; round++)); do
        for target in $(round_targets "$round"); do
            run_one "$pipeline" "$target" "$round"
        done
    done
done

# Did the shadow get every write?  Give the mirrors a moment, then compare.
for _ in $(seq 20); do
    blue=$(redis-cli -p "$BLUE_PORT" dbsize) green=$(redis-cli -p "$GREEN_PORT" dbsize)
    [ "$blue" = "$green" ] && break
    sleep 0.5
done
SHADOW_NOTE="keys after the runs: primary $blue, shadow $green (the shadow gets only the shadow runs' writes)"
[ -n "$BASE" ] && SHADOW_NOTE="$SHADOW_NOTE; both shadow and shadow_base mirror to that one server"

# --- report ----------------------------------------------------------------

/usr/bin/python3 - "$RUNS_TSV" "$SUMMARY_TSV" "$CLK_TCK" "$REQUESTS" <<'PY'
import csv, statistics, sys

runs_path, summary_path, clk_tck, requests = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
runs, order = {}, []
with open(runs_path) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        if r["rps"] == "fail":
            continue
        key = (r["pipeline"], r["command"])
        if key not in runs:
            runs[key] = {}
            order.append(key)
        runs[key].setdefault(r["target"], []).append(r)

def med(v):
    return statistics.median(v) if v else None

def ratio(a, b):
    return a / b if a is not None and b else None

targets = ("direct", "twemproxy", "tandem", "shadow")
bases = ("tandem_base", "shadow_base")
# the baseline's columns come after the others, so the file keeps its layout
cols = ["pipeline", "command"] + [f"{t}_rps" for t in targets] + [
    "tandem/twemproxy", "tandem/direct", "twemproxy/direct", "shadow/tandem",
    "twemproxy_cpu_us_req", "tandem_cpu_us_req", "shadow_cpu_us_req"]
base_cols = ["tandem_base_rps", "shadow_base_rps", "tandem/base", "shadow/base",
             "tandem_base_cpu_us_req", "shadow_base_cpu_us_req", "tandem/base_cpu", "shadow/base_cpu"]
rows = []
for key in order:
    t = runs[key]
    rps = {n: med([float(r["rps"]) for r in t.get(n, [])]) for n in targets + bases}
    # a run's CPU is shared evenly by its commands (they run one after another)
    cpu = {n: med([float(r["cpu_ticks"]) * 1e6 / clk_tck / requests for r in t.get(n, [])])
           for n in targets[1:] + bases}
    rows.append({"pipeline": key[0], "command": key[1],
                 **{f"{n}_rps": rps[n] for n in targets + bases},
                 "tandem/twemproxy": ratio(rps["tandem"], rps["twemproxy"]),
                 "tandem/direct": ratio(rps["tandem"], rps["direct"]),
                 "twemproxy/direct": ratio(rps["twemproxy"], rps["direct"]),
                 "shadow/tandem": ratio(rps["shadow"], rps["tandem"]),
                 "twemproxy_cpu_us_req": cpu["twemproxy"], "tandem_cpu_us_req": cpu["tandem"],
                 "shadow_cpu_us_req": cpu["shadow"],
                 "tandem/base": ratio(rps["tandem"], rps["tandem_base"]),
                 "shadow/base": ratio(rps["shadow"], rps["shadow_base"]),
                 "tandem_base_cpu_us_req": cpu["tandem_base"],
                 "shadow_base_cpu_us_req": cpu["shadow_base"],
                 "tandem/base_cpu": ratio(cpu["tandem"], cpu["tandem_base"]),
                 "shadow/base_cpu": ratio(cpu["shadow"], cpu["shadow_base"])})

def fmt(c, v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if c.endswith("_rps"):
        return "%.0f" % v
    if "/" in c:
        return "%.2f" % v
    return "%.2f" % v

has_base = any(r["tandem_base_rps"] is not None or r["shadow_base_rps"] is not None for r in rows)
with open(summary_path, "w") as f:
    out_cols = cols + (base_cols if has_base else [])
    f.write("\t".join(out_cols) + "\n")
    for r in rows:
        f.write("\t".join(fmt(c, r[c]) for c in out_cols) + "\n")

def print_table(show, heads, rows, left):
    table = [[heads[c] for c in show]] + [[fmt(c, r[c]) for c in show] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(show))]
    for i, row in enumerate(table):
        print("  ".join(s.ljust(w) if j < left else s.rjust(w) for j, (s, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))

def gm(v):
    v = [x for x in v if x]
    if not v:
        return "-"
    prod = 1.0
    for x in v:
        prod *= x
    return "%.2f" % prod ** (1 / len(v))

heads = {"pipeline": "-P", "command": "cmd", "direct_rps": "direct", "twemproxy_rps": "twem",
         "tandem_rps": "tandem", "shadow_rps": "shadow", "tandem/twemproxy": "tdm/twem",
         "tandem/direct": "tdm/dir", "twemproxy/direct": "twem/dir",
         "shadow/tandem": "shd/tdm", "twemproxy_cpu_us_req": "twem us/req",
         "tandem_cpu_us_req": "tdm us/req", "shadow_cpu_us_req": "shd us/req"}
print()
print("median requests/s; ratios of medians; proxy CPU (user+sys) per request in microseconds")
print_table(cols, heads, rows, 2)
for p in sorted({r["pipeline"] for r in rows}, key=int):
    sel = [r for r in rows if r["pipeline"] == p]
    print(f"-P {p} geometric mean over commands: tandem/twemproxy {gm(r['tandem/twemproxy'] for r in sel)}, "
          f"tandem/direct {gm(r['tandem/direct'] for r in sel)}, twemproxy/direct {gm(r['twemproxy/direct'] for r in sel)}, "
          f"shadow/tandem {gm(r['shadow/tandem'] for r in sel)}")

if has_base:
    ba = []
    for r in rows:
        for n, cfg in (("tandem", "passthrough"), ("shadow", "shadow")):
            ba.append({"pipeline": r["pipeline"], "command": r["command"], "config": cfg,
                       "t_rps": r[f"{n}_rps"], "b_rps": r[f"{n}_base_rps"], "t/b": r[f"{n}/base"],
                       "t_cpu": r[f"{n}_cpu_us_req"], "b_cpu": r[f"{n}_base_cpu_us_req"],
                       "t/b_cpu": r[f"{n}/base_cpu"]})
    ba.sort(key=lambda r: (int(r["pipeline"]), r["config"] != "passthrough"))
    bheads = {"pipeline": "-P", "command": "cmd", "config": "config", "t_rps": "tandem",
              "b_rps": "tandem(base)", "t/b": "tandem/base", "t_cpu": "us/req",
              "b_cpu": "us/req(base)", "t/b_cpu": "us/req tandem/base"}
    print()
    print("before/after: TANDEM_BIN (tandem) against TANDEM_BASELINE_BIN (tandem(base)), same runs;")
    print("median requests/s and its ratio (above 1: faster), CPU per request and its ratio (below 1: cheaper)")
    print_table(list(bheads), bheads, ba, 3)
    for p in sorted({r["pipeline"] for r in ba}, key=int):
        for cfg in ("passthrough", "shadow"):
            sel = [r for r in ba if r["pipeline"] == p and r["config"] == cfg]
            print(f"-P {p} {cfg}: geometric mean over commands: requests/s tandem/base "
                  f"{gm(r['t/b'] for r in sel)}, CPU per request tandem/base {gm(r['t/b_cpu'] for r in sel)}")
PY

echo
echo "clients $CLIENTS, $REQUESTS requests per command x $ROUNDS rounds, tandem workers $WORKERS, $(nproc) CPUs"
echo "tandem: $(bench_bin_id "$TANDEM_BIN")"
[ -n "$BASE" ] && echo "tandem(base): $(bench_bin_id "$BASE")"
echo "$(redis-server --version | head -n 1); $(nutcracker -V 2>&1 | head -n 1)"
echo "$SHADOW_NOTE"
echo "results: $SUMMARY_TSV"
echo "runs:    $RUNS_TSV"
