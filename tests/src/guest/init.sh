#!/bin/sh
# Furrow guest init: PID 1 of the base initramfs (busybox sh).
# Mounts the usual file systems, loads the modules the boot asked for,
# runs /furrow/payload.sh between the markers the host parses, powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/netns /run/furrow
# Kernel messages stay off the console: they would cut payload lines.
dmesg -n 1
hostname furrow-guest
ip link set lo up

FURROW_MODULES=""
FURROW_WATCHDOG=0
[ -f /furrow/boot.conf ] && . /furrow/boot.conf
for m in $FURROW_MODULES; do
	modprobe "$m" || echo "furrow-init: modprobe $m failed"
done
# Powers the guest off even if the host that started it is gone.
if [ "$FURROW_WATCHDOG" -gt 0 ]; then
	(sleep "$FURROW_WATCHDOG"; echo; echo "FURROW-WATCHDOG"; poweroff -f) &
fi
export FURROW_IN_GUEST=1
echo "FURROW-BEGIN uptime=$(cut -d' ' -f1 /proc/uptime)"
cd /root
/bin/sh /furrow/payload.sh </dev/null
rc=$?
echo
echo "FURROW-EXIT $rc uptime=$(cut -d' ' -f1 /proc/uptime)"
sync
poweroff -f
