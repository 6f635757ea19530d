#!/usr/bin/env bash
# Quickstart: build Kuasar (Java), start a private containerd 2.x and runc-sandboxer, run one pod whose busybox
# container prints a greeting, show it, and clean everything up. Run as root on Debian 12.
set -Eeuo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${KUASAR_QUICKSTART_DIR:-/tmp/kuasar-quickstart}"
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
    echo "quickstart FAILED during: $CURRENT" >&2
    case "$CURRENT" in
        *packages*) echo "  fix: check that apt-get works (apt-get update) and re-run" >&2 ;;
        *build*) echo "  fix: see the Maven output above; the build needs JDK 25 in JAVA_HOME and Maven Central" >&2 ;;
        *containerd*) echo "  fix: see $WORK/ctrd/containerd.log" >&2 ;;
        *sandboxer*|*pod*) echo "  fix: see $WORK/runc-sandboxer.log and $WORK/ctrd/containerd.log" >&2 ;;
    esac
}
cleanup() {
    trap - ERR
    set +e
    [ -n "$SBX_PID" ] && { kill "$SBX_PID" 2>/dev/null; wait "$SBX_PID" 2>/dev/null; }
    "$REPO/tests/e2e/env.sh" clean "$WORK/ctrd" >/dev/null 2>&1
    rm -rf "$WORK/state"
}
trap on_error ERR
trap cleanup EXIT

step 1/7 "checking prerequisites"
[ "$(id -u)" = 0 ] || { echo "run as root: containers need it"; exit 1; }
"$REPO/packaging/check-jdk.sh" "$JAVA_HOME" || exit 1
echo "    JDK: $("$JAVA_HOME/bin/java" -version 2>&1 | head -1)"

step 2/7 "installing packages (build tools, runc, busybox, CNI plugins)"
need=()
for p in maven gcc musl-tools make runc busybox-static containernetworking-plugins iproute2; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "    ok"

step 3/7 "build: compiling and installing into $PREFIX (about a minute on 2 cores; log: $WORK/build.log)"
mkdir -p "$WORK"
if ! make -C "$REPO" --no-print-directory install PREFIX="$PREFIX" MVN_FLAGS="-B -q" >"$WORK/build.log" 2>&1; then
    tail -40 "$WORK/build.log" >&2
    false
fi
echo "    $PREFIX/bin/runc-sandboxer"

step 4/7 "preparing containerd 2.x and the busybox image (private cache)"
"$REPO/tests/e2e/env.sh" setup >/dev/null

step 5/7 "starting runc-sandboxer"
mkdir -p "$WORK"
"$PREFIX/bin/runc-sandboxer" --listen "$WORK/runc-sandboxer.sock" --dir "$WORK/state" \
    --containerd-ttrpc-address "$WORK/ctrd/containerd.sock.ttrpc" > "$WORK/runc-sandboxer.log" 2>&1 &
SBX_PID=$!
for _ in $(seq 1 100); do [ -S "$WORK/runc-sandboxer.sock" ] && break; sleep 0.1; done
[ -S "$WORK/runc-sandboxer.sock" ] || { echo "    runc-sandboxer did not start"; false; }
echo "    pid $SBX_PID, Sandbox API on $WORK/runc-sandboxer.sock"

step 6/7 "starting containerd (private state in $WORK/ctrd)"
KUASAR_SHIM_DIR="$PREFIX/bin" "$REPO/tests/e2e/env.sh" start-containerd "$WORK/ctrd" "$WORK/runc-sandboxer.sock" 2>/dev/null | tail -1 | sed 's/^/    /'

step 7/7 "running a pod on the kuasar-runc handler"
"$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp "$REPO/tests/target/lib/*:$(ls "$REPO"/tests/target/kuasar-tests-*.jar | head -1)" \
    io.kuasar.tests.quickstart.Quickstart "$WORK/ctrd/containerd.sock" "$WORK/logs"

printf '    done in %ds\n' $((SECONDS - STEP_START))
echo
echo "done in ${SECONDS}s: the pod ran on runc-sandboxer under containerd and was removed; cleaning up."
