#!/usr/bin/env bash
# test.sh - everything CI checks, in order; the README's "run the tests".
#
#   1. deps      scripts/deps.sh (fast and offline when all is installed)
#   2. build     build/ with -DTANDEM_WERROR=ON
#   3. ctest     unit tests, fuzz replays, integration (pytest, real servers)
#   4. fuzz      clang build in build-fuzz/, each fuzz_* run FUZZ_SECONDS
#                (default 5: a smoke; bench/fuzz.sh is the campaign) over a copy of tests/fuzz/corpus/<name>/;
#                crashes land in tests/fuzz/artifacts/ and fail the run
#   5. asan      build-asan/ with -DTANDEM_SANITIZE=ON, unit tests again
#   6. asan-integration (only with TANDEM_ASAN_INTEGRATION=1): the pytest
#                integration suite against build-asan/tandem
#
# Exits non-zero when any step fails; later steps still run so one run
# shows every failure.  The last lines are the summary.
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
FUZZ_SECONDS=${FUZZ_SECONDS:-5}
START=$SECONDS

passed_steps=()
failed_steps=()
tests_passed=0
tests_failed=0

step() {
    echo
    echo "=== test.sh: $1 ==="
}

record() { # record NAME STATUS
    if [[ $2 -eq 0 ]]; then
        passed_steps+=("$1")
    else
        failed_steps+=("$1")
        echo "=== test.sh: step '$1' FAILED (exit $2) ==="
    fi
}

# count_ctest LOG - add ctest's "N% tests passed, F tests failed out of T".
count_ctest() {
    local line total failed
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$1" | tail -n 1)
    [[ -n $line ]] || return 0
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    tests_passed=$((tests_passed + total - failed))
    tests_failed=$((tests_failed + failed))
}

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/tandem-test.XXXXXX")
trap 'rm -rf "$LOGDIR"' EXIT

# 1. deps
step deps
./scripts/deps.sh
record deps $?

# 2. build
step build
build_ok=1
if cmake -S . -B build -DTANDEM_WERROR=ON && cmake --build build -j "$JOBS"; then
    record build 0
else
    record build 1
    build_ok=0
fi

# 3. ctest: unit, fuzz replays, integration
if [[ $build_ok -eq 1 ]]; then
    step ctest
    ctest --test-dir build --output-on-failure 2>&1 | tee "$LOGDIR/ctest.log"
    rc=${PIPESTATUS[0]}
    count_ctest "$LOGDIR/ctest.log"
    record ctest "$rc"
fi

# 4. fuzz smoke: each libFuzzer target over a copy of its corpus
step fuzz
fuzz_rc=0
mapfile -t fuzz_names < <(find tests/fuzz -maxdepth 1 -name 'fuzz_*.c' -printf '%f\n' | sed 's/\.c$//' | sort)
if ((${#fuzz_names[@]} == 0)); then
    echo "no fuzz targets in tests/fuzz/"
elif ! CC=clang cmake -S . -B build-fuzz -DTANDEM_FUZZ=ON -DTANDEM_WERROR=ON \
        || ! cmake --build build-fuzz -j "$JOBS" --target "${fuzz_names[@]}"; then
    fuzz_rc=1
else
    mkdir -p tests/fuzz/artifacts
    before=$(find tests/fuzz/artifacts -type f | sort)
    run_one() { # run_one NAME: run a fuzzer, its output in $LOGDIR/NAME.log
        local name=$1 bin work
        bin=$(find build-fuzz -type f -name "$name" -perm -u+x | head -n 1)
        if [[ -z $bin ]]; then
            echo "fuzz: $name: binary not found" >"$LOGDIR/$name.log"
            return 1
        fi
        work="$LOGDIR/corpus-$name"
        mkdir -p "$work"
        if [[ -d tests/fuzz/corpus/$name ]]; then
            cp -r "tests/fuzz/corpus/$name/." "$work/"
        fi
        "$bin" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$ROOT/tests/fuzz/artifacts/" \
            "$work" >"$LOGDIR/$name.log" 2>&1
    }
    # Two at a time: the machine has two cores and each fuzzer uses one.
    pids=()
    names=()
    for name in "${fuzz_names[@]}"; do
        run_one "$name" &
        pids+=($!)
        names+=("$name")
        if ((${#pids[@]} == 2)); then
            for i in "${!pids[@]}"; do
                if ! wait "${pids[$i]}"; then
                    fuzz_rc=1
                    echo "fuzz: ${names[$i]} FAILED:"
                    tail -n 60 "$LOGDIR/${names[$i]}.log"
                else
                    echo "fuzz: ${names[$i]}: $(grep -E '^(Done|stat::number_of_executed_units)' "$LOGDIR/${names[$i]}.log" | tr '\n' ' ')"
                fi
            done
            pids=()
            names=()
        fi
    done
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then
            fuzz_rc=1
            echo "fuzz: ${names[$i]} FAILED:"
            tail -n 60 "$LOGDIR/${names[$i]}.log"
        else
            echo "fuzz: ${names[$i]}: $(grep -E '^(Done|stat::number_of_executed_units)' "$LOGDIR/${names[$i]}.log" | tr '\n' ' ')"
        fi
    done
    after=$(find tests/fuzz/artifacts -type f | sort)
    new=$(comm -13 <(echo "$before") <(echo "$after") | sed '/^$/d')
    if [[ -n $new ]]; then
        echo "fuzz: new crash artifacts (replay: build/tests/replay_<target> FILE):"
        echo "$new"
        fuzz_rc=1
    fi
fi
record fuzz "$fuzz_rc"

# 5. unit tests under AddressSanitizer + UBSan
step asan
# Only the unit test executables (tests/unit/test_*.c, one target each) and
# the libraries they link: the proxy is not needed for them.
mapfile -t unit_names < <(find tests/unit -maxdepth 1 -name 'test_*.c' -printf '%f\n' | sed 's/\.c$//' | sort)
if ((${#unit_names[@]} == 0)); then
    echo "no unit tests in tests/unit/"
    record asan 0
elif cmake -S . -B build-asan -DTANDEM_SANITIZE=ON -DTANDEM_WERROR=ON \
        && cmake --build build-asan -j "$JOBS" --target "${unit_names[@]}"; then
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
        ctest --test-dir build-asan -R '^unit\.' --output-on-failure 2>&1 | tee "$LOGDIR/asan.log"
    rc=${PIPESTATUS[0]}
    count_ctest "$LOGDIR/asan.log"
    record asan "$rc"
else
    record asan 1
fi

# 6. optional (TANDEM_ASAN_INTEGRATION=1): the integration tests against an
#    ASan/UBSan tandem; the harness fails a test whose tandem reported an error.
if [[ ${TANDEM_ASAN_INTEGRATION:-0} == 1 ]]; then
    step asan-integration
    if cmake -S . -B build-asan -DTANDEM_SANITIZE=ON -DTANDEM_WERROR=ON && \
            cmake --build build-asan -j "$JOBS" --target tandem; then
        TANDEM_BIN=$ROOT/build-asan/tandem \
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
            /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration 2>&1 \
            | tee "$LOGDIR/asan-integration.log"
        rc=${PIPESTATUS[0]}
        line=$(grep -E '[0-9]+ passed' "$LOGDIR/asan-integration.log" | tail -n 1)
        for n in $(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '^[0-9]+'); do
            tests_passed=$((tests_passed + n))
        done
        for n in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | grep -oE '^[0-9]+'); do
            tests_failed=$((tests_failed + n))
        done
        record asan-integration "$rc"
    else
        record asan-integration 1
    fi
fi

elapsed=$((SECONDS - START))
echo
if ((${#failed_steps[@]} == 0)); then
    echo "test.sh: PASS - steps ${passed_steps[*]} in ${elapsed}s"
    echo "tests: $tests_passed passed, $tests_failed failed"
    exit 0
fi
echo "test.sh: FAIL - failed: ${failed_steps[*]}; passed: ${passed_steps[*]:-none} (${elapsed}s)"
# A failed build or fuzz step is a failure even when no ctest count shows it.
((tests_failed > 0)) || tests_failed=${#failed_steps[@]}
echo "tests: $tests_passed passed, $tests_failed failed"
exit 1
