#!/bin/sh
# Checks that $1 (a JAVA_HOME) holds a JDK 25 or newer, and says how to get one if not.
jh="${1:-${JAVA_HOME:-}}"
how="Debian 13: apt-get install openjdk-25-jdk-headless, then JAVA_HOME=/usr/lib/jvm/java-25-openjdk-amd64.
Debian 12 has no JDK 25 package: unpack an Eclipse Temurin 25 JDK (adoptium.net) into
/usr/lib/jvm/temurin-25-jdk-amd64 (the default here), or point JAVA_HOME at any JDK 25."
if [ -z "$jh" ] || [ ! -x "$jh/bin/java" ] || [ ! -x "$jh/bin/javac" ]; then
    printf 'No JDK found at JAVA_HOME=%s; Kuasar (Java) needs JDK 25.\n%s\n' "${jh:-(unset)}" "$how" >&2
    exit 1
fi
v=$("$jh/bin/java" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
if [ -z "$v" ] || [ "${v%%.*}" -lt 25 ] 2>/dev/null; then
    printf 'JAVA_HOME=%s is Java %s; Kuasar (Java) needs JDK 25 or newer.\n%s\n' "$jh" "${v:-?}" "$how" >&2
    exit 1
fi
exit 0
