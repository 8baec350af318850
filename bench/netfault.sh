#!/usr/bin/env bash
# netfault.sh - client throughput through tandem with a healthy shadow and
# with a shadow behind a slow, lossy link (network namespace + netem or the
# NFQUEUE delayer, see tests/integration/harness/netns.py).  Needs root.
#
#   bench/netfault.sh                                   20 s per run, 200 ms, 5% loss
#   NETFAULT_SECONDS=60 NETFAULT_DELAY_MS=50 bench/netfault.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec /usr/bin/python3 bench/netfault.py "$@"
