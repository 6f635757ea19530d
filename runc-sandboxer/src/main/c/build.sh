#!/bin/sh
# Builds a C helper. A static musl build keeps one long-lived process per pod at ~45 KB PSS, against ~300 KB for the
# same program linked against glibc; without musl-gcc (Debian: musl-tools) it falls back to gcc.
#   build.sh <output> <source> [cflags...]
set -eu
out="$1"
src="$2"
shift 2
mkdir -p "$(dirname "$out")"
if command -v musl-gcc >/dev/null 2>&1; then
    exec musl-gcc -static -Os -s -Wall -Wextra -Werror "$@" -o "$out" "$src"
fi
echo "build.sh: musl-gcc not found (apt-get install musl-tools); building $out with gcc (larger footprint)" >&2
exec gcc -O2 -Wall -Wextra -Werror "$@" -o "$out" "$src"
