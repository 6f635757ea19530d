#!/usr/bin/env bash
# Removes what install.sh of Kuasar (Java) installed, as listed in <root>/var/lib/kuasar/install-manifest. Keeps the
# configs (/var/lib/kuasar/*.toml, /etc/sysconfig/kuasar-*) and the daemons' state. Installed as <prefix>/lib/kuasar/uninstall.sh.
set -euo pipefail
export LC_ALL=C

usage() {
    cat <<EOF
Usage: sudo uninstall.sh [--root DIR] [--force]

Removes the files and the (then empty) directories install.sh put there, listed in
<root>/var/lib/kuasar/install-manifest, and the manifest. Keeps /var/lib/kuasar/*.toml, /etc/sysconfig/kuasar-*
and all state.
Refuses while a kuasar unit is active or a process runs a program of the install (a daemon, a pod's holder) unless
--force.

  --root DIR   the --root given to install.sh (default /)
  --force      remove the files even then (running processes keep what they have open)
  -h, --help   this text
EOF
}

die() { echo "uninstall.sh: error: $*" >&2; exit 1; }
say() { echo "uninstall.sh: $*"; }

ROOT=/
FORCE=0
while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
ROOT=$(realpath "$ROOT")
R=${ROOT%/}
[ -n "$R" ] || [ "$(id -u)" = 0 ] || die "uninstalling from / needs root: sudo $0"
MANIFEST=$R/var/lib/kuasar/install-manifest
[ -f "$MANIFEST" ] || die "no $MANIFEST: nothing was installed there by install.sh"
head -n1 "$MANIFEST" | grep -q '^# kuasar ' || die "$MANIFEST is not an install.sh manifest"
info=$(head -n1 "$MANIFEST" | sed 's/^# kuasar //')
mapfile -t FILES < <(sed -n 's/^f //p' "$MANIFEST")
mapfile -t DIRS < <(sed -n 's/^d //p' "$MANIFEST" | sort -r)
declare -A OURS=()
for f in "${FILES[@]}"; do OURS[$R$f]=1; done

systemd=0
if [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then systemd=1; fi
units=()
for f in "${FILES[@]}"; do case $f in */lib/systemd/system/*.service) units+=("$(basename "$f")") ;; esac; done

# ---- in use? ------------------------------------------------------------------------------------------------------
busy=()
if [ $systemd = 1 ]; then
    for u in "${units[@]}"; do systemctl is-active -q "$u" 2>/dev/null && busy+=("unit $u is active"); done
fi
for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    exe=${exe% (deleted)}
    if [ -n "${OURS[$exe]:-}" ]; then busy+=("pid ${p#/proc/} ($(cat "$p/comm" 2>/dev/null)) runs $exe"); fi
done
if [ ${#busy[@]} -gt 0 ]; then
    printf 'uninstall.sh:   %s\n' "${busy[@]}" >&2
    if [ $FORCE = 0 ]; then
        die "Kuasar is in use (above): stop the daemons first (systemctl disable --now kuasar-runc ...; pods they run keep running, unmanaged; remove pods first to end their helpers), or give --force"
    fi
    say "--force: removing the files anyway"
fi

# ---- remove -------------------------------------------------------------------------------------------------------
if [ $systemd = 1 ] && [ ${#units[@]} -gt 0 ]; then
    systemctl disable --quiet "${units[@]}" 2>/dev/null || true
fi
n=0
for f in "${FILES[@]}"; do
    if [ -e "$R$f" ] || [ -L "$R$f" ]; then rm -f "$R$f" || die "cannot remove $R$f"; n=$((n + 1)); fi
done
rm -f "$MANIFEST"
nd=0 left=()
for d in "${DIRS[@]}"; do
    [ -d "$R$d" ] || continue
    if rmdir "$R$d" 2>/dev/null; then
        nd=$((nd + 1))
    else
        # /var/lib/kuasar, /etc/sysconfig and their parents hold the kept configs: reported below
        case /var/lib/kuasar/ in "$d"/*) continue ;; esac
        case /etc/sysconfig/ in "$d"/*) continue ;; esac
        left+=("$R$d")
    fi
done
[ $systemd = 0 ] || systemctl daemon-reload || true
say "removed Kuasar (Java) $info: $n files, $nd directories"
[ ${#left[@]} -eq 0 ] || say "kept (not empty): ${left[*]}"
kept_sysconfig=$(cd "$R/etc/sysconfig" 2>/dev/null && ls -d kuasar-* 2>/dev/null | tr '\n' ' ')
[ -z "$kept_sysconfig" ] || say "kept $R/etc/sysconfig: $kept_sysconfig"
if [ -d "$R/var/lib/kuasar" ]; then
    say "kept $R/var/lib/kuasar (configs, guest images, state): $(cd "$R/var/lib/kuasar" && ls -A | tr '\n' ' ')"
fi
