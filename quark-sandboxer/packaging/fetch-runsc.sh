#!/usr/bin/env bash
# gVisor's runsc for quark-sandboxer's gvisor backend: Debian trixie's `runsc` package (20240729; a static binary, so it
# runs on bookworm), unpacked privately, never installed. Bookworm's own runsc (20221219) predates the fixes the
# backend relies on.
#
#   fetch-runsc.sh [DEST]       default /var/lib/kuasar/runsc; run by `make runsc`; idempotent
#
# DEST/runsc is the binary. The .deb is cached in /var/cache/kuasar/runsc.
# Environment: KUASAR_APT_MIRROR (the Debian mirror; default: the system's), KUASAR_RUNSC_VERSION (exact version).
set -Eeuo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../packaging/debian-mirror.sh
. "$here/../../packaging/debian-mirror.sh"
DEST=${1:-/var/lib/kuasar/runsc}
CACHE=${KUASAR_RUNSC_CACHE:-/var/cache/kuasar/runsc}

log() { echo "fetch-runsc.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (writes $DEST)"
if [[ -x $DEST/runsc ]] && "$DEST/runsc" --version >/dev/null 2>&1; then
  log "cached: $("$DEST/runsc" --version 2>&1 | head -n1)"
  exit 0
fi

mkdir -p "$CACHE/debs"
if ! compgen -G "$CACHE/debs/runsc_*.deb" >/dev/null; then
  want=runsc
  [[ -n ${KUASAR_RUNSC_VERSION:-} ]] && want="runsc=$KUASAR_RUNSC_VERSION"
  trixie_download "$CACHE" "$want"
fi

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/root"
dpkg -x "$(printf '%s\n' "$CACHE"/debs/runsc_*.deb | sort -V | tail -n1)" "$DEST.tmp/root"
[[ -x $DEST.tmp/root/usr/bin/runsc ]] || die "the unpacked package has no usr/bin/runsc"
mv "$DEST.tmp/root/usr/bin/runsc" "$DEST.tmp/runsc"
rm -rf "$DEST.tmp/root" "$DEST"
mv "$DEST.tmp" "$DEST"
"$DEST/runsc" --version >/dev/null 2>&1 || die "$DEST/runsc does not run: $("$DEST/runsc" --version 2>&1 | head -n3)"
log "$DEST/runsc: $("$DEST/runsc" --version 2>&1 | head -n1)"
