#!/usr/bin/env bash
# Called by `make release` after `make install DESTDIR=<stage> PREFIX=/usr/local`: completes the staged tree and
# writes the release tarball.
#
#   release.sh STAGE VERSION ARCH DIST
#
#   STAGE    the staged tree, <dir>/kuasar-<version> (usr/local/..., var/lib/kuasar/...); becomes the tarball's
#            top directory
#   DIST     where kuasar-<version>-linux-<arch>.tar.gz and its .sha256 go (earlier tarballs for ARCH are removed)
#
# Adds: usr/local/lib/kuasar/jre (jlink from $JAVA_HOME: the modules jdeps finds in the installed jars plus a fixed
# list, without java.desktop; a CDS archive for the daemons' -XX:+UseCompactObjectHeaders), usr/local/lib/kuasar/VERSION
# and uninstall.sh, install.sh, uninstall.sh, README and SHA256SUMS (every other file). Then checks that every daemon runs --version and
# --help on the bundled runtime, not on $JAVA_HOME. The tarball is reproducible for the same inputs: sorted entries,
# owner root, mtimes of the last commit ($SOURCE_DATE_EPOCH overrides), gzip without a timestamp.
set -euo pipefail

die() { echo "release.sh: $*" >&2; exit 1; }
log() { echo "release.sh: $*"; }

[ $# -eq 4 ] || die "usage: release.sh STAGE VERSION ARCH DIST"
STAGE=$1 VERSION=$2 ARCH=$3 DIST=$4
HERE=$(cd "$(dirname "$0")" && pwd)
JAVA_HOME=${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}
PREFIX_DIR=$STAGE/usr/local
LIBDIR=$PREFIX_DIR/lib/kuasar
JRE=$LIBDIR/jre
NAME=kuasar-$VERSION-linux-$ARCH
T0=$(date +%s%N)

[ -d "$PREFIX_DIR/bin" ] || die "$PREFIX_DIR/bin missing: run through make release"
[ "$(basename "$STAGE")" = "kuasar-$VERSION" ] || die "STAGE must be named kuasar-$VERSION"
for t in jlink jdeps; do [ -x "$JAVA_HOME/bin/$t" ] || die "no $t in JAVA_HOME=$JAVA_HOME (JDK 25 needed)"; done

# Modules: java.logging (grpc, JUL bridge), java.management + jdk.management (metrics: heap, threads, CPU),
# jdk.unsupported (sun.misc.Signal, Unsafe for netty/protobuf), jdk.net (socket options on Unix sockets), jdk.jfr
# (netty's events; also lets an operator record a JFR profile), java.naming (netty's resolver), java.sql and java.xml
# (jackson, gson, protobuf-java-util). java.desktop is left out: jdeps finds it only through jackson-databind's
# optional java.beans support, which jackson skips when the module is absent; it would add ~12 MB.
JRE_MODULES=java.base,java.logging,java.management,jdk.management,jdk.unsupported,jdk.net,jdk.jfr,java.naming,java.sql,java.xml
JRE_EXCLUDE=java.desktop

mapfile -t JARS < <(find "$LIBDIR" -mindepth 2 -maxdepth 2 -name '*.jar' -printf '%f %p\n' | sort -u -k1,1 | cut -d' ' -f2-)
[ ${#JARS[@]} -gt 0 ] || die "no jars below $LIBDIR"
cp=$(IFS=:; echo "${JARS[*]}")
jdk_major=$("$JAVA_HOME/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
found=$("$JAVA_HOME/bin/jdeps" --print-module-deps --ignore-missing-deps --multi-release "$jdk_major" \
    --class-path "$cp" "${JARS[@]}" 2>/dev/null | tail -n1) || die "jdeps failed over ${#JARS[@]} jars"
MODS=$(printf '%s,%s' "$JRE_MODULES" "$found" | tr ',' '\n' | sed '/^$/d' | sort -u \
    | grep -vxF -f <(tr ',' '\n' <<<"$JRE_EXCLUDE") | paste -sd,)
log "jlink $MODS"
rm -rf "$JRE"
"$JAVA_HOME/bin/jlink" --add-modules "$MODS" --strip-debug --no-header-files --no-man-pages --output "$JRE" >/dev/null
# The daemons run with -XX:+UseCompactObjectHeaders -XX:+UseSerialGC (Makefile JVM_OPTS), which maps
# lib/server/classes_coh.jsa; jlink makes none. Dump it (about 100 ms less start-up per daemon).
"$JRE/bin/java" -XX:+UseCompactObjectHeaders -XX:+UseSerialGC -Xshare:dump >/dev/null 2>&1 || die "CDS dump failed"
[ -f "$JRE/lib/server/classes_coh.jsa" ] || die "the CDS dump made no lib/server/classes_coh.jsa"

echo "$VERSION" >"$LIBDIR/VERSION"

# The four daemons share most of their jars (grpc, netty, protobuf, ...): identical ones become hard links of the
# first, so the tarball holds each once (tar stores the others as links; install.sh keeps them linked).
declare -A first=()
linked=0
while read -r sum jar; do
    if [ -n "${first[$sum]:-}" ]; then ln -f "${first[$sum]}" "$jar"; linked=$((linked + 1)); else first[$sum]=$jar; fi
done < <(find "$LIBDIR" -mindepth 2 -maxdepth 2 -name '*.jar' | LC_ALL=C sort | xargs -d '\n' sha256sum)
log "$linked jars hard-linked to an identical one of another daemon"

# Every daemon must start on the bundled runtime: --version and --help, and java.home is the bundled JRE.
want=$(cd "$JRE" && pwd -P)
for l in "$PREFIX_DIR"/bin/*-sandboxer; do
    n=$(basename "$l")
    out=$(env -u KUASAR_JAVA KUASAR_JAVA_OPTS=-XshowSettings:properties "$l" --version 2>&1) \
        || die "$n --version failed on the bundled runtime: $out"
    home=$(sed -n 's/^ *java.home = //p' <<<"$out")
    [ "$home" = "$want" ] || die "$n ran on java.home=$home, not on the bundled $want"
    grep -q "^$n " <<<"$out" || die "$n --version printed no version: $out"
    env -u KUASAR_JAVA "$l" --help >/dev/null 2>&1 || die "$n --help failed on the bundled runtime"
    log "$n: $(grep "^$n " <<<"$out") on the bundled JRE"
done

for f in README install.sh uninstall.sh; do
    sed "s|@VERSION@|$VERSION|g; s|@ARCH@|$ARCH|g" "$HERE/$f" >"$STAGE/$f"
done
chmod 0755 "$STAGE/install.sh" "$STAGE/uninstall.sh"
install -m 0755 "$STAGE/uninstall.sh" "$LIBDIR/uninstall.sh"
(cd "$STAGE" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) \
    >"$STAGE/SHA256SUMS"

mkdir -p "$DIST"
rm -f "$DIST"/kuasar-*-linux-"$ARCH".tar.gz "$DIST"/kuasar-*-linux-"$ARCH".tar.gz.sha256
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$HERE" log -1 --format=%ct 2>/dev/null || echo 0)}
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode=go-w --format=gnu \
    -C "$(dirname "$STAGE")" -cf - "kuasar-$VERSION" | gzip -n -6 >"$DIST/$NAME.tar.gz.tmp"
mv "$DIST/$NAME.tar.gz.tmp" "$DIST/$NAME.tar.gz"
(cd "$DIST" && sha256sum "$NAME.tar.gz" >"$NAME.tar.gz.sha256")
size=$(stat -c %s "$DIST/$NAME.tar.gz")
log "$DIST/$NAME.tar.gz: $((size / 1024 / 1024)) MiB ($(wc -l <"$STAGE/SHA256SUMS") files, $(du -sm "$STAGE" | cut -f1) MiB unpacked, JRE $(du -sm "$JRE" | cut -f1) MiB) in $((($(date +%s%N) - T0) / 1000000)) ms"
log "sha256 $(cut -d' ' -f1 "$DIST/$NAME.tar.gz.sha256")"
