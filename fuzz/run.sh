#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (ARP/ND frames, the CNI plugin's
# environment and config, netd's API request bodies, resource files) for
# a bounded time each. Usage: fuzz/run.sh SECONDS_PER_TARGET (see scripts/fuzz.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/../scripts/fuzz.sh" "$here" "${1:?usage: $0 SECONDS_PER_TARGET}"
