#!/usr/bin/env bash
# Runs every cargo-fuzz target of one crate's fuzz/ directory for a bounded
# time each. Usage: scripts/fuzz.sh FUZZ_DIR SECONDS_PER_TARGET
# Installs cargo-fuzz from crates.io if missing; needs a nightly toolchain
# (no rust-src needed: only -Zsanitizer, not -Zbuild-std). Exits non-zero
# on the first crash; the reproducer is left in FUZZ_DIR/artifacts/.
set -euo pipefail
dir="${1:?usage: $0 FUZZ_DIR SECONDS_PER_TARGET}"
secs="${2:?usage: $0 FUZZ_DIR SECONDS_PER_TARGET}"
cd "$dir"
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
  # New inputs go to corpus/ (ignored by git); seeds/ holds valid
  # messages so the fuzzer starts past checksums and fixed headers.
  mkdir -p "corpus/$target"
  seeds=()
  [[ -d "seeds/$target" ]] && seeds=("seeds/$target")
  cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- -max_total_time="$secs"
done
