#!/bin/busybox sh
# PID 1 of a `cargo xtask vm-test` guest (xtask/src/vm/boot.rs packs it into the initramfs).
# Loads the virtio/9p modules listed in /etc/modules.order, mounts the host's root read-only
# over 9p and the run's output directory
# read-write at the same path as on the host, gives the guest the file systems the agent
# needs (/tmp and /var/tmp as overlays over the host's, so nothing of the host is hidden),
# then hands over to the run's guest.sh inside the host's root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
out=
for arg in $(cat /proc/cmdline); do
    case "$arg" in wsguard.out=*) out="${arg#wsguard.out=}" ;; esac
done
fail() {
    echo "vm-init: $*"
    echo o > /proc/sysrq-trigger
    sleep 10
}
[ -n "$out" ] || fail "no wsguard.out= on the kernel command line"
for m in $(cat /etc/modules.order); do
    insmod "/modules/$m" || fail "insmod $m failed"
done
p9="trans=virtio,version=9p2000.L,msize=262144"
mkdir -p /newroot /scratch
mount -t 9p -o "$p9,ro,cache=loose" hostroot /newroot || fail "cannot mount the host's root"
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm 2>/dev/null
mount -t devpts devpts /newroot/dev/pts
for d in run dev/shm; do
    mount -t tmpfs -o mode=1777 tmpfs "/newroot/$d" || fail "cannot mount tmpfs on /$d"
done
# /tmp and /var/tmp are writable but keep showing the host's files (a checkout, its target/
# and this run's output directory may live there, as in a CI clone under /tmp): an overlay
# whose lower layer is the host's directory and whose upper layer is a tmpfs. Writes stay in
# the guest.
mount -t tmpfs -o mode=755 tmpfs /scratch || fail "cannot mount the overlays' tmpfs"
for d in tmp var/tmp; do
    up="/scratch/$(echo "$d" | tr / _)"
    mkdir -p "$up/upper" "$up/work"
    chmod 1777 "$up/upper"
    mount -t overlay -o "lowerdir=/newroot/$d,upperdir=$up/upper,workdir=$up/work" overlay "/newroot/$d" \
        || fail "cannot mount an overlay on /$d"
done
mkdir -p /newroot/run/wsguard-vm-scratch
mount --move /scratch /newroot/run/wsguard-vm-scratch || fail "cannot move the overlays' tmpfs"
# The output share last, so that no tmpfs or overlay hides it, wherever it lives.
mount -t 9p -o "$p9,rw" out "/newroot$out" || fail "cannot mount $out"
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t tracefs tracefs /newroot/sys/kernel/tracing
mount -t debugfs debugfs /newroot/sys/kernel/debug
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
ip link set lo up
exec switch_root /newroot /bin/sh "$out/guest.sh"
