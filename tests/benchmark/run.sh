#!/usr/bin/env bash
# make bench: Kuasar's 1:N benchmark. N pods with one container each, through CRI, on our kuasar-runc handler and on
# containerd's stock runc handler (podsandbox + pause + containerd-shim-runc-v2) of the same private containerd.
#
#   tests/benchmark/run.sh [Benchmark options]        as root, after `make` (make bench builds first)
#   tests/benchmark/run.sh --vmm [--pods N]            microVM pods on kuasar-vmm against a bare-QEMU floor
#                                                      (make bench-vmm; io.kuasar.tests.benchmark.VmmBenchmark)
#   tests/benchmark/run.sh --wasm [--containers N]     Wasm: the engine, CRI containers on kuasar-wasm against
#                                                      kuasar-runc and runc, daemon memory (make bench-wasm)
#   tests/benchmark/run.sh --quark [--pods N]          gVisor pods on kuasar-quark against runsc behind the stock
#                                                      runc shim and stock runc (make bench-quark)
#
# Steps: tests/e2e/env.sh setup; `make install` of this tree's build into a private prefix (the production launcher
# <prefix>/bin/runc-sandboxer, i.e. the Makefile's JVM_OPTS); runc-sandboxer and containerd started in a private
# workdir /tmp/kuasar-bench-XXXXXX; io.kuasar.tests.benchmark.Benchmark run against them; then everything is torn
# down (also on failure or Ctrl-C): pods, the sandboxer and its helpers, containerd, shims, mounts, the workdir.
#
# Output: the Markdown report on stdout and in $OUT/report.md; raw results.json, latency.csv, memory.csv and the two
# daemons' logs in $OUT (default tests/target/benchmark).
#
# Benchmark options (defaults): --pods 20,50  --workers 10  --handlers kuasar-runc,runc  --modes serial,parallel  --floor runc (the OCI runtime alone; none to skip)
#   --network pod|host (pod: CNI bridge)  --warmup 5  --settle-ms 2000  --label TEXT  --nmt true (jcmd
#   VM.native_memory summary at every N, needs KUASAR_JAVA_OPTS=-XX:NativeMemoryTracking=summary)
# Environment:
#   KUASAR_BENCH_OUT          output directory (default <repo>/tests/target/benchmark)
#   KUASAR_BENCH_JVM_OPTS     install the launcher with these JVM options instead of the Makefile's JVM_OPTS
#   KUASAR_BENCH_PREFIX       use this existing `make install` prefix as it is (no install; e.g. to keep a JDK AOT
#                             cache valid, which records the jars' modification times)
#   KUASAR_JAVA_OPTS          extra JVM options appended by the launcher (e.g. -XX:NativeMemoryTracking=summary)
#   KUASAR_BENCH_METRICS=1    start the sandboxer with its metrics endpoint and save it to $OUT/sandboxer-metrics.txt
#                             at the end (server-side RPC latencies; off by default, as in production)
#   KUASAR_E2E_BRIDGE / KUASAR_E2E_SUBNET   CNI bridge and /24 (default kuasarbench0 / 10.88.79.0/24)
set -Eeuo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
OUT=${KUASAR_BENCH_OUT:-$REPO/tests/target/benchmark}
ENV_SH=$REPO/tests/e2e/env.sh
export KUASAR_E2E_BRIDGE=${KUASAR_E2E_BRIDGE:-kuasarbench0}
export KUASAR_E2E_SUBNET=${KUASAR_E2E_SUBNET:-10.88.79.0/24}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "[bench] $*" >&2; }
die() {
  log "FAILED: $*"
  exit 1
}

KIND=runc
if [[ ${1:-} == --vmm || ${1:-} == --wasm || ${1:-} == --quark ]]; then
  KIND=${1#--}
  shift
fi
SBX=$KIND-sandboxer
# --wasm compares against kuasar-runc as well: runc-sandboxer is the main daemon, wasm-sandboxer an extra one
[[ $KIND == wasm ]] && SBX=runc-sandboxer
WASM_PID=""

[[ $(id -u) -eq 0 ]] || die "run as root (containers, mounts, CNI)"
[[ -x $JAVA_HOME/bin/java ]] || die "no JDK 25 at $JAVA_HOME (set JAVA_HOME)"
shopt -s nullglob
tests_jar=("$REPO"/tests/target/kuasar-tests-*[0-9T].jar)
holder_built=$REPO/runc-sandboxer/target/libexec/kuasar-holder
if ((${#tests_jar[@]} == 0)) || [[ ! -d $REPO/tests/target/lib || ! -x $holder_built ]] ||
  ! compgen -G "$REPO/$SBX/target/$SBX-*[0-9T].jar" >/dev/null; then
  die "build first: make (or mvn -B -q -o -pl $SBX,tests -am package -DskipTests)"
fi
shopt -u nullglob

WORK=""
PREFIX=""
SBX_PID=""
CLIENT_PID=""
CLIENT_JAVA=""
CP=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM ERR
  set +e
  [[ -n $WORK ]] || exit "$rc"
  log "tearing down $WORK"
  if [[ -n $CLIENT_PID ]] && kill -0 "$CLIENT_PID" 2>/dev/null; then
    kill -TERM "$CLIENT_PID" 2>/dev/null
    wait "$CLIENT_PID" 2>/dev/null
  fi
  # The benchmark removes its pods itself; after a failure or an interrupt, remove what is left through CRI.
  if ((rc != 0)) && [[ -n $CLIENT_JAVA && -n $SBX_PID ]] && kill -0 "$SBX_PID" 2>/dev/null && [[ -S $WORK/ctrd/containerd.sock ]]; then
    log "removing pods left behind through CRI"
    timeout 120 "$CLIENT_JAVA" -cp "$CP" -Dkuasar.log.level=warn \
      io.kuasar.tests.benchmark.Benchmark --cleanup-only true --containerd-sock "$WORK/ctrd/containerd.sock" \
      --containerd-pid 1 --logs "$WORK/logs" >&2
  fi
  if [[ -n $WASM_PID ]] && kill -0 "$WASM_PID" 2>/dev/null; then
    kill -TERM "$WASM_PID" 2>/dev/null
    for _ in $(seq 1 100); do kill -0 "$WASM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$WASM_PID" 2>/dev/null
  fi
  if [[ -n $SBX_PID ]] && kill -0 "$SBX_PID" 2>/dev/null; then
    kill -TERM "$SBX_PID" 2>/dev/null  # exits at once; a JDK AOT cache training run writes its cache first
    for _ in $(seq 1 600); do kill -0 "$SBX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SBX_PID" 2>/dev/null && kill -KILL "$SBX_PID" 2>/dev/null
  fi
  mkdir -p "$OUT"
  cp -f "$WORK/sandboxer.log" "$OUT/$KIND-sandboxer.log" 2>/dev/null
  [[ ${SBX_DIR:-} == /run/kbench-* ]] && rm -rf --one-file-system "$SBX_DIR"
  cp -f "$WORK/ctrd/containerd.log" "$OUT/containerd.log" 2>/dev/null
  "$ENV_SH" clean "$WORK/ctrd" >&2 || log "env.sh clean failed"
  # Helper processes of our install still alive: the daemon-wide kuasar-ttrpc-proxy (it outlives the sandboxer by
  # design) and, after an aborted run, holders and monitors. Matched by their binary in our prefix. Then mounts.
  local helpers=()
  mapfile -t helpers < <(helper_pids)
  if ((${#helpers[@]})); then
    log "stopping helper processes left: $(for p in "${helpers[@]}"; do printf '%s(%s) ' "$p" "$(cat /proc/"$p"/comm 2>/dev/null)"; done)"
    kill -TERM "${helpers[@]}" 2>/dev/null
    sleep 0.5
    kill -KILL "${helpers[@]}" 2>/dev/null
  fi
  local mp
  for _ in 1 2 3; do
    while IFS= read -r mp; do umount -l "$mp" 2>/dev/null; done < <(awk -v w="$WORK" 'index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  done
  if [[ -n $(awk -v w="$WORK" 'index($5, w "/") == 1' /proc/self/mountinfo) ]]; then
    log "mounts left below $WORK; not removing it"
    rc=1
  else
    rm -rf --one-file-system "$WORK"
  fi
  local left
  left=$(ps -eo pid,args | grep -F -e "$WORK" | grep -v grep || true)
  if [[ -n $left ]]; then
    log "processes left behind:"
    echo "$left" >&2
    rc=1
  fi
  log "done (exit $rc)"
  exit "$rc"
}

helper_pids() {
  local p exe
  [[ -n $PREFIX ]] || return 0
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    if [[ $exe == "$PREFIX/libexec/kuasar/"* ]]; then echo "${p#/proc/}"; fi
  done
}

log "setup: tests/e2e/env.sh setup"
"$ENV_SH" setup >&2

WORK=$(mktemp -d /tmp/kuasar-bench-XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log "workdir $WORK"
if [[ -n ${KUASAR_BENCH_PREFIX:-} ]]; then
  PREFIX=$(realpath "$KUASAR_BENCH_PREFIX")
  [[ -x $PREFIX/bin/$SBX ]] || die "KUASAR_BENCH_PREFIX=$PREFIX has no bin/$SBX"
  log "using the existing install $PREFIX"
else
  PREFIX=$WORK/prefix
  log "install this tree's build into $PREFIX (make install MVN=true${KUASAR_BENCH_JVM_OPTS:+ JVM_OPTS=...})"
  install_args=(install PREFIX="$PREFIX" MVN=true)
  if [[ -n ${KUASAR_BENCH_JVM_OPTS:-} ]]; then install_args+=(JVM_OPTS="$KUASAR_BENCH_JVM_OPTS"); fi
  make -C "$REPO" --no-print-directory "${install_args[@]}" >&2
fi

# The client runs on a private copy of the JDK: a JVM maps libjvm.so, the CDS archive and lib/modules, and pages
# shared with a second JVM on the same files would be split between the two and lower the sandboxer's PSS.
log "client JDK copy (keeps the client's pages out of the sandboxer's PSS)"
cp -a "$JAVA_HOME" "$WORK/client-jdk"
CLIENT_JAVA=$WORK/client-jdk/bin/java
CP="$REPO/tests/target/lib/*:${tests_jar[0]}"

VMM_CONFIG=$REPO/vmm-sandboxer/config_qemu_x86_64.toml
SBX_SOCK=$WORK/$KIND.sock
[[ $KIND == wasm ]] && SBX_SOCK=$WORK/runc.sock
# A VM's sockets live in <dir>/sandboxes/<64-hex id>/: its --dir must be short (sun_path holds 107 bytes).
SBX_DIR=$WORK/state
if [[ $KIND == quark ]]; then
  log "gVisor's runsc (make runsc; cached)"
  make -C "$REPO" --no-print-directory runsc >&2
  # the console and runsc sockets below --dir must fit into sun_path
  SBX_DIR=/run/kbench-${WORK##*-}
  # gVisor behind containerd's stock runc shim (runsc-stock.sh says how and why it adapts runsc to that shim),
  # with host networking, as kuasar-quark is configured here
  export KUASAR_E2E_STOCK_RUNSC=$REPO/tests/benchmark/runsc-stock.sh
fi
if [[ $KIND == vmm ]]; then
  log "guest image (make vmm-image; cached)"
  make -C "$REPO" --no-print-directory vmm-image >&2
  SBX_DIR=/run/kbench-${WORK##*-}
  # the shipped config, with the VM template on (cold pods opt out per pod) and room for ten TCG boots at once
  sed -e 's/^enable_template = false/enable_template = true/' -e 's/^agent_timeout_secs = .*/agent_timeout_secs = 600/' \
    "$VMM_CONFIG" >"$WORK/vmm-config.toml"
  VMM_CONFIG=$WORK/vmm-config.toml
fi

log "start $SBX ($PREFIX/bin/$SBX${KUASAR_JAVA_OPTS:+, KUASAR_JAVA_OPTS=$KUASAR_JAVA_OPTS})"
mkdir -p "$WORK/logs"
# setsid: its own session, so a Ctrl-C of this script reaches it only through cleanup(); setsid execs (no fork).
sbx_args=()
if [[ ${KUASAR_BENCH_METRICS:-} == 1 ]]; then sbx_args+=(--metrics-listen "unix:$WORK/metrics.sock"); fi
if [[ $KIND == vmm ]]; then sbx_args+=(--config "$VMM_CONFIG"); fi
if [[ $KIND == quark ]]; then sbx_args+=(--backend gvisor --network host); fi
setsid "$PREFIX/bin/$SBX" --listen "$SBX_SOCK" --dir "$SBX_DIR" \
  --containerd-ttrpc-address "$WORK/ctrd/containerd.sock.ttrpc" "${sbx_args[@]}" </dev/null >"$WORK/sandboxer.log" 2>&1 &
SBX_PID=$!
for _ in $(seq 1 300); do
  [[ -S $SBX_SOCK ]] && break
  kill -0 "$SBX_PID" 2>/dev/null || { cat "$WORK/sandboxer.log" >&2; die "$SBX exited during startup"; }
  sleep 0.1
done
[[ -S $SBX_SOCK ]] || die "$SBX did not listen on $SBX_SOCK within 30 s"
[[ $(readlink "/proc/$SBX_PID/exe") == */java ]] || die "pid $SBX_PID is not the sandboxer JVM"
log "$SBX pid $SBX_PID: $(tr '\0' ' ' <"/proc/$SBX_PID/cmdline")"

if [[ $KIND == wasm ]]; then
  log "start wasm-sandboxer"
  setsid "$PREFIX/bin/wasm-sandboxer" --listen "$WORK/wasm.sock" --dir "$WORK/wasm-state" \
    --containerd-ttrpc-address "$WORK/ctrd/containerd.sock.ttrpc" </dev/null >"$WORK/wasm-sandboxer.log" 2>&1 &
  WASM_PID=$!
  for _ in $(seq 1 300); do [[ -S $WORK/wasm.sock ]] && break; sleep 0.1; done
  [[ -S $WORK/wasm.sock ]] || { cat "$WORK/wasm-sandboxer.log" >&2; die "wasm-sandboxer did not start"; }
fi

log "start containerd"
KUASAR_E2E_VMM_SOCKET=$WORK/vmm.sock KUASAR_E2E_WASM_SOCKET=$WORK/wasm.sock KUASAR_E2E_QUARK_SOCKET=$WORK/quark.sock \
  KUASAR_SHIM_DIR=$PREFIX/bin "$ENV_SH" start-containerd "$WORK/ctrd" "$WORK/runc.sock" >&2
CTRD_PID=$(cat "$WORK/ctrd/containerd.pid")

if [[ $KIND == wasm ]]; then
  log "run the Wasm benchmark"
  mkdir -p "$OUT" "$WORK/wasm"
  for w in "$REPO"/tests/e2e/wasm/*.wat; do wat2wasm "$w" -o "$WORK/wasm/$(basename "${w%.wat}").wasm"; done
  timeout 1500 "$CLIENT_JAVA" -Xmx512m --enable-native-access=ALL-UNNAMED -cp "$CP" \
    -Dkuasar.log.level=warn io.kuasar.tests.benchmark.WasmBenchmark \
    --containerd-sock "$WORK/ctrd/containerd.sock" --wasm-pid "$WASM_PID" --logs "$WORK/logs" --out "$OUT" \
    --work "$WORK" --wasm-dir "$WORK/wasm" "$@" &
  CLIENT_PID=$!
  wait "$CLIENT_PID"
  CLIENT_PID=""
  cp -f "$WORK/wasm-sandboxer.log" "$OUT/wasm-sandboxer.log" 2>/dev/null
  exit 0
fi

if [[ $KIND == quark ]]; then
  log "run the app-kernel benchmark"
  mkdir -p "$OUT"
  timeout 1500 "$CLIENT_JAVA" -Xmx256m --enable-native-access=ALL-UNNAMED -cp "$CP" \
    -Dkuasar.log.level=warn io.kuasar.tests.benchmark.QuarkBenchmark \
    --containerd-sock "$WORK/ctrd/containerd.sock" --sandboxer-pid "$SBX_PID" --logs "$WORK/logs" --out "$OUT" "$@" &
  CLIENT_PID=$!
  wait "$CLIENT_PID"
  CLIENT_PID=""
  exit 0
fi

if [[ $KIND == vmm ]]; then
  log "run the microVM benchmark"
  mkdir -p "$OUT"
  timeout 3600 "$CLIENT_JAVA" -Xmx256m --enable-native-access=ALL-UNNAMED -cp "$CP" \
    -Dkuasar.log.level=warn io.kuasar.tests.benchmark.VmmBenchmark \
    --containerd-sock "$WORK/ctrd/containerd.sock" --sandboxer-pid "$SBX_PID" --config "$VMM_CONFIG" \
    --sandboxer-log "$WORK/sandboxer.log" --logs "$WORK/logs" --out "$OUT" --work "$WORK" "$@" &
  CLIENT_PID=$!
  wait "$CLIENT_PID"
  CLIENT_PID=""
  exit 0
fi

log "run the benchmark"
mkdir -p "$OUT"
rm -f "$OUT"/nmt-*.txt
timeout 1500 "$CLIENT_JAVA" -Xmx256m --enable-native-access=ALL-UNNAMED -cp "$CP" \
  -Dkuasar.log.level=warn -Dkuasar.bench.jcmd="$JAVA_HOME/bin/jcmd" \
  io.kuasar.tests.benchmark.Benchmark \
  --containerd-sock "$WORK/ctrd/containerd.sock" --containerd-pid "$CTRD_PID" \
  --sandboxer-pid "$SBX_PID" --libexec "$PREFIX/libexec/kuasar" \
  --logs "$WORK/logs" --out "$OUT" "$@" &
CLIENT_PID=$!
wait "$CLIENT_PID"
CLIENT_PID=""
if [[ ${KUASAR_BENCH_METRICS:-} == 1 ]]; then
  curl -sS --max-time 10 --unix-socket "$WORK/metrics.sock" http://localhost/metrics >"$OUT/sandboxer-metrics.txt" ||
    log "could not read the sandboxer's metrics"
fi
