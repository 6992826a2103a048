#!/usr/bin/env bash
# Runs every cargo-fuzz target of furrow-dhcp (the DHCP packet parser) for a bounded time each.
# Usage: dhcp/fuzz/run.sh SECONDS_PER_TARGET (see scripts/fuzz.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec bash "$here/../../scripts/fuzz.sh" "$here" "${1:?usage: $0 SECONDS_PER_TARGET}"
