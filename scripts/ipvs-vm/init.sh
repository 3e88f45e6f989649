#!/bin/sh
# PID 1 of the IPVS test guest (busybox, from the initramfs that vm.py builds).
# Mounts the host's / read-only over 9p on /host, runs the job's command.sh in a
# chroot there, prints the exit marker and powers off. vm.py reads these lines:
#   PGVIP-VM-READY <uptime>    the chroot is ready; the command starts now
#   PGVIP-VM-EXIT=<status>     the command's exit status
#   PGVIP-VM-FAILED <why>      the guest could not be set up; nothing ran
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "PGVIP-VM-FAILED $*"
    poweroff -f
    exit 1
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
while read -r module; do
    insmod "/modules/$module" || fail "insmod $module"
done </modules/order

# cache=loose: the share is read-only, so nothing can go stale under the guest.
mount -t 9p -o trans=virtio,version=9p2000.L,cache=loose,ro hostroot /host \
    || fail "mount the host's / over 9p (tag hostroot)"
mount -t 9p -o trans=virtio,version=9p2000.L job /job \
    || fail "mount the job share over 9p (tag job)"
[ -r /job/command.sh ] || fail "the job share has no command.sh"
mount -t proc proc /host/proc || fail "mount /host/proc"
mount -t sysfs sysfs /host/sys || fail "mount /host/sys"
mount -t devtmpfs devtmpfs /host/dev || fail "mount /host/dev"
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts devpts /host/dev/pts || fail "mount /host/dev/pts"
mount -t tmpfs tmpfs /host/dev/shm || fail "mount /host/dev/shm"
# What udev or systemd would add on a real system; `nft -j -f -` opens /dev/stdin.
ln -s /proc/self/fd /host/dev/fd
for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "/host/dev/${i#*:}"; done
# The host's / is read-only: give the guest its own writable /tmp and /run
# (`ip netns` keeps its namespaces in /run/netns). Host paths there that the
# command needs (listed in the job's `keep`) stay visible, read-only.
mount --bind /host/tmp /hosttmp || fail "bind the host's /tmp"
mount --bind /host/run /hostrun || fail "bind the host's /run"
mount -t tmpfs -o mode=1777 tmpfs /host/tmp || fail "mount /host/tmp"
mount -t tmpfs -o mode=755 tmpfs /host/run || fail "mount /host/run"
mkdir -p /host/run/pgvip-vm
mount --bind /job /host/run/pgvip-vm || fail "bind the job share on /run/pgvip-vm"
if [ -r /job/keep ]; then
    while read -r path; do
        case $path in
            /tmp/*) source=/hosttmp/${path#/tmp/} ;;
            /run/*) source=/hostrun/${path#/run/} ;;
            *) continue ;;
        esac
        if ! { mkdir -p "/host$path" && mount --bind "$source" "/host$path"; }; then
            fail "keep the host's $path visible"
        fi
    done </job/keep
fi

read -r uptime _ </proc/uptime
echo "PGVIP-VM-READY $uptime"
chroot /host /bin/sh /run/pgvip-vm/command.sh </dev/null
echo "PGVIP-VM-EXIT=$?"
poweroff -f
