#!/usr/bin/env bash
# Runs every cargo-fuzz target of furrow-vip (the BGP decoder) for a
# bounded time each. Usage: vip/fuzz/run.sh SECONDS_PER_TARGET
# Same requirements as dhcp/fuzz/run.sh: cargo-fuzz (installed if
# missing) and a nightly toolchain. Exits non-zero on the first crash;
# the reproducer is left in vip/fuzz/artifacts/.
set -euo pipefail
secs="${1:?usage: $0 SECONDS_PER_TARGET}"
cd "$(dirname "$0")"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly --profile minimal" >&2
  exit 1
fi
# The main workspace's CARGO_TARGET_DIR would mix sanitizer builds into it.
unset CARGO_TARGET_DIR
for target in $(cargo +nightly fuzz list); do
  echo "fuzzing $target for ${secs}s"
  mkdir -p "corpus/$target"
  seeds=()
  [[ -d "seeds/$target" ]] && seeds=("seeds/$target")
  cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$secs"
done
