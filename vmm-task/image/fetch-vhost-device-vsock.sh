#!/usr/bin/env bash
# vhost-device-vsock for microVM pods whose agent channel is vsock (use_vsock = true): this machine kind's kernel has no
# vhost-vsock, so QEMU's vhost-user-vsock device is served by this userspace daemon (rust-vmm's, Debian sid only; it
# needs nothing newer than bookworm's glibc), one per VM. Its host side speaks hybrid vsock, as Cloud Hypervisor's.
#
#   fetch-vhost-device-vsock.sh [DEST]   default /var/lib/kuasar/vhost-device-vsock; run by `make vmm-image`; idempotent
#
# Environment: KUASAR_APT_MIRROR (the Debian mirror; default: the system's).
set -Eeuo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../packaging/debian-mirror.sh
. "$here/../../packaging/debian-mirror.sh"
DEST=${1:-/var/lib/kuasar/vhost-device-vsock}
CACHE=${KUASAR_VHOST_VSOCK_CACHE:-/var/cache/kuasar/vhost-device-vsock}

log() { echo "fetch-vhost-device-vsock.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (writes $DEST)"
if [[ -x $DEST/vhost-device-vsock ]] && "$DEST/vhost-device-vsock" --version >/dev/null 2>&1; then
  log "cached: $("$DEST/vhost-device-vsock" --version 2>&1 | head -n1)"
  exit 0
fi
mkdir -p "$CACHE/debs"
compgen -G "$CACHE/debs/vhost-device-vsock_*.deb" >/dev/null || suite_download sid "$CACHE" vhost-device-vsock
rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/root"
dpkg -x "$(printf '%s\n' "$CACHE"/debs/vhost-device-vsock_*.deb | sort -V | tail -n1)" "$DEST.tmp/root"
[[ -x $DEST.tmp/root/usr/bin/vhost-device-vsock ]] || die "the unpacked package has no usr/bin/vhost-device-vsock"
mv "$DEST.tmp/root/usr/bin/vhost-device-vsock" "$DEST.tmp/vhost-device-vsock"
rm -rf "$DEST.tmp/root" "$DEST"
mv "$DEST.tmp" "$DEST"
"$DEST/vhost-device-vsock" --version >/dev/null 2>&1 || die "$DEST/vhost-device-vsock does not run: $("$DEST/vhost-device-vsock" --version 2>&1 | head -n3)"
log "$DEST/vhost-device-vsock: $("$DEST/vhost-device-vsock" --version 2>&1 | head -n1)"
