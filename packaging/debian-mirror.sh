# shellcheck shell=bash
# Sourced by the scripts that download packages of another Debian suite (containerd from sid for the tests; from
# trixie virtiofsd for the microVM image, WasmEdge for the Wasm sandboxer, runsc for gVisor) into a private cache,
# never installing them.
#
# mirror_uri: the Debian mirror URI of the system's own suite, read through apt so that both deb822 and one-line
# formats work; KUASAR_APT_MIRROR (or the older KUASAR_E2E_APT_MIRROR) overrides it.
mirror_uri() {
  local override=${KUASAR_APT_MIRROR:-${KUASAR_E2E_APT_MIRROR:-}}
  if [[ -n $override ]]; then
    echo "$override"
    return
  fi
  local codename
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  # shellcheck disable=SC2016  # $(...) here is apt's format syntax, not a shell expansion
  apt-get indextargets --no-release-info --format '$(TARGET_OF) $(RELEASE) $(REPO_URI)' 2>/dev/null |
    awk -v c="$codename" '$1 == "deb" && $2 == c && !found { print $3; found = 1 }'   # no early exit: keeps pipefail quiet
}

# private_apt_opts DIR SUITE: sets APT_OPTS to an apt configuration whose sources, lists and cache live in DIR and
# name only SUITE of the system's mirror (main). apt-get "${APT_OPTS[@]}" update|download then never touches the
# system's own apt state.
private_apt_opts() {
  local dir=$1 suite=$2 mirror
  mirror=$(mirror_uri)
  [[ -n $mirror ]] || return 1
  mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s %s main\n' "$mirror" "$suite" >"$dir/sources.list"
  APT_OPTS=(
    -o "Dir::Etc::SourceList=$dir/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$dir/lists"
    -o "Dir::Cache=$dir/cache"
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=root"   # the cache dir is root-owned; avoids the '_apt cannot access' warning
  )
}

# trixie_download CACHE [--closure] PKG...: puts the .debs of PKG (with --closure: PKG and everything it depends on,
# as if nothing were installed) from Debian trixie into CACHE/debs, through a private apt state in CACHE/apt. Needs
# log and die from the caller; uses the caller's script name in messages. suite_download SUITE CACHE ... does the
# same from another suite (sid).
trixie_download() {
  suite_download trixie "$@"
}

suite_download() {
  local suite=$1 cache=$2 closure=""
  shift 2
  if [[ ${1:-} == --closure ]]; then
    closure=1
    shift
  fi
  mkdir -p "$cache/debs"
  private_apt_opts "$cache/apt" "$suite" || die "could not derive the Debian mirror URI from the system's apt sources (set KUASAR_APT_MIRROR)"
  log "apt-get update (private $suite index)"
  apt-get "${APT_OPTS[@]}" -q update >/dev/null || die "apt-get update of $suite failed: check the mirror"
  log "downloading ${closure:+the closure of }$*"
  if [[ -n $closure ]]; then
    : >"$cache/apt/status" # an empty private dpkg status: apt resolves every dependency
    apt-get "${APT_OPTS[@]}" -q -y -o "Dir::State::status=$cache/apt/status" -o "Dir::Cache::archives=$cache/debs" \
      --no-install-recommends --download-only install "$@" >/dev/null || die "apt-get download of $* failed"
  else
    (cd "$cache/debs" && apt-get "${APT_OPTS[@]}" -q download "$@" >/dev/null) || die "apt-get download of $* failed"
  fi
}
