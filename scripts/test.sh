#!/usr/bin/env bash
# Runs Furrow's whole test suite on a fresh machine (as root): installs
# the packages it needs, checks formatting and lints, builds, and runs
# every test (unit, BPF_PROG_TEST_RUN, and the namespace lab tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export CARGO_TERM_COLOR=never
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo nextest run --workspace --locked --profile ci
# The DHCP packet parser under coverage-guided fuzzing, time-bounded
# (installs cargo-fuzz on first use; uses the machine's nightly toolchain).
bash dhcp/fuzz/run.sh "${FURROW_FUZZ_SECONDS:-60}"
# The BGP message decoder likewise.
bash vip/fuzz/run.sh "${FURROW_FUZZ_SECONDS:-60}"
# The other parsers of untrusted input (one build, four targets): ARP/ND
# frames, the CNI plugin's environment and config, netd's API request
# bodies, resource files.
bash fuzz/run.sh "${FURROW_FUZZ_SECONDS:-60}"
echo "leftovers after the suite:"
ls /run/netns 2>/dev/null | grep -E '^ft[0-9]+x' || echo "  none"
