#!/bin/bash
# Boots the guest image built by build-image.sh under QEMU (TCG, pc + qboot: the robust recipe measured in
# shared/reference/microvm-on-this-machine-kind.md) and reports what it printed.
#
#   smoke-boot.sh [smoke|agent|both]     (default both; root not needed)
#
#   smoke  cmdline kuasar.smoke=1: /init runs `runc --version` and `java @jvm.args -version` and powers off.
#          Passes when the "kuasar-smoke: done runc=0 java=0" line appears.
#   agent  the normal boot: /init execs the agent (the JVM becomes PID 1). Attached as the sandboxer does: a 9p share
#          with tag "kuasar" (an empty temp dir) and a virtio-serial port "agent.channel.0" (a unix socket nobody
#          connects to). Reports everything printed up to KUASAR_SMOKE_AGENT_WAIT seconds after the init marker
#          (or until the guest stops). Passes when the init marker appears.
#
# Environment: KUASAR_IMAGE_DIR (default /var/lib/kuasar), KUASAR_SMOKE_TIMEOUT (whole boot, default 60 s),
# KUASAR_SMOKE_AGENT_WAIT (default 15 s), QEMU (default qemu-system-x86_64), KUASAR_SMOKE_QEMU_ARGS (extra args).
set -euo pipefail
export LC_ALL=C
DIR=${KUASAR_IMAGE_DIR:-/var/lib/kuasar}
TIMEOUT=${KUASAR_SMOKE_TIMEOUT:-60}
AGENT_WAIT=${KUASAR_SMOKE_AGENT_WAIT:-15}
QEMU=${QEMU:-qemu-system-x86_64}
MODE=${1:-both}
CMDLINE="console=ttyS0 quiet panic=-1 reboot=t tsc=reliable no_timer_check lpj=1000000"

for f in vmlinux.bin kuasar.initrd; do
    [ -f "$DIR/$f" ] || { echo "smoke-boot.sh: no $DIR/$f (make vmm-image)" >&2; exit 1; }
done
command -v "$QEMU" >/dev/null || { echo "smoke-boot.sh: $QEMU not found (apt-get install qemu-system-x86)" >&2; exit 1; }
[ -f /usr/share/qemu/qboot.rom ] || { echo "smoke-boot.sh: no /usr/share/qemu/qboot.rom" >&2; exit 1; }

RUN=$(mktemp -d /tmp/kuasar-smoke.XXXXXX)
trap 'rm -rf "$RUN"' EXIT
mkdir "$RUN/share"

# boot NAME EXTRA_CMDLINE STOP_REGEX [QEMU ARGS...]: runs QEMU, prints each console line with the seconds since QEMU
# started, stops at STOP_REGEX (+AGENT_WAIT s in agent mode) or TIMEOUT. Sets MARKER_T, MARKER_LINE, STOP_SEEN, LOG.
boot() {
    local name=$1 extra=$2 stop=$3
    shift 3
    LOG="$RUN/$name.log"
    MARKER_T="" MARKER_LINE="" STOP_SEEN=0
    : >"$LOG"
    echo "=== smoke-boot: $name: $QEMU ... -append \"$CMDLINE${extra:+ $extra}\""
    local t0 now line deadline qpid
    t0=$(date +%s%N)
    deadline=$((t0 + TIMEOUT * 1000000000))
    exec 3< <(exec "$QEMU" -M pc -bios /usr/share/qemu/qboot.rom -accel tcg -m 512 -smp 1 -nographic -nodefaults \
        -no-user-config -no-reboot -serial stdio -kernel "$DIR/vmlinux.bin" -initrd "$DIR/kuasar.initrd" \
        -append "$CMDLINE${extra:+ $extra}" "$@" ${KUASAR_SMOKE_QEMU_ARGS:-} </dev/null 2>&1)
    qpid=$!
    local buf="" r
    while true; do
        now=$(date +%s%N)
        if [ "$now" -ge "$deadline" ]; then
            if [ -n "$MARKER_T" ] && [ "$name" = agent ]; then echo "smoke-boot: $name: stopped ${AGENT_WAIT}s after the init marker"
            else echo "smoke-boot: $name: stopped after ${TIMEOUT}s"; fi
            break
        fi
        r=0
        IFS= read -r -t 1 line <&3 || r=$?
        if [ "$r" -gt 128 ]; then # no newline within 1 s: keep the partial line, go on while QEMU lives
            buf+=$line
            kill -0 "$qpid" 2>/dev/null || break
            continue
        fi
        line=$buf$line
        buf=""
        [ "$r" = 0 ] || [ -n "$line" ] || break # EOF
        line=${line//$'\r'/}
        now=$(date +%s%N)
        printf '%7.3f  %s\n' "$(awk -v a="$t0" -v b="$now" 'BEGIN{print (b-a)/1e9}')" "$line" | tee -a "$LOG"
        case "$line" in
            *"kuasar-init: modules loaded"*)
                MARKER_T=$(awk -v a="$t0" -v b="$now" 'BEGIN{printf "%.2f", (b-a)/1e9}')
                MARKER_LINE=$line
                [ "$name" != agent ] || deadline=$((now + AGENT_WAIT * 1000000000))
                ;;
        esac
        if [[ "$line" =~ $stop ]]; then STOP_SEEN=1; [ "$name" = agent ] || break; fi
        [ "$r" = 0 ] || break # EOF after a last unterminated line
    done
    if kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; sleep 0.5; kill -9 "$qpid" 2>/dev/null || true; fi
    wait "$qpid" 2>/dev/null || true
    exec 3<&-
    local total; total=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN{printf "%.2f", (b-a)/1e9}')
    echo "=== smoke-boot: $name: init marker at ${MARKER_T:-never} s (${MARKER_LINE#kuasar-init: modules loaded }), run ended after $total s"
}

rc=0
if [ "$MODE" = smoke ] || [ "$MODE" = both ]; then
    boot smoke kuasar.smoke=1 'kuasar-smoke: done'
    if grep -q 'kuasar-smoke: done runc=0 java=0' "$LOG"; then
        echo "=== smoke-boot: smoke: PASS (runc and java ran in the guest)"
    else
        echo "=== smoke-boot: smoke: FAIL"; rc=1
    fi
fi
if [ "$MODE" = agent ] || [ "$MODE" = both ]; then
    boot agent "" '^kuasar-init: cannot exec|Kernel panic' \
        -virtfs "local,path=$RUN/share,mount_tag=kuasar,security_model=none" \
        -device virtio-serial-pci,id=vser -chardev "socket,id=agent,path=$RUN/agent.sock,server=on,wait=off" \
        -device virtserialport,bus=vser.0,chardev=agent,name=agent.channel.0
    if [ -n "$MARKER_T" ]; then
        echo "=== smoke-boot: agent: init marker seen; JVM output above$([ "$STOP_SEEN" = 1 ] && echo " (PID 1 exited or exec failed)" || echo " (still running when stopped)")"
    else
        echo "=== smoke-boot: agent: FAIL (no init marker)"; rc=1
    fi
fi
exit $rc
