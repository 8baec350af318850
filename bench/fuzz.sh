#!/usr/bin/env bash
# fuzz.sh - the fuzz campaign: every libFuzzer target in tests/fuzz/, built
# with clang (-fsanitize=fuzzer,address,undefined) in build-fuzz/, run over a
# copy of its seed corpus (tests/fuzz/corpus/<target>/), two at a time (one
# core each), then a table:
#
#   target  executions  edges (libFuzzer cov:)  corpus (files)  findings
#
#   bench/fuzz.sh                       60 s per target
#   FUZZ_SECONDS=600 bench/fuzz.sh      10 minutes each
#   FUZZ_RUNS=10000000 bench/fuzz.sh    ten million executions each
#   bench/fuzz.sh fuzz_pgw fuzz_resp    only these
#   FUZZ_TIMEOUT=60 bench/fuzz.sh       seconds one input may take (default 10)
#
# A timeout is a wall-clock alarm: on a loaded machine (nice 19 beside other
# work) a starved process can miss it on an input that takes milliseconds.
# Every timeout input is therefore run once more, alone: one that passes is
# moved to $FUZZ_WORK/unreproduced-<target>/ and shown as such, not counted.
#
# Findings (crash, leak, timeout, OOM inputs) land in tests/fuzz/artifacts/:
# reproduce with build-fuzz/tests/<target> FILE; once fixed, copy the input
# into tests/fuzz/corpus/<target>/ so ctest's fuzz_replay.<target> replays it
# on every build.  The grown corpora stay in $FUZZ_WORK (default a temp dir)
# and are not merged back: the seeds in the repository stay small.
# Exits 1 when any target had a finding.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_EACH=${FUZZ_SECONDS:-60}
RUNS=${FUZZ_RUNS:-}
JOBS=${FUZZ_JOBS:-2}
TIMEOUT=${FUZZ_TIMEOUT:-10}
WORK=${FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/tandem-fuzz.XXXXXX")}
mkdir -p "$WORK"

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(find tests/fuzz -maxdepth 1 -name 'fuzz_*.c' -printf '%f\n' | sed 's/\.c$//' | sort)
fi

CC=clang cmake -S . -B build-fuzz -DTANDEM_FUZZ=ON >/dev/null || exit 1
cmake --build build-fuzz -j "$JOBS" --target "${targets[@]}" >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log"
    exit 1
}
mkdir -p tests/fuzz/artifacts

run_one() { # run_one NAME
    local name=$1 corpus="$WORK/corpus-$name" art="$WORK/artifacts-$name/"
    mkdir -p "$corpus" "$art"
    [[ -d tests/fuzz/corpus/$name ]] && cp -r "tests/fuzz/corpus/$name/." "$corpus/"
    local limit=(-max_total_time="$SECONDS_EACH")
    [[ -n $RUNS ]] && limit=(-runs="$RUNS")
    # -fork-less, one process: a finding stops the target (its input is saved)
    "build-fuzz/tests/$name" "${limit[@]}" -timeout="$TIMEOUT" -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$art" "$corpus" >"$WORK/$name.log" 2>&1
    echo $? >"$WORK/$name.rc"
    local f
    for f in "$art"timeout-*; do
        [[ -f $f ]] || continue
        if "build-fuzz/tests/$name" -timeout="$TIMEOUT" "$f" >/dev/null 2>&1; then
            mkdir -p "$WORK/unreproduced-$name"
            mv "$f" "$WORK/unreproduced-$name/"
        fi
    done
    cp "$art"* tests/fuzz/artifacts/ 2>/dev/null || true
}

start=$SECONDS
running=0
for name in "${targets[@]}"; do
    run_one "$name" &
    running=$((running + 1))
    if ((running >= JOBS)); then
        wait -n
        running=$((running - 1))
    fi
done
wait

printf '\n%-20s %14s %8s %8s %9s %12s\n' target executions edges corpus findings unreproduced
status=0
for name in "${targets[@]}"; do
    log="$WORK/$name.log"
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+')
    files=$(find "$WORK/corpus-$name" -type f | wc -l)
    found=$(find "$WORK/artifacts-$name" -type f | wc -l)
    gone=$(find "$WORK/unreproduced-$name" -type f 2>/dev/null | wc -l)
    ((found > 0)) && status=1
    printf '%-20s %14s %8s %8s %9s %12s\n' "$name" "${execs:-?}" "${cov:-?}" "$files" "$found" "$gone"
done
echo "($((SECONDS - start)) s; logs and grown corpora in $WORK)"
exit $status
