#!/usr/bin/env bash
# WasmEdge for the wasm-sandboxer's `wasmedge` engine: Debian trixie's wasmedge CLI (it needs glibc >= 2.38 and
# LLVM 19), run on bookworm through trixie's own loader and libraries, unpacked privately, never installed. On a host
# whose own wasmedge runs (trixie or newer), that one can be configured instead (wasm-sandboxer --wasmedge PATH).
#
#   fetch-wasmedge.sh [DEST]       default /var/lib/kuasar/wasmedge; run by `make wasm-engines`; idempotent
#
# DEST/wasmedge is a launcher taking wasmedge's own arguments; it execs the loader, so the pid the daemon signals is
# WasmEdge itself. DEST/root holds the unpacked packages (the dependency closure of trixie's `wasmedge`, ~41 MB of
# .debs, cached in /var/cache/kuasar/wasmedge).
# Environment: KUASAR_APT_MIRROR (the Debian mirror; default: the system's), KUASAR_WASMEDGE_VERSION (exact version).
set -Eeuo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../packaging/debian-mirror.sh
. "$here/../../packaging/debian-mirror.sh"
DEST=${1:-/var/lib/kuasar/wasmedge}
CACHE=${KUASAR_WASMEDGE_CACHE:-/var/cache/kuasar/wasmedge}

log() { echo "fetch-wasmedge.sh: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (writes $DEST)"
if [[ -x $DEST/wasmedge ]] && "$DEST/wasmedge" --version >/dev/null 2>&1; then
  log "cached: $("$DEST/wasmedge" --version 2>&1 | head -n1)"
  exit 0
fi

mkdir -p "$CACHE/debs"
if ! compgen -G "$CACHE/debs/wasmedge_*.deb" >/dev/null || [[ ! -e $CACHE/debs/.complete ]]; then
  want=wasmedge
  [[ -n ${KUASAR_WASMEDGE_VERSION:-} ]] && want="wasmedge=$KUASAR_WASMEDGE_VERSION"
  trixie_download "$CACHE" --closure "$want"
  touch "$CACHE/debs/.complete"
fi

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp/root"
for deb in "$CACHE"/debs/*.deb; do
  dpkg -x "$deb" "$DEST.tmp/root"
done
lib=/usr/lib/x86_64-linux-gnu
[[ -x $DEST.tmp/root/usr/bin/wasmedge && -e $DEST.tmp/root$lib/ld-linux-x86-64.so.2 ]] ||
  die "the unpacked packages have no usr/bin/wasmedge or loader"
cat >"$DEST.tmp/wasmedge" <<SH
#!/bin/sh
# trixie's wasmedge through trixie's loader and libraries (fetch-wasmedge.sh): bookworm's glibc is too old for it.
exec $DEST/root$lib/ld-linux-x86-64.so.2 --library-path $DEST/root$lib:$DEST/root/lib/x86_64-linux-gnu $DEST/root/usr/bin/wasmedge "\$@"
SH
chmod 0755 "$DEST.tmp/wasmedge"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
"$DEST/wasmedge" --version >/dev/null 2>&1 || die "$DEST/wasmedge does not run: $("$DEST/wasmedge" --version 2>&1 | head -n3)"
log "$DEST/wasmedge: $("$DEST/wasmedge" --version 2>&1 | head -n1)"
