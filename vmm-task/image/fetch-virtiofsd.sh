#!/usr/bin/env bash
# virtiofsd for microVM pods whose share_fs is VirtioFS: Debian trixie's virtiofsd, which needs glibc >= 2.39, run on
# bookworm (glibc 2.36) through trixie's own loader and libraries, unpacked privately, never installed.
#
#   fetch-virtiofsd.sh [DEST]       default /var/lib/kuasar/virtiofsd; run by `make vmm-image`; idempotent
#
# DEST/virtiofsd is a launcher script taking virtiofsd's own arguments (the config's [hypervisor.virtiofsd] path);
# DEST/root holds the unpacked packages. The .debs are cached in /var/cache/kuasar/virtiofsd.
# Environment: KUASAR_APT_MIRROR (the Debian mirror; default: the system's), KUASAR_VIRTIOFSD_VERSION (exact version).
set -Eeuo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../packaging/debian-mirror.sh
. "$here/../../packaging/debian-mirror.sh"
DEST=${1:-/var/lib/kuasar/virtiofsd}
CACHE=${KUASAR_VIRTIOFSD_CACHE:-/var/cache/kuasar/virtiofsd}
PKGS=(virtiofsd libc6 libcap-ng0 libseccomp2 libgcc-s1)

log() { echo "fetch-virtiofsd.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (writes $DEST)"
if [[ -x $DEST/virtiofsd ]] && "$DEST/virtiofsd" --version >/dev/null 2>&1; then
  log "cached: $("$DEST/virtiofsd" --version 2>&1 | head -n1)"
  exit 0
fi

mkdir -p "$CACHE/debs"
have_debs() { for p in "${PKGS[@]}"; do compgen -G "$CACHE/debs/${p}_*.deb" >/dev/null || return 1; done; }
if ! have_debs; then
  want=("${PKGS[@]}")
  [[ -n ${KUASAR_VIRTIOFSD_VERSION:-} ]] && want[0]="virtiofsd=$KUASAR_VIRTIOFSD_VERSION"
  trixie_download "$CACHE" "${want[@]}"
fi

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/root"
for p in "${PKGS[@]}"; do
  deb=$(printf '%s\n' "$CACHE"/debs/"${p}"_*.deb | sort -V | tail -n1)
  dpkg -x "$deb" "$DEST.tmp/root"
done
lib=/usr/lib/x86_64-linux-gnu
[[ -x $DEST.tmp/root/usr/libexec/virtiofsd && -e $DEST.tmp/root$lib/ld-linux-x86-64.so.2 ]] ||
  die "the unpacked packages have no usr/libexec/virtiofsd or loader"
cat >"$DEST.tmp/virtiofsd" <<SH
#!/bin/sh
# trixie's virtiofsd through trixie's loader and libraries (fetch-virtiofsd.sh): bookworm's glibc is too old for it.
exec $DEST/root$lib/ld-linux-x86-64.so.2 --library-path $DEST/root$lib $DEST/root/usr/libexec/virtiofsd "\$@"
SH
chmod 0755 "$DEST.tmp/virtiofsd"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
"$DEST/virtiofsd" --version >/dev/null 2>&1 || die "$DEST/virtiofsd does not run: $("$DEST/virtiofsd" --version 2>&1 | head -n3)"
log "$DEST/virtiofsd: $("$DEST/virtiofsd" --version 2>&1 | head -n1)"
