#!/usr/bin/env bash
# Installs Kuasar (Java) @VERSION@ (linux-@ARCH@) from this unpacked release: `sudo ./install.sh`. See README.
set -euo pipefail
export LC_ALL=C

VERSION=@VERSION@
ARCH=@ARCH@
DEFAULT_PREFIX=/usr/local   # the prefix the tree was built for (make install PREFIX=/usr/local)

usage() {
    cat <<EOF
Usage: sudo ./install.sh [--with-deps] [--root DIR] [--prefix DIR]

Installs Kuasar (Java) $VERSION: the sandboxer daemons with their own Java runtime, the containerd helpers and the
systemd units into PREFIX (default $DEFAULT_PREFIX), the vmm-sandboxer configs into /var/lib/kuasar (an existing,
edited config is kept). Checks every file against SHA256SUMS first. Writes /var/lib/kuasar/install-manifest, which
uninstall.sh ($DEFAULT_PREFIX/lib/kuasar/uninstall.sh) reads.

  --with-deps    apt-get install what is missing of runc, containernetworking-plugins and containerd (only a
                 containerd 1.7 or newer: Debian 12's 1.6 cannot run Kuasar and is not installed)
  --root DIR     install below DIR instead of / (like make's DESTDIR); the installed daemons run from there too
  --prefix DIR   install the programs into DIR instead of $DEFAULT_PREFIX (systemd finds the units only under
                 /usr/local or /etc; see the hint printed at the end)
  -h, --help     this text
EOF
}

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

ROOT=/
PREFIX=$DEFAULT_PREFIX
WITH_DEPS=0
while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#--prefix=}; shift ;;
        --with-deps) WITH_DEPS=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

HERE=$(cd "$(dirname "$0")" && pwd -P)
[ "$(uname -s)" = Linux ] || die "this release is for Linux"
host_arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
case $host_arch in x86_64) host_arch=amd64 ;; aarch64) host_arch=arm64 ;; esac
[ "$host_arch" = "$ARCH" ] || die "this release is for $ARCH, this machine is $host_arch"
case $PREFIX in /*) ;; *) die "--prefix must be an absolute path: $PREFIX" ;; esac
PREFIX=$(realpath -m "$PREFIX")
[ "$PREFIX" != / ] || die "--prefix / is not supported (use /usr)"
mkdir -p "$ROOT" 2>/dev/null || die "cannot create --root $ROOT"
ROOT=$(realpath -m "$ROOT")
R=${ROOT%/}   # "" for /: every destination is $R<absolute path>
if [ "$(id -u)" != 0 ]; then
    [ -n "$R" ] || die "installing into / needs root: sudo $0"
    [ $WITH_DEPS = 0 ] || die "--with-deps needs root (apt-get)"
fi
[ $WITH_DEPS = 0 ] || [ -z "$R" ] || die "--with-deps installs host packages; it cannot be combined with --root"

# ---- 1. the release is intact: every file as in SHA256SUMS, and nothing else --------------------------------------
cd "$HERE"
[ -f SHA256SUMS ] || die "$HERE/SHA256SUMS missing: not an unpacked Kuasar release"
sha256sum --quiet --strict -c SHA256SUMS >/dev/null 2>&1 || {
    sha256sum --quiet -c SHA256SUMS 2>&1 | head -n 5 >&2 || true
    die "checksums do not match SHA256SUMS: the release is damaged; unpack it again (and check the .sha256 of the tarball)"
}
mapfile -t FILES < <(sed 's/^[0-9a-f]\{64\}  //' SHA256SUMS)
extra=$(comm -13 <(printf '%s\n' "${FILES[@]}" | sort) <(find . -type f ! -name SHA256SUMS -printf '%P\n' | sort) | head -n 5 || true)
[ -z "$extra" ] || die "files not in SHA256SUMS (the release was changed): $extra"
say "Kuasar (Java) $VERSION: ${#FILES[@]} files match SHA256SUMS"

# ---- 2. host packages (--with-deps) -------------------------------------------------------------------------------
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if [ $WITH_DEPS = 1 ]; then
    command -v apt-get >/dev/null || die "--with-deps needs apt-get (Debian or Ubuntu); install runc, containerd and the CNI plugins yourself"
    want=()
    for p in runc containernetworking-plugins; do installed "$p" || want+=("$p"); done
    ctrd_ok=0
    if command -v containerd >/dev/null 2>&1; then
        ctrd_ok=1   # whichever containerd is there (a package or an upstream release) stays; its version is checked below
    elif ! installed containerd; then
        want+=(containerd)
    fi
    if [ ${#want[@]} -gt 0 ]; then
        say "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        if [ $ctrd_ok = 0 ] && printf '%s\n' "${want[@]}" | grep -qx containerd; then
            cand=$(apt-cache policy containerd 2>/dev/null | awk '/Candidate:/ {print $2}')
            if [ -z "$cand" ] || [ "$cand" = "(none)" ] || dpkg --compare-versions "$cand" lt 1.7; then
                say "NOT installing containerd ${cand:-(no package)}: Kuasar needs containerd 2.x or 1.7 (see the end)"
                mapfile -t want < <(printf '%s\n' "${want[@]}" | grep -vx containerd || true)
            fi
        fi
        if [ ${#want[@]} -gt 0 ]; then
            say "apt-get install ${want[*]}"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}" \
                || die "apt-get install ${want[*]} failed"
        fi
    else
        say "runc, containernetworking-plugins and containerd are installed already"
    fi
fi

# ---- 3. plan: where each file goes --------------------------------------------------------------------------------
MANIFEST=$R/var/lib/kuasar/install-manifest
dest_of() {   # tree path -> $dest: its absolute destination below the root, or "" for the release's top-level files
    case $1 in
        usr/local/*) dest=$PREFIX/${1#usr/local/} ;;
        var/lib/kuasar/*|etc/sysconfig/kuasar-*) dest=/$1 ;;
        install.sh|uninstall.sh|README) dest= ;;
        *) die "unexpected file in the release: $1" ;;
    esac
}
is_config() { case $1 in var/lib/kuasar/*.toml|etc/sysconfig/kuasar-*) return 0 ;; *) return 1 ;; esac; }
needs_prefix_edit() { case $1 in usr/local/bin/*-sandboxer|usr/local/lib/systemd/system/*.service) return 0 ;; *) return 1 ;; esac; }

declare -A NEW=()
SRC=() DST=()
for f in "${FILES[@]}"; do
    dest_of "$f"
    [ -n "$dest" ] || continue
    SRC+=("$f") DST+=("$dest")
    is_config "$f" || NEW[$dest]=1
done
declare -A INODE=()   # tree path -> links:inode (hard links: the jars the daemons share)
while read -r n i f; do INODE[$f]=$n:$i; done < <(find . -type f -printf '%n %i %P\n')
OLD=() OLD_DIRS=()
if [ -f "$MANIFEST" ]; then
    old_version=$(sed -n 's/^# kuasar \([^ ]*\) .*/\1/p' "$MANIFEST" | head -n1)
    say "upgrading the install of ${old_version:-an earlier release} (its manifest: $MANIFEST)"
    mapfile -t OLD < <(sed -n 's/^f //p' "$MANIFEST")
    mapfile -t OLD_DIRS < <(sed -n 's/^d //p' "$MANIFEST")
fi

# ---- 4. copy ------------------------------------------------------------------------------------------------------
# Each file is written beside its destination and renamed over it: running daemons and pods keep the files they have
# open (a jar rewritten in place would crash a running JVM; a running helper cannot be written: "text file busy").
# Ownership is not copied (files unpacked by a user and installed with sudo belong to root).
declare -A DIRS=() LINKED=()
for d in "${OLD_DIRS[@]}"; do DIRS[$d]=1; done
mkdirs() {   # creates the missing parents of $1 below the root, remembering each one made
    local dir=$1 todo=()
    while [ -n "$dir" ] && [ ! -d "$R$dir" ]; do todo=("$dir" "${todo[@]}"); dir=${dir%/*}; done
    for dir in "${todo[@]}"; do
        mkdir -m 0755 "$R$dir" || die "cannot create $R$dir"
        DIRS[$dir]=1
    done
}
trap 'rm -f "${tmp:-}"' EXIT
copied=0 kept=()
for i in "${!SRC[@]}"; do
    f=${SRC[$i]} d=${DST[$i]}
    mkdirs "${d%/*}"
    if is_config "$f" && [ -e "$R$d" ]; then
        cmp -s "$f" "$R$d" || kept+=("$d")
        continue
    fi
    tmp=$R$d.kuasar-new.$$
    [ -e "$R$d" ] || [ -L "$R$d" ] || tmp=$R$d   # nothing there to replace: written in place
    ino=${INODE[$f]}
    if [ "${ino%%:*}" -gt 1 ] && [ -n "${LINKED[$ino]:-}" ]; then
        ln -f "${LINKED[$ino]}" "$tmp"   # a jar the daemons share: one copy, as in the release
    elif [ "$PREFIX" != "$DEFAULT_PREFIX" ] && needs_prefix_edit "$f"; then
        sed "s|$DEFAULT_PREFIX/|$PREFIX/|g; s|^prefix=$DEFAULT_PREFIX\$|prefix=$PREFIX|" "$f" >"$tmp" && chmod --reference="$f" "$tmp"
    else
        cp --preserve=mode,timestamps "$f" "$tmp"
    fi || die "cannot write $tmp"
    [ "$tmp" = "$R$d" ] || mv -f "$tmp" "$R$d" || die "cannot install $R$d"
    tmp=
    [ "${ino%%:*}" -le 1 ] || [ -n "${LINKED[$ino]:-}" ] || LINKED[$ino]=$R$d
    copied=$((copied + 1))
done

# Files of the earlier install that this release no longer has (a jar of another version would join the classpath
# of lib/kuasar/<daemon>/*): removed. The same for jars a `make install` left in the daemons' directories.
removed=0
for d in "${OLD[@]}"; do
    if [ -n "$d" ] && [ -z "${NEW[$d]:-}" ] && [ -e "$R$d" ]; then rm -f "$R$d"; removed=$((removed + 1)); fi
done
for dir in "$R$PREFIX"/lib/kuasar/*-sandboxer; do
    for j in "$dir"/*.jar; do
        [ -e "$j" ] || continue
        if [ -z "${NEW[${j#"$R"}]:-}" ]; then rm -f "$j"; removed=$((removed + 1)); fi
    done
done

# ---- 5. manifest --------------------------------------------------------------------------------------------------
mkdirs /var/lib/kuasar
{
    echo "# kuasar $VERSION $ARCH installed by install.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); prefix=$PREFIX"
    echo "# d: a directory install.sh created (removed by uninstall.sh when empty); f: an installed file."
    echo "# Not listed, and kept by uninstall.sh: /var/lib/kuasar/*.toml and /etc/sysconfig/kuasar-* (configs) and the daemons' state."
    printf '%s\n' "${!DIRS[@]}" | sort | sed '/^$/d; s/^/d /'
    printf '%s\n' "${!NEW[@]}" | sort | sed 's/^/f /'
} >"$MANIFEST.tmp"
mv -f "$MANIFEST.tmp" "$MANIFEST"

# ---- 6. check: the installed daemon starts on its bundled Java runtime ----------------------------------------------
out=$(env -u KUASAR_JAVA -u KUASAR_JAVA_OPTS "$R$PREFIX/bin/runc-sandboxer" --version 2>&1) \
    || die "installed, but $R$PREFIX/bin/runc-sandboxer does not start: $out"
if [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl daemon-reload || say "systemctl daemon-reload failed"
fi

# ---- 7. report and next steps -------------------------------------------------------------------------------------
say "installed $copied files into $R$PREFIX and $R/var/lib/kuasar$([ $removed = 0 ] || echo "; removed $removed files of an earlier install")"
say "  $R$PREFIX/bin: runc-sandboxer vmm-sandboxer wasm-sandboxer quark-sandboxer, containerd-shim-kuasar-{runc,vmm,wasm,quark}-{v1,v2}"
say "  $R$PREFIX/lib/kuasar: the daemons' jars, jre/ (Java $(sed -n 's/^JAVA_VERSION="\(.*\)"/\1/p' "$R$PREFIX/lib/kuasar/jre/release")), uninstall.sh;  $R$PREFIX/libexec/kuasar: helpers"
say "  $R$PREFIX/lib/systemd/system: kuasar-runc kuasar-vmm kuasar-wasm kuasar-quark (.service)"
say "  $R/var/lib/kuasar: config.toml (vmm-sandboxer), config_clh.toml, config_stratovirt.toml"
say "  $R/etc/sysconfig: kuasar-runc kuasar-vmm kuasar-wasm kuasar-quark (each unit's OPTIONS)"
say "  $out"
for d in "${kept[@]:-}"; do
    [ -z "$d" ] || say "  kept your edited $R$d (this release's: $HERE$d)"
done
say "  manifest: $MANIFEST; uninstall: sudo $R$PREFIX/lib/kuasar/uninstall.sh${R:+ --root $R}"

[ -z "$R" ] || exit 0
ctrd=$(containerd --version 2>/dev/null | awk '{print $3}' | sed 's/^v//; s/~.*//' || true)
runc_v=$(runc --version 2>/dev/null | awk 'NR==1 {print $3}' || true)
cni=
for d in /opt/cni/bin /usr/lib/cni; do [ -x "$d/bridge" ] && { cni=$d; break; }; done
shim=$PREFIX/bin/containerd-shim-kuasar-runc-v1
echo
echo "Host: runc ${runc_v:-MISSING}, containerd ${ctrd:-MISSING}, CNI plugins ${cni:-MISSING}"
[ -n "$runc_v" ] && [ -n "$cni" ] || echo "  missing packages: sudo ./install.sh --with-deps (runc, containernetworking-plugins)"
show_2x() {
    cat <<EOF
  containerd 2.x: add to /etc/containerd/config.toml (version = 3), then restart containerd:
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-runc]
        runtime_type = "io.containerd.runc.v2"
        runtime_path = "$shim"
        sandboxer = "runc"
      [proxy_plugins.runc]
        type = "sandbox"
        address = "/run/runc-sandboxer.sock"
EOF
}
show_17() {
    [ "$PREFIX" = "$DEFAULT_PREFIX" ] || echo "  containerd 1.7 finds the shims on its PATH: add $PREFIX/bin to it."
    cat <<EOF
  containerd 1.7 (shim mode): add to /etc/containerd/config.toml (version = 2), give containerd
  ENABLE_CRI_SANDBOXES=1 (systemctl edit containerd: [Service] Environment=ENABLE_CRI_SANDBOXES=1), restart it:
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kuasar-runc]
        runtime_type = "io.containerd.kuasar-runc.v2"
        sandbox_mode = "shim"
EOF
}
echo "Next steps:"
echo "  start the runc sandboxer before containerd:"
if [ "$PREFIX" = "$DEFAULT_PREFIX" ]; then
    echo "      sudo systemctl enable --now kuasar-runc     (vmm, wasm, quark: kuasar-vmm, kuasar-wasm, kuasar-quark)"
else
    echo "      sudo systemctl link $PREFIX/lib/systemd/system/kuasar-runc.service && sudo systemctl enable --now kuasar-runc"
fi
echo "      (no systemd: $PREFIX/bin/runc-sandboxer --listen /run/runc-sandboxer.sock --dir /run/kuasar-runc)"
case $ctrd in
    2.*) show_2x ;;
    1.7.*) show_17 ;;
    *)
        echo "  containerd: ${ctrd:-none found}. Kuasar needs containerd 2.x (its sandbox API) or 1.7 (shim mode); Debian 12's"
        echo "  containerd 1.6 can do neither: install containerd 2.x (https://github.com/containerd/containerd/releases,"
        echo "  with its systemd unit) or 1.7 (Debian 13's package, or Docker's containerd.io), then:"
        show_2x
        show_17 ;;
esac
echo "  then pods choose the runtime handler kuasar-runc (crictl runp --runtime kuasar-runc, or a Kubernetes RuntimeClass)."
echo "  microVM pods (kuasar-vmm) also need QEMU and the guest kernel + initramfs in /var/lib/kuasar, which this release"
echo "  does not contain: build them from the source tree with make vmm-image. gVisor pods: make runsc."
