#!/usr/bin/env bash
# Environment for the Kuasar (Java) end-to-end tests: a private containerd 2.x, runc, CNI and offline images.
#
#   env.sh setup                                   install/cache everything (idempotent)
#   env.sh start-containerd <workdir> <sbx-socket>  private containerd with the 'runc' sandboxer proxy plugin
#   env.sh stop-containerd <workdir>                stop it by pid (idempotent)
#   env.sh clean <workdir>                          stop, kill leftovers, unmount, remove <workdir>
#   env.sh env                                      print cache paths and image names as KEY=VALUE (no side effects)
#
# Environment knobs:
#   KUASAR_E2E_CACHE      cache dir (default /var/cache/kuasar-e2e)
#   KUASAR_SHIM_DIR       dir holding our containerd-shim-kuasar-runc-v1 stub; put first on containerd's PATH
#   KUASAR_E2E_CONTAINERD_VERSION  exact sid version to download (default: whatever 2.x sid offers)
#   KUASAR_E2E_APT_MIRROR Debian mirror URI (default: taken from the system's apt sources)
#   KUASAR_E2E_BRIDGE / KUASAR_E2E_SUBNET   CNI bridge name / IPv4 /24 (default kuasar0 / 10.88.77.0/24)
#
# Why it looks like this: see /work/shared/reference/containerd-2x-integration.md (§1 binaries, §2 config, §3 image,
# §4 sandboxer registration, §8 machine gotchas). Nothing is installed system-wide except plain bookworm apt packages.
set -Eeuo pipefail

CACHE=${KUASAR_E2E_CACHE:-/var/cache/kuasar-e2e}
CTRD_PREFIX=$CACHE/containerd            # dpkg -x root of sid's containerd .deb
CTRD17_PREFIX=$CACHE/containerd17        # dpkg -x root of trixie's containerd 1.7 .deb (KUASAR_E2E_CTRD=1.7)
CTRD17_VERSION=${KUASAR_E2E_CONTAINERD17_VERSION:-1.7.24~ds1-6+deb13u1}
# KUASAR_E2E_CTRD=1.7: start-containerd runs containerd 1.7 (kuasar runtimes in shim mode) instead of 2.x
if [[ ${KUASAR_E2E_CTRD:-2} == 1.7 ]]; then
  CTRD_BIN=$CTRD17_PREFIX/usr/bin
else
  CTRD_BIN=$CTRD_PREFIX/usr/bin          # containerd, ctr, containerd-shim-runc-v2
fi
DEB_DIR=$CACHE/debs
APT_DIR=$CACHE/apt                       # private apt state for sid (system apt config stays untouched)
IMAGES_DIR=$CACHE/images
BUSYBOX_IMAGE=docker.io/library/busybox:kuasar-e2e
PAUSE_IMAGE=docker.io/library/bbpause:kuasar-e2e
BUSYBOX_TAR=$IMAGES_DIR/busybox-oci.tar
PAUSE_TAR=$IMAGES_DIR/bbpause-oci.tar
WASM_IMAGE=docker.io/library/wasm-e2e:kuasar-e2e
WASM_TAR=$IMAGES_DIR/wasm-e2e-oci.tar
WASM_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/wasm   # WAT sources of the Wasm image's modules
IMAGE_RECIPE=3                           # bump when the image recipe changes, forces a rebuild
CNI_BIN_DIR=/usr/lib/cni
CNI_NET_NAME=kuasar-e2e
BRIDGE=${KUASAR_E2E_BRIDGE:-kuasar0}
SUBNET=${KUASAR_E2E_SUBNET:-10.88.77.0/24}
RUNC_STATE_ROOT=/run/containerd/runc     # hard-coded by the runc shim, shared by all containerd instances (§8)
APT_PKGS=(runc busybox-static containernetworking-plugins iproute2 xz-utils util-linux debian-archive-keyring wabt
  clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)   # the last four: C to wasm32-wasi for the Wasm image

# ---------------------------------------------------------------------------------------------------------------
# Step reporting: every failure names the step and a remedy.

STEP="(startup)"
REMEDY=""
ON_FAIL=""   # command run before exiting on a failure (e.g. stop a half-started containerd)
log() { echo "$*" >&2; }
step() {
  STEP=$1
  REMEDY=${2:-}
  log "==> $STEP"
}
run_on_fail() {
  if [[ -n $ON_FAIL ]]; then
    local hook=$ON_FAIL
    ON_FAIL=""
    trap - ERR
    set +e
    $hook >&2
  fi
}
die() {
  log "env.sh: FAILED in step '$STEP': $*"
  if [[ -n $REMEDY ]]; then log "env.sh: remedy: $REMEDY"; fi
  run_on_fail
  exit 1
}
# die with a remedy specific to this failure (overrides the step's generic one).
die_remedy() {
  REMEDY=$1
  shift
  die "$@"
}
on_err() {
  local rc=$?
  log "env.sh: FAILED in step '$STEP' (command '$BASH_COMMAND' exited $rc at line ${BASH_LINENO[0]})"
  if [[ -n $REMEDY ]]; then log "env.sh: remedy: $REMEDY"; fi
  run_on_fail
  exit "$rc"
}
trap on_err ERR

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

require_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (apt, mounts, runc)"
}

# Absolute path without requiring existence (the workdir may not exist yet).
abspath() { realpath -m -- "$1"; }

# A pid counts as alive unless it is gone or a zombie (PID 1 here is slow to reap re-parented children, §8).
pid_alive() {
  local pid=$1 state
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

cmdline_of() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# ---------------------------------------------------------------------------------------------------------------
# setup

apt_candidates_known() {
  local p cand
  for p in "$@"; do
    cand=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n $cand && $cand != "(none)" ]] || return 1
  done
}

install_apt_packages() {
  step "apt: install missing bookworm packages (${APT_PKGS[*]})" \
    "check that the Debian mirror in /etc/apt/sources.list.d is reachable; then run: apt-get update && apt-get install ${APT_PKGS[*]}"
  local p missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "    already installed"
    return
  fi
  log "    missing: ${missing[*]}"
  # Only refresh the index when apt has no candidate for something we need (keeps re-runs offline).
  if ! apt_candidates_known "${missing[@]}"; then
    apt-get update -q >&2
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# mirror_uri, private_apt_opts
# shellcheck source=../../packaging/debian-mirror.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../packaging/debian-mirror.sh"

ctrd_version() { "$CTRD_BIN/containerd" --version 2>&1 | sed 's/ *$//'; }

containerd_ok() {
  [[ -x $CTRD_BIN/containerd && -x $CTRD_BIN/ctr && -x $CTRD_BIN/containerd-shim-runc-v2 ]] &&
    "$CTRD_BIN/containerd" --version >/dev/null 2>&1
}

fetch_containerd() {
  step "containerd 2.x from Debian sid (private, dpkg -x into $CTRD_PREFIX)" \
    "check network access to the Debian mirror; set KUASAR_E2E_APT_MIRROR=<uri> or KUASAR_E2E_CONTAINERD_VERSION=<ver> to override; delete $CACHE/debs and $CTRD_PREFIX to force a re-download"
  if containerd_ok; then
    log "    cached: $(ctrd_version)"
    return
  fi
  local deb ver
  # Re-use a previously downloaded .deb (cache exists but the unpacked tree was removed): no network needed.
  deb=$(printf '%s\n' "$DEB_DIR"/containerd_2*.deb | sort -V | tail -n1)
  [[ -f $deb ]] || deb=""
  if [[ -n ${KUASAR_E2E_CONTAINERD_VERSION:-} && -n $deb && $deb != *"_${KUASAR_E2E_CONTAINERD_VERSION//:/%3a}_"* ]]; then
    deb=""
  fi
  if [[ -z $deb ]]; then
    # Private apt config for Debian sid: only ever used to *download* containerd, never to install.
    private_apt_opts "$APT_DIR" sid || die "could not derive the Debian mirror URI from the system's apt sources"
    mkdir -p "$DEB_DIR"
    log "    apt-get update (private sid index)"
    apt-get "${APT_OPTS[@]}" -q update >&2
    ver=${KUASAR_E2E_CONTAINERD_VERSION:-$(apt-cache "${APT_OPTS[@]}" policy containerd | awk '/Candidate:/ {print $2}')}
    [[ $ver == 2.* ]] || die "Debian sid offers containerd '$ver', expected a 2.x version"
    log "    downloading containerd=$ver"
    (cd "$DEB_DIR" && apt-get "${APT_OPTS[@]}" -q download "containerd=$ver" >&2)
    deb=$(ls -1 "$DEB_DIR"/containerd_"${ver//:/%3a}"_*.deb)
  fi
  log "    unpacking $(basename "$deb")"
  rm -rf "$CTRD_PREFIX.tmp"
  dpkg -x "$deb" "$CTRD_PREFIX.tmp"
  dpkg-deb -f "$deb" Version >"$CTRD_PREFIX.tmp/.deb-version"
  rm -rf "$CTRD_PREFIX"
  mv "$CTRD_PREFIX.tmp" "$CTRD_PREFIX"
  containerd_ok || die "the unpacked containerd does not run: $(ctrd_version | head -n3)"
  log "    $(ctrd_version)"
}

# containerd 1.7 for the shim-mode tests (containerd-shim-kuasar-<kind>-v2): trixie's, unpacked privately.
fetch_containerd17() {
  step "containerd $CTRD17_VERSION from Debian trixie (private, dpkg -x into $CTRD17_PREFIX)" \
    "check network access to the Debian mirror; set KUASAR_E2E_CONTAINERD17_VERSION=<trixie version> if trixie moved on; delete $CTRD17_PREFIX to force a re-download"
  if [[ -x $CTRD17_PREFIX/usr/bin/containerd && -x $CTRD17_PREFIX/usr/bin/ctr ]] &&
    [[ $(cat "$CTRD17_PREFIX/.deb-version" 2>/dev/null) == "$CTRD17_VERSION" ]]; then
    log "    cached: $("$CTRD17_PREFIX/usr/bin/containerd" --version 2>&1)"
    return
  fi
  local deb
  deb=$(ls -1 "$DEB_DIR"/containerd_"${CTRD17_VERSION//:/%3a}"_*.deb 2>/dev/null | head -n1 || true)
  if [[ -z $deb ]]; then
    private_apt_opts "$CACHE/apt-trixie" trixie || die "could not derive the Debian mirror URI from the system's apt sources"
    mkdir -p "$DEB_DIR"
    log "    apt-get update (private trixie index)"
    apt-get "${APT_OPTS[@]}" -q update >&2
    (cd "$DEB_DIR" && apt-get "${APT_OPTS[@]}" -q download "containerd=$CTRD17_VERSION" >&2)
    deb=$(ls -1 "$DEB_DIR"/containerd_"${CTRD17_VERSION//:/%3a}"_*.deb)
  fi
  rm -rf "$CTRD17_PREFIX.tmp"
  dpkg -x "$deb" "$CTRD17_PREFIX.tmp"
  echo "$CTRD17_VERSION" >"$CTRD17_PREFIX.tmp/.deb-version"
  rm -rf "$CTRD17_PREFIX"
  mv "$CTRD17_PREFIX.tmp" "$CTRD17_PREFIX"
  "$CTRD17_PREFIX/usr/bin/containerd" --version >&2 || die "the unpacked containerd 1.7 does not run"
}

# Write one OCI image layout tarball (reference §3). All inputs are deterministic, so re-builds are byte-identical.
#   make_oci_tar <layer.tar> <full image name> <Cmd as JSON array> <out.tar>
make_oci_tar() {
  local layer=$1 name=$2 cmd=$3 out=$4
  local arch tag oci dir layer_d layer_s cfg_d cfg_s man_d man_s
  arch=$(dpkg --print-architecture)   # Debian and OCI agree on amd64/arm64
  tag=${name##*:}
  oci=$(mktemp -d "$IMAGES_DIR/.oci.XXXXXX")
  dir=$oci/blobs/sha256
  mkdir -p "$dir"

  layer_d=$(sha256sum "$layer" | cut -d' ' -f1)
  layer_s=$(stat -c %s "$layer")
  cp "$layer" "$dir/$layer_d"

  # The layer is uncompressed, so its diff_id equals its digest.
  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":%s,"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$cmd" "$layer_d" >"$oci/config.json"
  cfg_d=$(sha256sum "$oci/config.json" | cut -d' ' -f1)
  cfg_s=$(stat -c %s "$oci/config.json")
  mv "$oci/config.json" "$dir/$cfg_d"

  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cfg_d" "$cfg_s" "$layer_d" "$layer_s" >"$oci/manifest.json"
  man_d=$(sha256sum "$oci/manifest.json" | cut -d' ' -f1)
  man_s=$(stat -c %s "$oci/manifest.json")
  mv "$oci/manifest.json" "$dir/$man_d"

  # io.containerd.image.name is what 'ctr images import' uses as the image name.
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$man_d" "$man_s" "$arch" "$name" "$tag" >"$oci/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$oci/oci-layout"

  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$oci" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$oci"
  log "    $name -> $out (manifest sha256:$man_d)"
}

build_images() {
  step "offline OCI images from busybox-static ($BUSYBOX_IMAGE, $PAUSE_IMAGE)" \
    "make sure busybox-static is installed (/bin/busybox must be a static binary); delete $IMAGES_DIR to force a rebuild"
  local recipe
  recipe="$IMAGE_RECIPE $(cat "$WASM_SRC"/*.wat "$WASM_SRC"/*.c | sha256sum | cut -c1-16)"
  if [[ -s $BUSYBOX_TAR && -s $PAUSE_TAR && -s $WASM_TAR && $(cat "$IMAGES_DIR/.recipe" 2>/dev/null) == "$recipe" ]]; then
    log "    cached: $BUSYBOX_TAR $PAUSE_TAR $WASM_TAR"
    return
  fi
  local bb=/bin/busybox work rootfs applet
  [[ -x $bb ]] || die "$bb not found"
  if ldd "$bb" >/dev/null 2>&1; then die "$bb is dynamically linked; the image needs busybox-static"; fi
  mkdir -p "$IMAGES_DIR"
  work=$(mktemp -d "$IMAGES_DIR/.build.XXXXXX")
  rootfs=$work/rootfs
  mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,root,run,var,tmp}
  chmod 0755 "$rootfs" "$rootfs"/{bin,etc,proc,sys,dev,root,run,var}
  chmod 1777 "$rootfs/tmp"
  install -m 0755 "$bb" "$rootfs/bin/busybox"
  for applet in $("$bb" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$rootfs" -cf "$work/layer.tar" .

  make_oci_tar "$work/layer.tar" "$BUSYBOX_IMAGE" '["/bin/sh"]' "$BUSYBOX_TAR"
  # The pause image only has to block; PID 1 ignores SIGTERM, CRI kills the pause container with SIGKILL anyway.
  make_oci_tar "$work/layer.tar" "$PAUSE_IMAGE" '["/bin/sleep","2147483647"]' "$PAUSE_TAR"
  # The Wasm image (Kuasar's convention: the entrypoint is the .wasm file): modules from WAT through Debian's wabt,
  # and from C through clang and wasi-libc (Debian finds the wasm32-wasi sysroot under /usr by itself).
  local wasm_root=$work/wasm-rootfs w
  mkdir -p "$wasm_root"
  for w in "$WASM_SRC"/*.wat; do
    wat2wasm "$w" -o "$wasm_root/$(basename "${w%.wat}").wasm" || die "wat2wasm $w failed"
  done
  for w in "$WASM_SRC"/*.c; do
    clang-14 --target=wasm32-wasi -O2 -Wl,--strip-all -o "$wasm_root/$(basename "${w%.c}").wasm" "$w" ||
      die "clang-14 --target=wasm32-wasi $w failed (apt-get install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)"
  done
  chmod 0644 "$wasm_root"/*.wasm
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$wasm_root" -cf "$work/wasm-layer.tar" .
  make_oci_tar "$work/wasm-layer.tar" "$WASM_IMAGE" '["/hello.wasm"]' "$WASM_TAR"
  echo "$recipe" >"$IMAGES_DIR/.recipe"
  rm -rf "$work"
}

print_summary() {
  local runc_ver
  runc_ver=$(dpkg-query -W -f='${Version}' runc 2>/dev/null || echo '?')
  echo "containerd: $CTRD_BIN ($(cat "$CTRD_PREFIX/.deb-version" 2>/dev/null || echo '?'); $(ctrd_version))"
  echo "runc: $(command -v runc || echo /usr/sbin/runc) ($runc_ver)"
  echo "cni: $CNI_BIN_DIR ($(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo '?'))"
  echo "busybox image: $BUSYBOX_IMAGE $BUSYBOX_TAR"
  echo "pause image: $PAUSE_IMAGE $PAUSE_TAR"
  echo "cache: $CACHE"
}

cmd_setup() {
  require_root
  mkdir -p "$CACHE"
  # Serialise concurrent setups (parallel test runs share the cache).
  exec 9>"$CACHE/.lock"
  flock 9
  install_apt_packages
  fetch_containerd
  fetch_containerd17
  build_images
  step "check installed tools" "re-run 'env.sh setup'"
  command -v runc >/dev/null || die "runc not on PATH"
  for p in bridge host-local loopback; do
    [[ -x $CNI_BIN_DIR/$p ]] || die "CNI plugin $CNI_BIN_DIR/$p missing (package containernetworking-plugins)"
  done
  flock -u 9
  print_summary
}

cmd_env() {
  echo "KUASAR_E2E_CACHE=$CACHE"
  echo "KUASAR_E2E_CONTAINERD_BIN=$CTRD_BIN"
  echo "KUASAR_E2E_BUSYBOX_IMAGE=$BUSYBOX_IMAGE"
  echo "KUASAR_E2E_PAUSE_IMAGE=$PAUSE_IMAGE"
  echo "KUASAR_E2E_BUSYBOX_TAR=$BUSYBOX_TAR"
  echo "KUASAR_E2E_PAUSE_TAR=$PAUSE_TAR"
  echo "KUASAR_E2E_WASM_IMAGE=$WASM_IMAGE"
  echo "KUASAR_E2E_CNI_BIN_DIR=$CNI_BIN_DIR"
}

# ---------------------------------------------------------------------------------------------------------------
# start / stop containerd

require_setup() {
  step "check that 'env.sh setup' has run" "run: $0 setup"
  containerd_ok || die "containerd not found in $CTRD_BIN"
  [[ -s $BUSYBOX_TAR && -s $PAUSE_TAR ]] || die "image tarballs not found in $IMAGES_DIR"
  command -v runc >/dev/null || [[ -x /usr/sbin/runc ]] || die "runc not installed"
}

# containerd 1.7 (version 2 config): no sandbox proxy plugins; the kuasar runtimes run in shim mode, their launchers
# (containerd-shim-kuasar-<kind>-v2, on PATH) find each daemon through KUASAR_<KIND>_SANDBOXER_ADDRESS.
write_config17() {
  local wd=$1 k runtimes=""
  for k in runc vmm wasm quark; do
    runtimes+="
      [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.kuasar-$k]
        runtime_type = 'io.containerd.kuasar-$k.v2'
        sandbox_mode = 'shim'"
    if [[ $k == wasm ]]; then runtimes+="
        container_annotations = ['io.kuasar.wasm.*']"; fi
  done
  cat >"$wd/config.toml" <<EOF
# Generated by tests/e2e/env.sh; private containerd 1.7 for Kuasar's shim-mode end-to-end tests.
version = 2
root = '$wd/root'
state = '$wd/state'

[grpc]
  address = '$wd/containerd.sock'   # ttrpc is served at '<address>.ttrpc'

[debug]
  level = 'info'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '$wd/opt'

  [plugins.'io.containerd.grpc.v1.cri']
    disable_apparmor = true
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    sandbox_image = '$PAUSE_IMAGE'   # only the stock runtime uses it; shim-mode pods have no pause container

    [plugins.'io.containerd.grpc.v1.cri'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
$runtimes

    [plugins.'io.containerd.grpc.v1.cri'.cni]
      bin_dir = '$CNI_BIN_DIR'
      conf_dir = '$wd/cni'
      max_conf_num = 1
EOF
}

write_config() {
  local wd=$1 sbx=$2
  if [[ ${KUASAR_E2E_CTRD:-2} == 1.7 ]]; then
    write_config17 "$wd"
    return
  fi
  # containerd 2.1 asks a runtime's features (-info: "rro" for recursive read-only mounts) only of runtime_type
  # io.containerd.runc.v2, and without them it crashes on an RRO mount; so with our shim installed, kuasar-runc is a
  # runc.v2 runtime whose shim binary is ours (runtime_path). Without it, the plain kuasar-runc.v1 type.
  local kuasar_runtime="runtime_type = 'io.containerd.kuasar-runc.v1'"
  if [[ -n ${KUASAR_SHIM_DIR:-} && -x $KUASAR_SHIM_DIR/containerd-shim-kuasar-runc-v1 ]]; then
    kuasar_runtime="runtime_type = 'io.containerd.runc.v2'
        runtime_path = '$(abspath "$KUASAR_SHIM_DIR")/containerd-shim-kuasar-runc-v1'"
  fi
  local stock_runsc=""
  if [[ -n ${KUASAR_E2E_STOCK_RUNSC:-} ]]; then
    stock_runsc="[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc]
        runtime_type = 'io.containerd.runc.v2'
        sandboxer = 'podsandbox'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runsc.options]
          BinaryName = '$KUASAR_E2E_STOCK_RUNSC'"
  fi
  # Reference §2 + §4. Everything stateful is under the workdir, except the paths the runc shim hard-codes (§8).
  cat >"$wd/config.toml" <<EOF
# Generated by tests/e2e/env.sh; private containerd for Kuasar end-to-end tests.
version = 3
root = '$wd/root'
state = '$wd/state'

[grpc]
  address = '$wd/containerd.sock'   # ttrpc is served at '<address>.ttrpc'

[debug]
  level = 'info'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '$wd/opt'                 # default /opt/containerd would be created on the host

  [plugins.'io.containerd.nri.v1.nri']
    disable = true                   # NRI would listen on the host-global /var/run/nri/nri.sock

  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$PAUSE_IMAGE'         # imported offline; avoids pulling registry.k8s.io/pause

  [plugins.'io.containerd.cri.v1.runtime']
    disable_apparmor = true
    restrict_oom_score_adj = true    # no CAP_SYS_RESOURCE on this machine kind (§8)
    netns_mounts_under_state_dir = true   # pod netns below the workdir, not in the host's /var/run/netns

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      # Stock path: pause container + containerd-shim-runc-v2 (baseline for benchmarks).
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        sandboxer = 'podsandbox'

      # gVisor without a sandboxer: the stock runc shim with runsc as its binary (one shim per pod); only when
      # \$KUASAR_E2E_STOCK_RUNSC names a runsc (make bench-quark sets it). Baseline for quark-sandboxer's gvisor.
      $stock_runsc

      # Kuasar runc sandboxer. No options table: containerd must build runc Options for TaskApiAddress (§4.1).
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-runc]
        $kuasar_runtime
        sandboxer = 'runc'

      # Kuasar microVM sandboxer (QEMU); its daemon listens on \$KUASAR_E2E_VMM_SOCKET when a test starts it.
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-vmm]
        runtime_type = 'io.containerd.kuasar-vmm.v1'
        sandboxer = 'vmm'
        io_type = 'fifo'

      # Kuasar Wasm sandboxer: WASI modules in-process (\$KUASAR_E2E_WASM_SOCKET).
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-wasm]
        runtime_type = 'io.containerd.kuasar-wasm.v1'
        sandboxer = 'wasm'
        io_type = 'fifo'
        container_annotations = ['io.kuasar.wasm.*']   # the engine a container asks for

      # Kuasar Quark sandboxer with its gVisor backend: one gVisor sandbox per pod (\$KUASAR_E2E_QUARK_SOCKET).
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-quark]
        runtime_type = 'io.containerd.kuasar-quark.v1'
        sandboxer = 'quark'
        io_type = 'fifo'

      # The same, on a second vmm-sandboxer whose share_fs is VirtioFS (\$KUASAR_E2E_VMMFS_SOCKET).
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-vmm-virtiofs]
        runtime_type = 'io.containerd.kuasar-vmm.v1'
        sandboxer = 'vmmfs'
        io_type = 'fifo'

      # runc-sandboxer as installed from the release tarball into a scratch root (ReleaseTest starts it on
      # \$KUASAR_E2E_RELEASE_SOCKET while it runs).
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.kuasar-release]
        $kuasar_runtime
        sandboxer = 'release'

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$CNI_BIN_DIR']
      conf_dir = '$wd/cni'
      max_conf_num = 1

[proxy_plugins]
  [proxy_plugins.runc]
    type = 'sandbox'
    address = '$sbx'                 # bare path, gRPC; nothing needs to listen yet (client is lazy)
  [proxy_plugins.vmm]
    type = 'sandbox'
    address = '${KUASAR_E2E_VMM_SOCKET:-$wd/vmm-sandboxer.sock}'
  [proxy_plugins.wasm]
    type = 'sandbox'
    address = '${KUASAR_E2E_WASM_SOCKET:-$wd/wasm-sandboxer.sock}'
  [proxy_plugins.quark]
    type = 'sandbox'
    address = '${KUASAR_E2E_QUARK_SOCKET:-$wd/quark-sandboxer.sock}'
  [proxy_plugins.vmmfs]
    type = 'sandbox'
    address = '${KUASAR_E2E_VMMFS_SOCKET:-$wd/vmmfs-sandboxer.sock}'
  [proxy_plugins.release]
    type = 'sandbox'
    address = '${KUASAR_E2E_RELEASE_SOCKET:-$wd/release-sandboxer.sock}'
EOF
}

write_cni_config() {
  local wd=$1 gw
  mkdir -p "$wd/cni" "$wd/cni-ipam"
  gw=${SUBNET%.*}.1
  # host-local keeps its leases below the workdir so 'clean' removes them; no ipMasq -> no iptables rules to undo.
  cat >"$wd/cni/10-$CNI_NET_NAME.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET_NAME",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$SUBNET", "gateway": "$gw" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$wd/cni-ipam"
      }
    },
    { "type": "loopback" }
  ]
}
EOF
}

# Is the pid file's process our containerd for this workdir? (guards against pid reuse)
our_containerd_pid() {
  local wd=$1 pid
  [[ -s $wd/containerd.pid ]] || return 1
  pid=$(cat "$wd/containerd.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  [[ $(cmdline_of "$pid") == *"--config $wd/config.toml"* ]] || return 1
  echo "$pid"
}

ctr_cmd() {
  "$CTRD_BIN/ctr" -a "$1/containerd.sock" "${@:2}"
}

cmd_start_containerd() {
  [[ $# -eq 2 ]] || usage
  require_root
  local wd sbx sock pid
  wd=$(abspath "$1")
  sbx=$(abspath "$2")
  sock=$wd/containerd.sock
  require_setup

  step "prepare workdir $wd" "use a shorter workdir path (unix socket paths are limited to 107 bytes)"
  # '<sock>.ttrpc' must fit into sun_path.
  ((${#sock} + 6 <= 107)) || die "socket path too long: $sock.ttrpc"
  ((${#sbx} <= 107)) || die "sandboxer socket path too long: $sbx"
  mkdir -p "$wd/root" "$wd/state" "$wd/opt"
  if pid=$(our_containerd_pid "$wd"); then
    die_remedy "run: $0 stop-containerd $wd (or clean it)" "containerd for $wd is already running (pid $pid)"
  fi

  step "write $wd/config.toml and CNI config" ""
  write_config "$wd" "$sbx"
  write_cni_config "$wd"

  step "start containerd" "see $wd/containerd.log"
  # KUASAR_SHIM_DIR first: containerd resolves containerd-shim-<name>-<ver> on PATH (§4.4); runc comes from /usr/sbin.
  local path=$CTRD_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  if [[ -n ${KUASAR_SHIM_DIR:-} ]]; then path=$(abspath "$KUASAR_SHIM_DIR"):$path; fi
  # setsid: own session, so the caller's terminal/process group signals do not reach it; stopped by pid only.
  # containerd 1.7 drives shim-mode runtimes only with ENABLE_CRI_SANDBOXES set (its CRI "sbserver")
  local sandboxes=""
  if [[ ${KUASAR_E2E_CTRD:-2} == 1.7 ]]; then sandboxes=1; fi
  (cd "$wd" && PATH=$path ENABLE_CRI_SANDBOXES=$sandboxes exec setsid "$CTRD_BIN/containerd" --config "$wd/config.toml" \
    </dev/null >>"$wd/containerd.log" 2>&1) &
  pid=$!
  echo "$pid" >"$wd/containerd.pid"
  # A start that fails half-way must not leave a daemon behind.
  ON_FAIL="cmd_stop_containerd $wd"

  step "wait for containerd to answer on $sock (20 s)" "see $wd/containerd.log"
  local deadline=$((SECONDS + 20)) up=0
  while ((SECONDS < deadline)); do
    if ! pid_alive "$pid"; then
      tail -n 20 "$wd/containerd.log" >&2 || true
      rm -f "$wd/containerd.pid"
      die "containerd (pid $pid) exited during startup"
    fi
    if [[ -S $sock ]] && ctr_cmd "$wd" --connect-timeout 1s version >/dev/null 2>&1; then
      up=1
      break
    fi
    sleep 0.1
  done
  if ((!up)); then
    tail -n 20 "$wd/containerd.log" >&2 || true
    die "containerd did not answer within 20 s"
  fi
  log "    containerd pid $pid up: $(ctr_cmd "$wd" version 2>/dev/null | awk '/Version:/ {print $2}' | tail -n1)"

  step "import images into namespace k8s.io" "check $BUSYBOX_TAR / $PAUSE_TAR (re-run '$0 setup') and $wd/containerd.log"
  ctr_cmd "$wd" -n k8s.io images import "$BUSYBOX_TAR" >&2
  ctr_cmd "$wd" -n k8s.io images import "$PAUSE_TAR" >&2
  ctr_cmd "$wd" -n k8s.io images import "$WASM_TAR" >&2

  ON_FAIL=""
  echo "CONTAINERD_SOCK=$sock"
}

cmd_stop_containerd() {
  [[ $# -eq 1 ]] || usage
  require_root
  local wd pid i
  wd=$(abspath "$1")
  step "stop containerd of $wd" "find it with: ps -eo pid,cmd | grep '$wd/config.toml', then kill -9 <pid>"
  if ! pid=$(our_containerd_pid "$wd"); then
    rm -f "$wd/containerd.pid"
    log "    not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    log "    containerd pid $pid ignored SIGTERM for 10 s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_alive "$pid" || break
      sleep 0.1
    done
    if pid_alive "$pid"; then die "containerd pid $pid survived SIGKILL"; fi
  fi
  rm -f "$wd/containerd.pid"
  log "    stopped (pid $pid)"
}

# ---------------------------------------------------------------------------------------------------------------
# clean

# Containers started through this containerd that are still alive (containerd stop leaves shims and containers
# running). Their runc state lives in the shared /run/containerd/runc/<ns>/<id>, so match on the bundle path.
kill_runc_containers() {
  local wd=$1 bundle ns id root state
  for bundle in "$wd"/state/io.containerd.runtime.v2.task/*/*; do
    [[ -d $bundle ]] || continue
    id=$(basename "$bundle")
    ns=$(basename "$(dirname "$bundle")")
    root=$RUNC_STATE_ROOT/$ns
    [[ -d $root/$id ]] || continue
    state=$(runc --root "$root" state "$id" 2>/dev/null || true)
    if [[ $state == *"\"bundle\": \"$bundle\""* ]]; then
      log "    runc delete -f $ns/$id"
      runc --root "$root" delete -f "$id" >&2 || log "    (runc delete of $ns/$id failed)"
    fi
  done
}

# Shim processes that serve this containerd ('-address <workdir>/containerd.sock' on their command line).
kill_shims() {
  local wd=$1 sock=$1/containerd.sock p pid cmd pids=() i left
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [[ $pid != "$$" ]] || continue
    cmd=" $(cmdline_of "$pid") "
    [[ $cmd == *containerd-shim* && $cmd == *" -address $sock "* ]] || continue
    pids+=("$pid")
  done
  ((${#pids[@]})) || return 0
  log "    stopping shims: ${pids[*]}"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 30; i++)); do
    left=0
    for pid in "${pids[@]}"; do
      if pid_alive "$pid"; then left=1; fi
    done
    ((left)) || break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
}

# Shim sockets go to the shared /run/containerd/s (§8); each bundle records which one is its own.
remove_shim_sockets() {
  local wd=$1 f addr
  for f in "$wd"/state/io.containerd.runtime.v2.task/*/*/address; do
    [[ -f $f ]] || continue
    addr=$(cat "$f")
    addr=${addr#unix://}
    if [[ $addr == /run/containerd/s/* && -S $addr ]]; then rm -f "$addr"; fi
  done
}

# 'ctr run -d' leaves its stdio FIFOs in the shared /run/containerd/fifo/<random>/<id>-std{in,out,err}.
# Remove a FIFO dir only if every entry belongs to one of our task ids and no process holds it open.
remove_ctr_fifos() {
  local wd=$1 dir f name id ours open_paths=""
  local -A ids=()
  for f in "$wd"/state/io.containerd.runtime.v2.task/*/*; do
    if [[ -d $f ]]; then ids[$(basename "$f")]=1; fi
  done
  ((${#ids[@]})) || return 0
  for dir in /run/containerd/fifo/*/; do
    [[ -d $dir ]] || continue
    ours=1
    for f in "$dir"*; do
      [[ -e $f ]] || continue
      name=$(basename "$f")
      id=${name%-std*}
      if [[ $name == "$id" || -z ${ids[$id]:-} ]]; then ours=0; break; fi
    done
    ((ours)) || continue
    if [[ -z $open_paths ]]; then open_paths=$(find /proc/[0-9]*/fd -maxdepth 1 -type l -printf '%l\n' 2>/dev/null | grep '^/run/containerd/fifo/' || true); open_paths+=$'\n'; fi
    if ! grep -qF -- "${dir%/}/" <<<"$open_paths"; then rm -rf -- "$dir"; fi
  done
}

# libcni caches results outside our control (/var/lib/cni/results/<net>-<sandbox id>-<if>); drop ours.
remove_cni_cache() {
  local wd=$1 d id
  for d in "$wd"/root/io.containerd.grpc.v1.cri/sandboxes/* "$wd"/state/io.containerd.grpc.v1.cri/sandboxes/*; do
    [[ -d $d ]] || continue
    id=$(basename "$d")
    rm -f /var/lib/cni/results/*-"$id"-* 2>/dev/null || true   # our network and the cni-loopback one
  done
}

# Mount points at or below the workdir, deepest first (mountinfo escapes blanks as octal, e.g. \040).
mounts_below() {
  local wd=$1
  awk -v wd="$wd" '{ mp = $5; gsub(/\\040/, " ", mp); if (mp == wd || index(mp, wd "/") == 1) print mp }' /proc/self/mountinfo |
    awk -F/ '{ print NF "\t" $0 }' | sort -rn -k1,1 | cut -f2- | uniq
}

unmount_below() {
  local wd=$1 mp round
  for ((round = 0; round < 5; round++)); do
    local any=0
    while IFS= read -r mp; do
      [[ -n $mp ]] || continue
      any=1
      umount -l "$mp" 2>/dev/null || true
    done < <(mounts_below "$wd")
    ((any)) || return 0
  done
  [[ -z $(mounts_below "$wd") ]] || die "mounts left below $wd: $(mounts_below "$wd" | tr '\n' ' ')"
}

# The CNI bridge is host-global; remove it only when no interface is attached (i.e. no pod of any daemon uses it).
remove_idle_bridge() {
  ip link show dev "$BRIDGE" >/dev/null 2>&1 || return 0
  if [[ -z $(ip -o link show master "$BRIDGE" 2>/dev/null) ]]; then
    log "    removing idle bridge $BRIDGE"
    ip link del "$BRIDGE" 2>/dev/null || true
  fi
}

cmd_clean() {
  [[ $# -eq 1 ]] || usage
  require_root
  local wd
  wd=$(abspath "$1")
  step "clean $wd" ""
  case $wd in
  / | /root | /tmp | /var | /home | /usr | /etc | /run | "$CACHE" | "$CACHE"/*) die "refusing to clean '$wd'" ;;
  esac
  cmd_stop_containerd "$wd"
  if [[ ! -e $wd ]]; then
    log "    $wd already gone"
    return 0
  fi
  step "kill containers and shims left by $wd" "inspect with: runc --root $RUNC_STATE_ROOT/k8s.io list; ps -ef | grep containerd-shim"
  kill_runc_containers "$wd"
  kill_shims "$wd"
  remove_shim_sockets "$wd"
  remove_ctr_fifos "$wd"
  remove_cni_cache "$wd"
  step "unmount everything below $wd" "inspect with: grep '$wd' /proc/self/mountinfo; then umount -l <path>"
  unmount_below "$wd"
  step "remove network leftovers" ""
  remove_idle_bridge   # pod netns were mounted below the workdir (netns_mounts_under_state_dir), now unmounted
  step "remove $wd" "check for remaining mounts: grep '$wd' /proc/self/mountinfo"
  rm -rf --one-file-system "$wd"
  log "    cleaned $wd"
}

# ---------------------------------------------------------------------------------------------------------------

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case $cmd in
  setup) cmd_setup "$@" ;;
  start-containerd) cmd_start_containerd "$@" ;;
  stop-containerd) cmd_stop_containerd "$@" ;;
  clean) cmd_clean "$@" ;;
  env) cmd_env "$@" ;;
  -h | --help | help) usage ;;
  *) log "unknown subcommand: $cmd"; usage ;;
  esac
}

main "$@"
