#!/usr/bin/env bash
# Runs Furrow's benchmarks (release build) and prints Furrow's figures
# beside the reference's from the same run.
#   bash scripts/bench.sh            all benchmarks
#   bash scripts/bench.sh cni        CNI ADD/DEL latency vs bridge+host-local
#   bash scripts/bench.sh vlan       VM-to-VM on a VLAN vs the kernel bridge
#   bash scripts/bench.sh dhcp       perfdhcp against Furrow's responder vs dnsmasq
#   bash scripts/bench.sh vip        VIP failover (node loss, graceful stop) vs keepalived
#   bash scripts/bench.sh mgmt       cross-node pods over vxlan/host-gw vs node to node; etcd propagation
#   bash scripts/bench.sh scale      netd memory/CPU, CNI ADD, packet rate: empty node vs 1000 ports on 200 VLANs
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --workspace --bins --locked
export FURROW_BIN_DIR="$PWD/target/release"
for b in ${1:-cni vlan dhcp vip mgmt scale}; do
  target/release/furrow-bench "$b"
done
