#!/usr/bin/env bash
# Installs the system packages svcproxy's tests need on a fresh Debian
# machine: nft, iptables, ip, conntrack, and curl for `svcproxy lab exec`;
# chromium (headless, driven by the lab page's browser tests); for the IPVS
# tests, which run in a VM (internal/testkit/vm): qemu, busybox-static (the
# VM's initramfs), kmod (depmod for the VM's kernel), and ipvsadm and
# ipset, which the tests use inside the VM to cross-check.
# Does nothing when they are present.
# The image (make image, and its test) fetches Debian packages with
# apt-get download, which needs apt's package lists: read them once if
# there are none.
set -euo pipefail
need=()
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v conntrack >/dev/null || need+=(conntrack)
command -v curl >/dev/null || need+=(curl ca-certificates)
command -v chromium >/dev/null || need+=(chromium)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
# busybox (dynamic) also provides /bin/busybox; the initramfs needs the static one.
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
command -v depmod >/dev/null || [ -x /sbin/depmod ] || need+=(kmod)
command -v ipvsadm >/dev/null || need+=(ipvsadm)
command -v ipset >/dev/null || need+=(ipset)
if [ ${#need[@]} -gt 0 ] || ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi
