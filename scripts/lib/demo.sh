# shellcheck shell=bash
#
# demo.sh - what scripts/demo.sh and scripts/demo-fleet.sh share.  Source it
# after scripts/lib/pgctl.sh; it runs nothing by itself.
#
# say TEXT...    a bold section title
# demo_build     scripts/deps.sh (unless DEMO_SKIP_DEPS=1), then build/tandem
#                with cmake (unless TANDEM_BIN names a binary); sets TANDEM_BIN
#                and prints its version.  ROOT must be the repository.

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

demo_build() {
    if [ "${DEMO_SKIP_DEPS:-0}" != 1 ]; then
        say "dependencies (scripts/deps.sh)"
        "$ROOT/scripts/deps.sh"
    fi
    if [ -z "${TANDEM_BIN:-}" ]; then
        say "build (cmake, build/)"
        cmake -S "$ROOT" -B "$ROOT/build" >/dev/null
        cmake --build "$ROOT/build" -j"$(nproc)" --target tandem | tail -n 1
        TANDEM_BIN=$ROOT/build/tandem
    fi
    "$TANDEM_BIN" --version
}
