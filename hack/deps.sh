#!/usr/bin/env bash
# Installs the system packages svcproxy's tests need on a fresh Debian
# machine: nft, iptables, ip, conntrack, curl for `svcproxy lab exec`, and
# chromium (headless, driven by the lab page's browser tests). Does nothing
# when they are present.
set -euo pipefail
need=()
command -v nft >/dev/null || need+=(nftables)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v conntrack >/dev/null || need+=(conntrack)
command -v curl >/dev/null || need+=(curl ca-certificates)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
