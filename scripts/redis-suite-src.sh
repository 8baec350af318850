#!/usr/bin/env bash
# redis-suite-src.sh - Redis's own test suite (the source package Debian
# ships, matching its redis-server 7.0.15), downloaded once and verified.
#
# Prints the path of the cached tarball on stdout; exit 1 (and why on
# stderr) when it cannot be had.  The cache is outside the repository:
# $TANDEM_CACHE_DIR, default ${XDG_CACHE_HOME:-~/.cache}/tandem.  A cached
# file is checked again on every call (sha256), a bad one is fetched again.
#
# Used by bench/redis-suite.sh, tests/integration/test_redis_suite.py and
# scripts/deps.sh (so CI has it before the tests run).
set -euo pipefail

REDIS_SUITE_VERSION=7.0.15
REDIS_SUITE_SHA256=4b1dc4ee6d622a09fff9c6777191209750fb5e5a725ef78ea012d6eef4c22982
REDIS_SUITE_URL=${REDIS_SUITE_URL:-http://deb.debian.org/debian/pool/main/r/redis/redis_$REDIS_SUITE_VERSION.orig.tar.gz}

cache=${TANDEM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem}
tarball=$cache/redis_$REDIS_SUITE_VERSION.orig.tar.gz

verified() { [ -f "$1" ] && echo "$REDIS_SUITE_SHA256  $1" | sha256sum -c --status; }

if ! verified "$tarball"; then
    mkdir -p "$cache"
    tmp=$(mktemp "$cache/.redis-src.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    if ! curl -fsS --retry 2 --max-time 300 -o "$tmp" "$REDIS_SUITE_URL"; then
        echo "redis-suite-src: cannot download $REDIS_SUITE_URL" >&2
        exit 1
    fi
    if ! verified "$tmp"; then
        echo "redis-suite-src: $REDIS_SUITE_URL does not have sha256 $REDIS_SUITE_SHA256" >&2
        exit 1
    fi
    mv "$tmp" "$tarball"
fi
echo "$tarball"
