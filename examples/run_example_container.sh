#!/usr/bin/env bash
# Kuasar's example, self-contained: build Kuasar (Java), start a private containerd 2.x and the sandboxer of the
# chosen runtime handler, run one pod whose busybox container prints a greeting (on kuasar-vmm: from inside its VM,
# with the guest's kernel; on kuasar-quark: on gVisor's app kernel), show it, and clean everything up. Run as root on
# Debian 12.
#
#   examples/run_example_container.sh [kuasar-runc|kuasar-vmm|kuasar-wasm|kuasar-quark]
#                                     (default kuasar-runc; `make quickstart`)
#
# Unlike Kuasar's script it needs no crictl (Debian 12 has none) and no node-wide containerd: the pod is driven
# through containerd's CRI by the project's Java CRI client, and everything it starts is private and removed.
set -Eeuo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HANDLER="${1:-kuasar-runc}"
case "$HANDLER" in
    kuasar-runc) SBX=runc-sandboxer ;;
    kuasar-vmm) SBX=vmm-sandboxer ;;
    kuasar-wasm) SBX=wasm-sandboxer ;;
    kuasar-quark) SBX=quark-sandboxer ;;
    *) echo "usage: $0 [kuasar-runc|kuasar-vmm|kuasar-wasm|kuasar-quark]" >&2; exit 2 ;;
esac
WORK="${KUASAR_QUICKSTART_DIR:-/tmp/kuasar-example-${HANDLER#kuasar-}}"
# The sandboxer's --dir: short, since a VM's sockets live in <dir>/sandboxes/<64-hex id>/ and a socket path has
# at most 107 bytes.
STATE="/run/kex-${HANDLER#kuasar-}"
PREFIX="$REPO/build/quickstart"
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
CURRENT="starting"
SBX_PID=""

STEP_START=""
# Each step says what it does, and how long the previous one took.
step() {
    [ -n "$STEP_START" ] && printf '    done in %ds\n' $((SECONDS - STEP_START))
    STEP_START=$SECONDS
    CURRENT="$2"
    printf '\n[%s] %s\n' "$1" "$2"
}
on_error() {
    echo >&2
    echo "example FAILED during: $CURRENT" >&2
    case "$CURRENT" in
        *packages*) echo "  fix: check that apt-get works (apt-get update) and re-run" >&2 ;;
        *build*) echo "  fix: see the Maven output above; the build needs JDK 25 in JAVA_HOME and Maven Central" >&2 ;;
        *containerd*) echo "  fix: see $WORK/ctrd/containerd.log" >&2 ;;
        *image*) echo "  fix: see $WORK/vmm-image.log (docs/vmm-image.md)" >&2 ;;
        *runsc*) echo "  fix: see $WORK/runsc.log (make runsc; docs/quark.md)" >&2 ;;
        *sandboxer*|*pod*) echo "  fix: see $WORK/$SBX.log and $WORK/ctrd/containerd.log" >&2 ;;
    esac
}
cleanup() {
    trap - ERR
    set +e
    [ -n "$SBX_PID" ] && { kill "$SBX_PID" 2>/dev/null; wait "$SBX_PID" 2>/dev/null; }
    "$REPO/tests/e2e/env.sh" clean "$WORK/ctrd" >/dev/null 2>&1
    rm -rf "$STATE"
}
trap on_error ERR
trap cleanup EXIT

STEPS=7
[ "$HANDLER" = kuasar-vmm ] && STEPS=8
[ "$HANDLER" = kuasar-quark ] && STEPS=8
step 1/$STEPS "checking prerequisites"
[ "$(id -u)" = 0 ] || { echo "run as root: containers need it"; exit 1; }
"$REPO/packaging/check-jdk.sh" "$JAVA_HOME" || exit 1
echo "    JDK: $("$JAVA_HOME/bin/java" -version 2>&1 | head -1)"

step 2/$STEPS "installing packages (build tools, runc, busybox, CNI plugins$([ "$HANDLER" = kuasar-vmm ] && echo ", QEMU, image tools"))"
pkgs=(maven gcc musl-tools make runc busybox-static containernetworking-plugins iproute2)
[ "$HANDLER" = kuasar-vmm ] && pkgs+=(qemu-system-x86 kmod cpio lz4 xz-utils)
[ "$HANDLER" = kuasar-wasm ] && pkgs+=(wabt)
need=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "    ok"

step 3/$STEPS "build: compiling and installing into $PREFIX (about a minute on 2 cores; log: $WORK/build.log)"
mkdir -p "$WORK"
if ! make -C "$REPO" --no-print-directory install PREFIX="$PREFIX" MVN_FLAGS="-B -q" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    false
fi
echo "    $PREFIX/bin/$SBX"

if [ "$HANDLER" = kuasar-vmm ]; then
    step 4/$STEPS "guest image: kernel + initramfs with the vmm-task agent (cached; first build about a minute)"
    make -C "$REPO" --no-print-directory vmm-image >"$WORK/vmm-image.log" 2>&1 || { tail -20 "$WORK/vmm-image.log" >&2; false; }
    ls -l /var/lib/kuasar/vmlinux.bin /var/lib/kuasar/kuasar.initrd | awk '{print "    " $NF ": " $5 " bytes"}'
fi
if [ "$HANDLER" = kuasar-quark ]; then
    step 4/$STEPS "gVisor: trixie's runsc into /var/lib/kuasar/runsc (cached)"
    make -C "$REPO" --no-print-directory runsc >"$WORK/runsc.log" 2>&1 || { tail -20 "$WORK/runsc.log" >&2; false; }
    echo "    $(/var/lib/kuasar/runsc/runsc --version | head -1)"
fi
N=$((STEPS - 3))
step $N/$STEPS "preparing containerd 2.x and the busybox image (private cache)"
"$REPO/tests/e2e/env.sh" setup >/dev/null

step $((N + 1))/$STEPS "starting $SBX"
mkdir -p "$WORK"
SOCK="$WORK/$SBX.sock"
args=(--listen "$SOCK" --dir "$STATE" --containerd-ttrpc-address "$WORK/ctrd/containerd.sock.ttrpc")
# The shipped QEMU config (make install keeps an edited /var/lib/kuasar/config.toml; this example uses its own).
[ "$HANDLER" = kuasar-vmm ] && args+=(--config "$REPO/vmm-sandboxer/config_qemu_x86_64.toml")
[ "$HANDLER" = kuasar-quark ] && args+=(--backend gvisor)
"$PREFIX/bin/$SBX" "${args[@]}" > "$WORK/$SBX.log" 2>&1 &
SBX_PID=$!
for _ in $(seq 1 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
[ -S "$SOCK" ] || { echo "    $SBX did not start"; false; }
echo "    pid $SBX_PID, Sandbox API on $SOCK"

step $((N + 2))/$STEPS "starting containerd (private state in $WORK/ctrd)"
RUNC_SOCK="$SOCK"; [ "$HANDLER" != kuasar-runc ] && RUNC_SOCK="$WORK/runc-sandboxer.sock" # its plugin stays unused
KUASAR_E2E_VMM_SOCKET="$WORK/vmm-sandboxer.sock" KUASAR_E2E_WASM_SOCKET="$WORK/wasm-sandboxer.sock" \
    KUASAR_E2E_QUARK_SOCKET="$WORK/quark-sandboxer.sock" KUASAR_SHIM_DIR="$PREFIX/bin" \
    "$REPO/tests/e2e/env.sh" start-containerd "$WORK/ctrd" "$RUNC_SOCK" 2>/dev/null | tail -1 | sed 's/^/    /'

step $((N + 3))/$STEPS "running a pod on the $HANDLER handler"
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp "$REPO/tests/target/lib/*:$(ls "$REPO"/tests/target/kuasar-tests-*.jar | head -1)" \
    io.kuasar.tests.quickstart.Quickstart "$WORK/ctrd/containerd.sock" "$WORK/logs" "$HANDLER"

printf '    done in %ds\n' $((SECONDS - STEP_START))
echo
echo "done in ${SECONDS}s: the pod ran on $SBX under containerd and was removed; cleaning up."
