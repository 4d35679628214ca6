#!/bin/sh
# PID 1 of the svcproxy test VM (see package vm). It mounts the host's root
# file system (9p, read-only) under a tmpfs overlay, loads the modules the
# run asks for, runs the run's script as root in a chroot of that overlay,
# reports the exit status on the "status" port and powers off. The run
# directory (svcvm.run= on the kernel command line) is a host directory,
# read through the same 9p mount.
export PATH=/bin:/sbin
/bin/busybox --install -s /bin

say() { echo "svcvm: $*" >/dev/console; }
die() {
	say "$*"
	poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

for arg in $(cat /proc/cmdline); do
	case $arg in
	svcvm.run=*) run=${arg#svcvm.run=} ;;
	svcvm.modules=*) modules=${arg#svcvm.modules=} ;;
	esac
done
[ -n "$run" ] && [ -n "$modules" ] || die "svcvm.run= and svcvm.modules= are required"

# What reaches the host: virtio, 9p, overlay and the console ports. They
# are in this initramfs, with their modules.dep.
for m in virtio_pci 9pnet_virtio 9p overlay virtio_console; do
	modprobe "$m" || die "cannot load $m"
done
mkdir -p /host /rw /root
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose root /host ||
	die "cannot mount the host's root over 9p"

# The full module tree, at this root's /lib/modules: the kernel runs
# /sbin/modprobe (busybox) from here, not from the chroot, when it loads a
# module on demand (xt_set, nft_compat, veth, ...).
mount --bind "/host$modules" /lib/modules || die "cannot bind $modules"
modprobe -a crc32c_generic $(cat "/host$run/modules") || die "cannot load the modules of $run/modules"

mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /root ||
	die "cannot mount the overlay"
mount -t proc proc /root/proc
mount -t sysfs sysfs /root/sys
mount -t devtmpfs devtmpfs /root/dev
mkdir -p /root/dev/pts /root/dev/shm /root/run /root/lib/modules
mount -t devpts devpts /root/dev/pts
mount -t tmpfs tmpfs /root/dev/shm
mount -t tmpfs tmpfs /root/run
mount --bind /lib/modules /root/lib/modules
hostname svcvm
ip link set lo up

# port NAME prints the device of the virtio console port NAME.
port() {
	for p in /sys/class/virtio-ports/*; do
		[ "$(cat "$p/name")" = "$1" ] && echo "/dev/${p##*/}" && return
	done
	die "no virtio port $1"
}
exec 3>"$(port status)"
echo start >&3
chroot /root /bin/sh "$run/script" </dev/null >"$(port stdout)" 2>"$(port stderr)"
echo "exit $?" >&3
exec 3>&-
sync
poweroff -f
