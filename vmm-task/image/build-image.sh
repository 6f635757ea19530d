#!/bin/bash
# Builds the guest image of the microVM sandboxer (vmm-sandboxer): an uncompressed PVH kernel and an lz4 initramfs
# holding busybox, the virtio/9p/virtiofs/vsock/overlay modules, runc, the C helpers, a jlink'd JRE 25 with an AOT
# cache, and the guest agent (vmm-task). Everything comes from Debian packages and the Maven build; docs/vmm-image.md.
#
#   build-image.sh [--force] [--no-install]        (root; run `make build` first; `make vmm-image` runs this)
#
#   --force       rebuild even when the outputs are newer than every input
#   --no-install  do not apt-get install missing packages (fail instead)
#
# Outputs (each written to a temp file and renamed):
#   $KUASAR_IMAGE_DIR/vmlinux.bin     ELF vmlinux (QEMU boots it through its PVH note: no in-guest decompression)
#   $KUASAR_IMAGE_DIR/kuasar.initrd   cpio newc, lz4 legacy format; reproducible: the same inputs give the same bytes
#                                     (the AOT cache excepted, which JDK 25 does not build deterministically: it is
#                                     reused from the cache dir, see below)
#
# Environment:
#   KUASAR_IMAGE_DIR       output directory (default /var/lib/kuasar)
#   KUASAR_IMAGE_CACHE     download/unpack cache (default /var/cache/kuasar/vmm-image): kernel .deb, unpacked kernel,
#                          extracted vmlinux, jlink'd JRE, built helpers. A second run needs no network.
#   KUASAR_VMM_TASK_JARS   a directory of jars to use instead of vmm-task/target/lib/*.jar + vmm-task/target/
#                          vmm-task-*.jar (to test the image before the vmm-task module is built; the class path
#                          is its vmm-task-*.jar, then every other *.jar in it, sorted by name)
#   KUASAR_KERNEL_ABI      pin the kernel ABI (e.g. 6.1.0-57); default: what `apt-cache depends linux-image-amd64` says
#   JAVA_HOME              JDK 25+ whose jlink/jdeps build the JRE (default /usr/lib/jvm/temurin-25-jdk-amd64)
#   SOURCE_DATE_EPOCH      mtime of every file in the initramfs (default: the kernel package's build date)
#   KUASAR_IMAGE_LZ4_LEVEL lz4 level (default 9: smaller image, same decompression speed in the guest)
#   KUASAR_IMAGE_AOT=0     build without the AOT cache (to measure what it brings)
#   KUASAR_IMAGE_KEEP_STAGING=1  keep the staging root (printed) for debugging
set -euo pipefail
umask 022
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
OUT_DIR=${KUASAR_IMAGE_DIR:-/var/lib/kuasar}
CACHE=${KUASAR_IMAGE_CACHE:-/var/cache/kuasar/vmm-image}
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
LZ4_LEVEL=${KUASAR_IMAGE_LZ4_LEVEL:-9}
MAIN_CLASS=io.kuasar.vmm.task.VmmTaskMain
PACKAGES=(qemu-system-x86 busybox-static kmod cpio lz4 xz-utils runc musl-tools)
# Modules the guest loads (with their dependencies, resolved from modules.dep). Only virtio transports, 9p,
# virtiofs (fuse), overlay, virtio-rng, vsock and the balloon (free page reporting): no netfilter. virtio_mmio is for `-M microvm` (devices via ACPI).
MODULES=(virtio_pci virtio_mmio virtio_console failover net_failover virtio_net virtio_blk
         9pnet 9pnet_virtio netfs fscache 9p fuse virtiofs overlay virtio_rng
         vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport virtio_balloon)
# JRE modules: this list, plus what `jdeps --print-module-deps` finds in the agent's jars, minus JRE_EXCLUDE.
# java.desktop is excluded: jdeps finds it through jackson-databind's optional java.beans support (which jackson
# skips when the module is absent), and it would add ~23 MB (AWT, fonts, imaging) to every guest's RAM.
JRE_MODULES=java.base,java.logging,jdk.net,java.naming,java.management,jdk.unsupported,java.xml
JRE_EXCLUDE=java.desktop
# -AOTAdapterCaching/-AOTStubCaching: JDK 25 stores machine code (i2c/c2i adapters) in the AOT cache, generated for
# the build host's CPU, and does not check the CPU when it maps the cache: the guest (QEMU TCG, a qemu64 CPU without
# AVX) died with SIGILL in ~AdapterBlob. Without them the cache holds classes only.
JVM_OPTS=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xss512k -Xms16m -Xmx96m -XX:+UseCompactObjectHeaders
          --enable-native-access=ALL-UNNAMED -XX:+UnlockDiagnosticVMOptions -XX:-AOTAdapterCaching -XX:-AOTStubCaching)
G_JRE=/opt/kuasar/jre
G_TASK=/opt/kuasar/vmm-task
G_LIBEXEC=/opt/kuasar/libexec
G_AOT=$G_TASK/vmm-task.aot

FORCE=0
INSTALL=1
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        --no-install) INSTALL=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-image.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
    esac
done

trap 'echo "build-image.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
die() { echo "build-image.sh: $*" >&2; exit 1; }
warn() { echo "build-image.sh: WARNING: $*" >&2; }
log() { echo "build-image.sh: $*"; }

T0=$(date +%s.%N)
T_STEP=$T0
STEP=""
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
step() { # ends the current step (prints its duration) and starts the next one
    local now; now=$(date +%s.%N)
    [ -z "$STEP" ] || awk -v s="$STEP" -v a="$T_STEP" -v b="$now" 'BEGIN{printf "build-image.sh: %-36s %6.1f s\n", s, b-a}'
    STEP=${1:-}
    T_STEP=$now
}

[ "$(id -u)" = 0 ] || die "must run as root (mknod, chroot, apt-get)"

# ---------------------------------------------------------------------------------------------------------------
step "packages"
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
missing=()
for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$INSTALL" = 1 ] || die "missing packages: ${missing[*]} (apt-get install --no-install-recommends ${missing[*]})"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } \
        || die "apt-get install ${missing[*]} failed"
fi
[ -x "$JAVA_HOME/bin/jlink" ] || die "no jlink in JAVA_HOME=$JAVA_HOME (JDK 25 needed)"
jdk_major=$(sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$JAVA_HOME/release")
[ "${jdk_major:-0}" -ge 25 ] || die "JAVA_HOME=$JAVA_HOME is JDK ${jdk_major:-?}; the image needs JDK 25+ (AOT cache, compact headers)"

# ---------------------------------------------------------------------------------------------------------------
step "inputs"
mkdir -p "$CACHE/debs" "$CACHE/kernel" "$CACHE/jre" "$CACHE/helpers"

# Guest agent jars: main jar first, then the dependencies, sorted by name.
JARS=()
if [ -n "${KUASAR_VMM_TASK_JARS:-}" ]; then
    [ -d "$KUASAR_VMM_TASK_JARS" ] || die "KUASAR_VMM_TASK_JARS=$KUASAR_VMM_TASK_JARS is not a directory"
    for j in "$KUASAR_VMM_TASK_JARS"/vmm-task-*.jar; do [ -f "$j" ] && JARS+=("$j"); done
    for j in "$KUASAR_VMM_TASK_JARS"/*.jar; do
        case "${j##*/}" in vmm-task-*) continue ;; esac
        [ -f "$j" ] && JARS+=("$j")
    done
    [ ${#JARS[@]} -gt 0 ] || die "no jar in KUASAR_VMM_TASK_JARS=$KUASAR_VMM_TASK_JARS"
else
    T="$REPO/vmm-task/target"
    for j in "$T"/vmm-task-*.jar; do
        case "$j" in *-sources.jar|*-tests.jar|*-javadoc.jar|*-test-sources.jar) continue ;; esac
        [ -f "$j" ] && JARS+=("$j")
    done
    [ ${#JARS[@]} -gt 0 ] || die "no $T/vmm-task-*.jar: run \`make build\` first (or set KUASAR_VMM_TASK_JARS)"
    [ ${#JARS[@]} -eq 1 ] || die "more than one main jar in $T: ${JARS[*]##*/} (run \`make clean build\`)"
    [ -d "$T/lib" ] || die "no $T/lib (the agent's dependencies): run \`make build\` first"
    for j in "$T"/lib/*.jar; do [ -f "$j" ] && JARS+=("$j"); done
fi
declare -A seen_jar=()
for j in "${JARS[@]}"; do
    n=${j##*/}
    [ -z "${seen_jar[$n]:-}" ] || die "two jars named $n"
    seen_jar[$n]=1
done

# Helpers: the Maven build's static binaries, else built here from the C sources.
HELPER_SRC="$REPO/runc-sandboxer/src/main/c"
HELPERS=()
HELPER_INPUTS=()
for h in kuasar-monitor kuasar-holder; do
    if [ -x "$REPO/runc-sandboxer/target/libexec/$h" ]; then
        HELPERS+=("$REPO/runc-sandboxer/target/libexec/$h")
        HELPER_INPUTS+=("$REPO/runc-sandboxer/target/libexec/$h")
    else
        [ -f "$HELPER_SRC/$h.c" ] || die "neither runc-sandboxer/target/libexec/$h nor $HELPER_SRC/$h.c"
        HELPERS+=("$CACHE/helpers/$h")
        HELPER_INPUTS+=("$HELPER_SRC/$h.c" "$HELPER_SRC/build.sh")
    fi
done

RUNC_BIN=""
for r in /usr/sbin/runc /usr/bin/runc; do [ -x "$r" ] && { RUNC_BIN=$r; break; }; done
[ -n "$RUNC_BIN" ] || die "runc not found in /usr/sbin or /usr/bin (apt-get install runc)"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 || die "$BUSYBOX is missing or not static (apt-get install busybox-static)"

# Kernel ABI: local apt metadata only (no network unless the .deb is not cached yet).
resolve_abi() {
    apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)-amd64$/\1/p' | head -n1
}
ABI=${KUASAR_KERNEL_ABI:-$(resolve_abi)}
if [ -z "$ABI" ]; then
    apt-get update -q >/dev/null 2>&1 || true
    ABI=$(resolve_abi)
fi
if [ -z "$ABI" ]; then # offline without apt lists: use the newest cached kernel
    d=$(ls "$CACHE"/debs/linux-image-*-amd64_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$d" ] || die "cannot resolve the kernel ABI (apt-cache depends linux-image-amd64) and no kernel is cached"
    ABI=$(basename "$d" | sed -n 's/^linux-image-\(.*\)-amd64_.*/\1/p')
    warn "apt metadata has no linux-image-amd64; using the cached kernel $ABI"
fi
KPKG=linux-image-$ABI-amd64
KVER=$ABI-amd64

# Up to date? Outputs newer than every input file, and built from the same list of inputs.
INPUT_FILES=("${BASH_SOURCE[0]}" "$SCRIPT_DIR/init" "${JARS[@]}" "${HELPER_INPUTS[@]}" "$RUNC_BIN" "$BUSYBOX"
             "$JAVA_HOME/release")
MANIFEST=$( {
    printf 'kernel %s\nlz4 %s\nsde %s\njava_home %s\nmodules %s\njre %s-%s\nopts %s\n' "$KPKG" "$LZ4_LEVEL" \
        "${SOURCE_DATE_EPOCH:-}" "$JAVA_HOME" "${MODULES[*]}" "$JRE_MODULES" "$JRE_EXCLUDE" "${JVM_OPTS[*]}"
    echo "aot ${KUASAR_IMAGE_AOT:-1}"
    for f in "${INPUT_FILES[@]}"; do stat -L -c '%n %s %Y' "$f"; done
} | sha256sum | cut -c1-64)
STAMP="$CACHE/last-build.$(printf %s "$OUT_DIR" | sha256sum | cut -c1-16)"
if [ "$FORCE" = 0 ] && [ -f "$OUT_DIR/vmlinux.bin" ] && [ -f "$OUT_DIR/kuasar.initrd" ] \
    && [ "$(cat "$STAMP" 2>/dev/null)" = "$MANIFEST" ]; then
    newer=$(find -L "${INPUT_FILES[@]}" -maxdepth 0 \( -newer "$OUT_DIR/kuasar.initrd" -o -newer "$OUT_DIR/vmlinux.bin" \) 2>/dev/null | head -n1)
    if [ -z "$newer" ]; then
        log "up to date: $OUT_DIR/vmlinux.bin $OUT_DIR/kuasar.initrd (--force rebuilds)"
        exit 0
    fi
fi

# ---------------------------------------------------------------------------------------------------------------
step "kernel: download"
kdeb() { ls "$CACHE"/debs/"$KPKG"_*_amd64.deb 2>/dev/null | sort -V | tail -n1 || true; }
KDEB=$(kdeb)
if [ -z "$KDEB" ]; then
    log "downloading $KPKG"
    ( cd "$CACHE/debs" && apt-get download -q "$KPKG" >/dev/null 2>&1 ) \
        || { apt-get update -q >/dev/null && ( cd "$CACHE/debs" && apt-get download -q "$KPKG" >/dev/null ); } \
        || die "apt-get download $KPKG failed"
    KDEB=$(kdeb)
    [ -n "$KDEB" ] || die "apt-get download $KPKG left no .deb in $CACHE/debs"
fi
KNAME=$(basename "$KDEB" .deb)
KROOT="$CACHE/kernel/$KNAME"

step "kernel: unpack + depmod"
if [ ! -f "$KROOT/.done" ]; then
    rm -rf "$KROOT"
    mkdir -p "$KROOT"
    dpkg -x "$KDEB" "$KROOT"
    [ -d "$KROOT/lib/modules/$KVER" ] || die "$KDEB has no lib/modules/$KVER"
    depmod -b "$KROOT" "$KVER"
    touch "$KROOT/.done"
    # Keep one kernel: drop the trees and debs of older ABIs.
    for d in "$CACHE"/kernel/*; do [ "$d" = "$KROOT" ] || rm -rf "$d"; done
    for d in "$CACHE"/debs/*.deb; do [ "$d" = "$KDEB" ] || rm -f "$d"; done
fi
BZIMAGE="$KROOT/boot/vmlinuz-$KVER"
[ -f "$BZIMAGE" ] || die "no $BZIMAGE"

step "kernel: extract vmlinux"
# The bzImage carries the kernel as a compressed ELF. Find the compression magic, decompress from there and keep the
# first output that is an ELF file (earlier occurrences of the magic can be data).
is_elf() { [ "$(head -c4 "$1" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; }
extract_vmlinux() { # bzImage out
    local off rc
    for off in $(grep -obUaP '\xfd7zXZ\x00' "$1" | cut -d: -f1); do
        # tail gets SIGPIPE when xz stops at the end of the stream: only xz's status counts
        tail -c +$((off + 1)) "$1" | xz -dc --single-stream >"$2" 2>/dev/null && rc=0 || rc=${PIPESTATUS[1]}
        [ "$rc" = 0 ] && is_elf "$2" && return 0
    done
    for off in $(grep -obUaP '\x02\x21\x4c\x18' "$1" | cut -d: -f1); do
        tail -c +$((off + 1)) "$1" | lz4 -dc >"$2" 2>/dev/null || true
        is_elf "$2" && return 0
    done
    return 1
}
if [ ! -f "$KROOT/vmlinux.bin" ]; then
    extract_vmlinux "$BZIMAGE" "$KROOT/vmlinux.bin.tmp" || die "no ELF kernel found in $BZIMAGE"
    mv "$KROOT/vmlinux.bin.tmp" "$KROOT/vmlinux.bin"
fi
SDE=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$BZIMAGE")}

# ---------------------------------------------------------------------------------------------------------------
step "helpers"
for i in 0 1; do
    h=${HELPERS[$i]}
    case "$h" in
        "$CACHE"/helpers/*)
            n=${h##*/}
            if [ ! -x "$h" ] || [ "$HELPER_SRC/$n.c" -nt "$h" ] || [ "$HELPER_SRC/build.sh" -nt "$h" ]; then
                log "building $n (runc-sandboxer/target/libexec/$n not found)"
                "$HELPER_SRC/build.sh" "$h.tmp" "$HELPER_SRC/$n.c"
                mv "$h.tmp" "$h"
            fi
            ;;
    esac
done

# ---------------------------------------------------------------------------------------------------------------
step "jre: jdeps + jlink"
jar_sum=$(sha256sum "${JARS[@]}" | awk '{print $1}' | sha256sum | cut -c1-16)
deps_file="$CACHE/jre/jdeps-$jar_sum"
if [ ! -f "$deps_file" ]; then
    cp=$(IFS=:; echo "${JARS[*]}")
    if found=$("$JAVA_HOME/bin/jdeps" --print-module-deps --ignore-missing-deps --multi-release "$jdk_major" \
            --class-path "$cp" "${JARS[@]}" 2>"$CACHE/jre/jdeps.err"); then
        echo "$found" | tail -n1 >"$deps_file"
    else
        warn "jdeps failed ($(head -c 400 "$CACHE/jre/jdeps.err")); using the default module list"
        : >"$deps_file"
    fi
fi
MODS=$(printf '%s,%s' "$JRE_MODULES" "$(cat "$deps_file")" | tr ',' '\n' | sed '/^$/d' | sort -u \
    | grep -vxF -f <(tr ',' '\n' <<<"$JRE_EXCLUDE") | paste -sd,)
jre_key=$(printf '%s\n%s\n' "$(cat "$JAVA_HOME/release")" "$MODS" | sha256sum | cut -c1-16)
JRE="$CACHE/jre/jre-$jre_key"
if [ ! -f "$JRE/.done" ]; then
    log "jlink --add-modules $MODS"
    rm -rf "$JRE"
    "$JAVA_HOME/bin/jlink" --add-modules "$MODS" --strip-debug --no-header-files --no-man-pages \
        --output "$JRE" >/dev/null
    # CDS: the guest runs with -XX:+UseCompactObjectHeaders, which maps lib/server/classes_coh.jsa, not the
    # classes.jsa/classes_nocoops.jsa that jlink --generate-cds-archive makes. Dump the archive the guest uses.
    "$JRE/bin/java" -XX:+UseCompactObjectHeaders -XX:+UseSerialGC -Xshare:dump >"$JRE/cds-dump.log" 2>&1 \
        || { cat "$JRE/cds-dump.log" >&2; die "CDS dump failed"; }
    rm -f "$JRE/cds-dump.log" "$JRE/lib/server/classes_nocoops.jsa"
    [ -f "$JRE/lib/server/classes_coh.jsa" ] || die "CDS dump made no lib/server/classes_coh.jsa"
    touch "$JRE/.done"
    for d in "$CACHE"/jre/jre-*; do [ "$d" = "$JRE" ] || rm -rf "$d"; done
fi

# ---------------------------------------------------------------------------------------------------------------
step "staging: busybox, modules, runc"
mkdir -p "$OUT_DIR"
STAGE=$(mktemp -d "$CACHE/staging.XXXXXX")
TMP_OUT=()
cleanup() {
    if [ "${KUASAR_IMAGE_KEEP_STAGING:-0}" = 1 ]; then echo "build-image.sh: staging root kept: $STAGE" >&2; STAGE=/nonexistent; fi
    if mountpoint -q "$STAGE/proc" 2>/dev/null; then umount "$STAGE/proc" || umount -l "$STAGE/proc" || true; fi
    if mountpoint -q "$STAGE/proc" 2>/dev/null; then
        echo "build-image.sh: $STAGE/proc still mounted; not removing $STAGE" >&2
    else
        rm -rf --one-file-system "$STAGE"
    fi
    [ ${#TMP_OUT[@]} -eq 0 ] || rm -f "${TMP_OUT[@]}"
}
trap cleanup EXIT
chmod 0755 "$STAGE"
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,etc,lib,tmp,run,root,newroot,"$G_LIBEXEC",$G_TASK/lib}
chmod 1777 "$STAGE/tmp"
chmod 0700 "$STAGE/root"
mknod -m 0600 "$STAGE/dev/console" c 5 1
mknod -m 0666 "$STAGE/dev/null" c 1 3
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$STAGE/etc/passwd"
printf 'root:x:0:\n' >"$STAGE/etc/group"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$STAGE/etc/hosts"
install -m 0755 "$SCRIPT_DIR/init" "$STAGE/init"

install -m 0755 "$BUSYBOX" "$STAGE/bin/busybox"
while read -r p; do # bin/sh, sbin/insmod, usr/bin/awk, linuxrc, ...
    [ "$p" = bin/busybox ] && continue
    [ "${p%/*}" = "$p" ] || [ -d "$STAGE/${p%/*}" ] || mkdir -p "$STAGE/${p%/*}"
    ln -sfn /bin/busybox "$STAGE/$p"
done < <("$BUSYBOX" --list-full)

# copy_libs SKIP_PREFIX FILE...: copies the shared libraries ldd lists for each FILE (and the dynamic loader) to the
# same paths in the staging root, except those under SKIP_PREFIX (the JRE's own libraries).
copy_libs() {
    local skip=$1 f lib
    shift
    for f in "$@"; do
        ldd "$f" >/dev/null 2>&1 || continue # static or not an ELF
        # (the JRE's lib/*.so find libjvm.so at run time: the launcher has loaded it already)
        { ldd "$f" | grep 'not found' | grep -v '^\s*libjvm\.so ' || true; } | sort -u | while read -r l; do warn "$f: $l"; done
        for lib in $(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
            case "$lib" in "$skip"/*) continue ;; esac
            [ -e "$STAGE$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$STAGE$lib"
        done
    done
}

# Modules in load order: modprobe --show-depends prints the insmod sequence for each module and its dependencies.
MODDIR=/lib/modules/$KVER
mkdir -p "$STAGE$MODDIR"
for m in "${MODULES[@]}"; do
    out=$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>&1) || die "module $m: $out"
    echo "$out" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' >"$STAGE/.ko-host.list"
: >"$STAGE/lib/modules/load.list"
while read -r ko; do
    rel=${ko#"$KROOT$MODDIR"/}
    case "$rel" in
        *.ko.xz) dst=${rel%.xz}; mkdir -p "$STAGE$MODDIR/$(dirname "$dst")"; xz -dc "$ko" >"$STAGE$MODDIR/$dst" ;;
        *.ko.zst) dst=${rel%.zst}; mkdir -p "$STAGE$MODDIR/$(dirname "$dst")"; zstd -qdc "$ko" >"$STAGE$MODDIR/$dst" ;;
        *.ko.gz) dst=${rel%.gz}; mkdir -p "$STAGE$MODDIR/$(dirname "$dst")"; gzip -dc "$ko" >"$STAGE$MODDIR/$dst" ;;
        *.ko) dst=$rel; install -D -m 0644 "$ko" "$STAGE$MODDIR/$dst" ;;
        *) die "unexpected module file $ko" ;;
    esac
    chmod 0644 "$STAGE$MODDIR/$dst"
    echo "$MODDIR/$dst" >>"$STAGE/lib/modules/load.list"
done <"$STAGE/.ko-host.list"
rm -f "$STAGE/.ko-host.list"
[ -s "$STAGE/lib/modules/load.list" ] || die "no module resolved"

install -m 0755 "$RUNC_BIN" "$STAGE/usr/bin/runc"
copy_libs /nonexistent "$RUNC_BIN"
install -m 0755 "${HELPERS[0]}" "$STAGE$G_LIBEXEC/kuasar-monitor"
install -m 0755 "${HELPERS[1]}" "$STAGE$G_LIBEXEC/kuasar-holder"
copy_libs /nonexistent "${HELPERS[@]}" # empty for static musl helpers; glibc ones (gcc fallback) need libc

step "staging: jre + agent"
mkdir -p "$STAGE$G_JRE"
cp -a "$JRE"/. "$STAGE$G_JRE"/
rm -f "$STAGE$G_JRE/.done"
copy_libs "$JRE" "$JRE/bin/java" "$JRE/lib/server/libjvm.so" "$JRE"/lib/*.so

CP=()
for j in "${JARS[@]}"; do
    install -m 0644 "$j" "$STAGE$G_TASK/lib/${j##*/}"
    CP+=("$G_TASK/lib/${j##*/}")
done
write_args() { # [aot]: the JDK @argfile the guest's /init passes to java
    {
        printf '%s\n' "${JVM_OPTS[@]}"
        printf -- '-cp\n%s\n' "$(IFS=:; echo "${CP[*]}")"
        [ -z "${1:-}" ] || printf -- '-XX:AOTCache=%s\n' "$G_AOT"
    } >"$STAGE$G_TASK/jvm.args"
    chmod 0644 "$STAGE$G_TASK/jvm.args"
}
write_args

# Fixed owners and mtimes before the training run: the AOT cache records the size and mtime of every jar and of
# the JRE's modules file, and the guest must see the same values.
chown -hR 0:0 "$STAGE"
find "$STAGE" -exec touch -h -d "@$SDE" {} +

step "aot cache: training run"
# JDK 25 AOT cache (JEP 483/514): a training run in the staging root (paths as in the guest) records the classes the
# agent loads and links; the guest JVM then starts from the cache. VmmTaskMain --train loads the agent and exits 0.
# JDK 25 does not assemble the cache deterministically (two runs differ in ~40% of the bytes), so the cache is kept in
# $CACHE/aot, keyed by everything it depends on: a rebuild from the same inputs reuses it and stays byte-identical.
AOT=0
mkdir -p "$CACHE/aot"
aot_key=$(printf '%s\n' "$jre_key" "$(sha256sum "${JARS[@]}" | awk '{print $1}')" "${CP[*]}" "$SDE" "${JVM_OPTS[*]}" \
    "$MAIN_CLASS" "$(sha256sum "$STAGE"/lib*/*/lib* "$STAGE"/lib*/ld-* 2>/dev/null | awk '{print $1}')" \
    | sha256sum | cut -c1-16)
AOT_CACHED="$CACHE/aot/$aot_key.aot"
find "$STAGE" | sort >"$CACHE/staging-before.list"
# The JVM needs /proc in the chroot: ld.so resolves the launcher's RPATH $ORIGIN (libjli.so) via /proc/self/exe.
mount -t proc proc "$STAGE/proc"
if [ "${KUASAR_IMAGE_AOT:-1}" = 0 ]; then
    log "KUASAR_IMAGE_AOT=0: no AOT cache"
elif [ -f "$AOT_CACHED" ]; then
    log "AOT cache from $AOT_CACHED"
    cp "$AOT_CACHED" "$STAGE$G_AOT"
else
    train_cmd=(chroot "$STAGE" "$G_JRE/bin/java" "@$G_TASK/jvm.args" "-XX:AOTCacheOutput=$G_AOT" "$MAIN_CLASS" --train)
    rc=0
    train_out=$(timeout 300 "${train_cmd[@]}" 2>&1) || rc=$?
    if [ "$rc" != 0 ] || [ ! -s "$STAGE$G_AOT" ]; then
        warn "AOT training run failed (exit $rc); the image has no AOT cache. Command: ${train_cmd[*]}
----- output -----
$(printf '%s\n' "$train_out" | tail -n 40)
------------------"
        rm -f "$STAGE$G_AOT"
    fi
fi
if [ -s "$STAGE$G_AOT" ]; then
    # The guest must be able to map it: same JRE, class path, jar sizes and mtimes, JVM options.
    touch -d "@$SDE" "$STAGE$G_AOT"
    if chk=$(chroot "$STAGE" "$G_JRE/bin/java" "@$G_TASK/jvm.args" "-XX:AOTCache=$G_AOT" -XX:AOTMode=on -version 2>&1); then
        AOT=1
        [ -f "$AOT_CACHED" ] || cp "$STAGE$G_AOT" "$AOT_CACHED"
        find "$CACHE/aot" -name '*.aot' ! -name "$aot_key.aot" -mtime +30 -delete
    else
        warn "the AOT cache does not load (-XX:AOTMode=on); the image has none:
$(printf '%s\n' "$chk" | tail -n 20)"
        rm -f "$STAGE$G_AOT" "$AOT_CACHED"
    fi
fi
umount "$STAGE/proc"
[ "$AOT" = 0 ] || write_args aot
# Drop whatever the training run left behind (hsperfdata in /tmp, temp files), keep the cache.
find "$STAGE" | sort | comm -13 "$CACHE/staging-before.list" - | { grep -vxF "$STAGE$G_AOT" || true; } | sort -r \
    | while read -r f; do rm -rf "$f"; done
rm -f "$CACHE/staging-before.list"
if [ "$AOT" = 1 ]; then
    # With the AOT cache the JVM never maps the JRE's own CDS archive: leave it out (14 MB).
    rm -f "$STAGE$G_JRE/lib/server/classes_coh.jsa"
fi
chown -hR 0:0 "$STAGE"
find "$STAGE" -exec touch -h -d "@$SDE" {} +

# ---------------------------------------------------------------------------------------------------------------
step "initramfs: cpio + lz4"
TMP_INITRD="$OUT_DIR/.kuasar.initrd.tmp.$$"
TMP_VMLINUX="$OUT_DIR/.vmlinux.bin.tmp.$$"
TMP_OUT=("$TMP_INITRD" "$TMP_VMLINUX")
( cd "$STAGE" && find . -print0 | sort -z | cpio --null --quiet -o -H newc --reproducible -R 0:0 ) \
    | lz4 -q -l -"$LZ4_LEVEL" -c >"$TMP_INITRD"
unpacked=$(du -sb --apparent-size "$STAGE" | cut -f1)

step "install"
cp "$KROOT/vmlinux.bin" "$TMP_VMLINUX"
chmod 0644 "$TMP_VMLINUX" "$TMP_INITRD"
mv -f "$TMP_VMLINUX" "$OUT_DIR/vmlinux.bin"
mv -f "$TMP_INITRD" "$OUT_DIR/kuasar.initrd"
TMP_OUT=()
echo "$MANIFEST" >"$STAMP"
step ""

printf 'build-image.sh: %-36s %6s s\n' "total" "$(elapsed "$T0")"
log "kernel $KNAME, $(wc -l <"$STAGE/lib/modules/load.list") modules, JRE modules $MODS"
log "agent: ${#JARS[@]} jars, AOT cache: $([ "$AOT" = 1 ] && echo "yes ($(stat -c %s "$STAGE$G_AOT") bytes)" || echo no)"
log "$(printf '%-28s %10d bytes' "$OUT_DIR/vmlinux.bin" "$(stat -c %s "$OUT_DIR/vmlinux.bin")")"
log "$(printf '%-28s %10d bytes (unpacked %d bytes, SOURCE_DATE_EPOCH=%s)' "$OUT_DIR/kuasar.initrd" \
    "$(stat -c %s "$OUT_DIR/kuasar.initrd")" "$unpacked" "$SDE")"
