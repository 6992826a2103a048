#!/usr/bin/env bash
# Installs the Debian packages Furrow's build, demo and tests need.
# Idempotent: installs only what is missing.
set -euo pipefail
PKGS=(
  clang llvm libbpf-dev          # eBPF programs (C, compiled at build time)
  iproute2 iputils-ping nftables # the lab builds and observes with these
  util-linux procps              # nsenter, sysctl
  containernetworking-plugins    # the reference bridge/host-local (benchmarks)
  iptables                       # the reference bridge plugin's ipMasq
  tcpdump                        # tests observe VLAN tags and loops
  iperf3 sockperf                # benchmarks: throughput, packet rate, latency
  qemu-system-x86                # full-kernel guests under TCG (tests/src/guest)
  busybox-static kmod cpio       # their initramfs: busybox, depmod/modprobe, packing
  xz-utils binutils              # decompressing modules, stripping host binaries
  protobuf-compiler              # protoc: etcd-client's build script (netd's etcd store)
  etcd-server etcd-client        # a real etcd (and etcdctl) for the etcd store tests
  udhcpc isc-dhcp-client         # real DHCP clients in VM namespaces (DHCP tests)
  dnsmasq-base                   # a DHCP server: client tests, rogue server, benchmark anchor
  kea-admin                      # perfdhcp: the DHCP benchmark's load generator
  bird2                          # BIRD 2: the upstream router of the BGP tests
  keepalived                     # VRRP: the VIP failover benchmark's anchor
  python3-scapy                  # forged frames (spoofed MAC/IP, ARP, RA, NA): port security tests
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# bpffs: netd mounts it itself if needed; the tests inspect pins there.
if ! grep -q " /sys/fs/bpf bpf " /proc/mounts; then
  mount -t bpf bpf /sys/fs/bpf
fi
