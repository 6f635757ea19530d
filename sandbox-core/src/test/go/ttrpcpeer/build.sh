#!/usr/bin/env bash
# Builds the ttrpcpeer interop binary offline from Debian packages.
#
#   build.sh <output-binary> [work-dir]
#
# - Installs golang-go and golang-github-containerd-ttrpc-dev with apt-get if
#   they are missing (runs `apt-get update` only if the install fails, e.g. for
#   lack of package lists). Needs root (or sudo) only when something is missing.
# - Builds in GOPATH mode (GO111MODULE=off, GOPROXY=off, GOFLAGS=-mod unset) with
#   GOPATH=<work-dir>/gopath:/usr/share/gocode and GOCACHE=<work-dir>/gocache.
#   Without a work-dir a temporary one is used and removed afterwards.
# - Writes nothing into the source tree. Exits non-zero with a message on failure.
set -euo pipefail

die() { echo "ttrpcpeer build.sh: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: build.sh <output-binary> [work-dir]"

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$1"
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
mkdir -p "$(dirname "$OUT")" || die "cannot create directory for $OUT"

PKGS=(golang-go golang-github-containerd-ttrpc-dev)
TTRPC_SRC=/usr/share/gocode/src/github.com/containerd/ttrpc

pkg_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for p in "${PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done

if [ ${#missing[@]} -gt 0 ]; then
  echo "ttrpcpeer build.sh: installing ${missing[*]}" >&2
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "packages missing (${missing[*]}) and not root / no sudo; install them: apt-get install ${PKGS[*]}"
    SUDO=(sudo -n)
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    echo "ttrpcpeer build.sh: apt-get install failed; running apt-get update and retrying" >&2
    "${SUDO[@]}" apt-get update >&2 || die "apt-get update failed"
    "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
      || die "apt-get install ${missing[*]} failed"
  fi
fi

GO="$(command -v go || true)"
[ -n "$GO" ] || die "go not found on PATH after installing golang-go"
[ -d "$TTRPC_SRC" ] || die "$TTRPC_SRC missing (golang-github-containerd-ttrpc-dev not installed?)"

if [ $# -eq 2 ]; then
  WORK="$2"
  mkdir -p "$WORK" || die "cannot create work dir $WORK"
  WORK="$(cd "$WORK" && pwd)"
else
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/ttrpcpeer-build.XXXXXX")" || die "mktemp failed"
  trap 'rm -rf "$WORK"' EXIT
fi
mkdir -p "$WORK/gopath" "$WORK/gocache" "$WORK/tmp"

cd "$SRC_DIR"
if ! env GO111MODULE=off GOPROXY=off GOFLAGS= GOWORK=off CGO_ENABLED=0 \
    GOPATH="$WORK/gopath:/usr/share/gocode" GOCACHE="$WORK/gocache" GOTMPDIR="$WORK/tmp" \
    "$GO" build -trimpath -o "$OUT" . ; then
  die "go build failed (GOPATH mode, $("$GO" version 2>/dev/null || echo 'go ?'))"
fi
[ -x "$OUT" ] || die "go build produced no executable at $OUT"
echo "ttrpcpeer build.sh: built $OUT" >&2
