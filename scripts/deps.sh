#!/usr/bin/env bash
# deps.sh - install what tandem's build and tests need on a fresh Debian 12.
#
# Checks every package with dpkg-query first, so a second run is fast and
# needs no network.  Only when something is missing: one `apt-get update`,
# then one `apt-get install` of the missing packages.  No system service is
# started or enabled: the tests start their own PostgreSQL and Redis servers
# on ephemeral loopback ports, so a cluster Debian creates is stopped.
#
# Then Redis's own test suite (the source tarball of Debian's redis 7.0.15,
# for bench/redis-suite.sh and tests/integration/test_redis_suite.py),
# fetched into ~/.cache/tandem by scripts/redis-suite-src.sh once; its
# download failing is said, not fatal (that test skips without it).
#
# Then tests/browser/node_modules (playwright-core, pinned by its
# package-lock.json) with `npm ci`, only when it is not there yet: the
# report page test drives Debian's chromium with it.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    build-essential cmake pkg-config clang libclang-rt-14-dev
    libevent-dev libssl-dev libpq-dev libhiredis-dev libjansson-dev
    libpg-query-dev libxxhash-dev libcmocka-dev
    postgresql-server-dev-15   # libpgcommon: SASLprep for SCRAM passwords
    python3-pytest python3-pytest-xdist python3-psycopg python3-redis python3-yaml
    python3-sqlalchemy python3-psycopg2   # bench/corpus.py: an ORM's introspection queries
    postgresql-15 postgresql-client-15 pgbouncer
    redis-server redis-tools nutcracker
    tcl                                 # Redis's test suite (bench/redis-suite.sh)
    openssl procps iproute2 iptables util-linux curl
    chromium prometheus
)
# node and npm: Debian's nodejs + npm, unless a node with npm is already
# there (a NodeSource nodejs bundles npm and conflicts with Debian's npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    PACKAGES+=(nodejs npm)
fi

# redis_suite_src - Redis's test suite tarball, cached (a failure is not fatal).
redis_suite_src() {
    scripts/redis-suite-src.sh >/dev/null ||
        echo "deps: Redis's test suite could not be fetched; test_redis_suite.py will skip" >&2
}

# browser_deps - the report page test's npm packages, once.
browser_deps() {
    if [[ -d tests/browser/node_modules/playwright-core ]]; then
        return 0
    fi
    echo "deps: npm ci in tests/browser"
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
    [[ $status == ii* ]] || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "deps: all ${#PACKAGES[@]} packages installed"
    redis_suite_src
    browser_deps
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "deps: missing ${missing[*]}; run as root or install sudo" >&2
        exit 1
    fi
fi

# Keep package scripts from starting services (postgresql, redis-server,
# nutcracker, pgbouncer) while installing: policy-rc.d exit 101 = "not now".
POLICY=/usr/sbin/policy-rc.d
if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
    "${SUDO[@]}" chmod 755 "$POLICY"
    trap '"${SUDO[@]}" rm -f "$POLICY"' EXIT
fi

echo "deps: installing ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"

# Debian's postgresql-common creates a "main" cluster; if anything started
# it anyway, stop it: the tests never use it.
if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _port status _rest; do
        if [[ $status == online* ]]; then
            echo "deps: stopping the packaged cluster $ver/$name"
            "${SUDO[@]}" pg_ctlcluster "$ver" "$name" stop || true
        fi
    done
fi
redis_suite_src
browser_deps
echo "deps: done"
