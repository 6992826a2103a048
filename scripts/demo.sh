#!/usr/bin/env bash
# Brings up the Furrow demo on this machine (as root): installs packages,
# builds, then builds a lab (fabric, external host, a node running netd,
# pods) and shows everything Furrow can do, with netctl's view of it.
#   bash scripts/demo.sh          bring it up (replaces a running demo)
#   bash scripts/demo.sh status   netctl views of the running demo
#   bash scripts/demo.sh down     remove it
set -euo pipefail
cd "$(dirname "$0")/.."
action="${1:-up}"
if [[ "$action" != "down" ]]; then
  bash scripts/deps.sh
  cargo build --release --workspace --bins --locked
fi
exec target/release/furrow-lab demo "$action"
