#!/bin/sh
# Memory-safety test of the C helpers: builds kuasar-monitor, kuasar-holder and kuasar-ttrpc-proxy with
# AddressSanitizer + UndefinedBehaviorSanitizer (gcc), runs each through its test driver (real scenarios: exits,
# signals, orphans; namespaces and reaping; well-formed, malformed, split and oversized frames, backend failures),
# then fuzzes the proxy's frame handling for a bounded time. Fails on any test failure or sanitizer report.
#
#   sanitize.sh [OUT_DIR]          (default: runc-sandboxer/target/sanitize)
#   FUZZ_SECONDS=N                 fuzzing budget, default 30 (CI); see docs/architecture.md for a longer run
#
# The fuzzer is libFuzzer when clang can build one (Debian: clang, libclang-rt-14-dev), else a deterministic
# mutation driver built with gcc. The holder test needs root (namespaces); it is skipped otherwise.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../main/c" && pwd)
out=${1:-$here/../../../target/sanitize}
fuzz_seconds=${FUZZ_SECONDS:-30}
rm -rf "$out"
mkdir -p "$out/reports" "$out/work" "$out/corpus"
out=$(cd "$out" && pwd)

san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1"
warn="-Wall -Wextra -Werror"
echo "sanitize: building with gcc $san"
gcc $san $warn -o "$out/kuasar-monitor" "$src/kuasar-monitor.c"
gcc $san $warn -o "$out/kuasar-holder" "$src/kuasar-holder.c"
gcc $san $warn -o "$out/kuasar-ttrpc-proxy" "$src/kuasar-ttrpc-proxy.c"
gcc $san $warn -o "$out/monitor-test" "$here/monitor-test.c"
gcc $san $warn -o "$out/holder-test" "$here/holder-test.c"
gcc $san $warn -o "$out/proxy-test" "$here/proxy-test.c"
gcc $san $warn -DSTANDALONE -o "$out/proxy-fuzz-standalone" "$here/proxy-fuzz.c"

# Every report goes to a file (the helpers close or redirect their stderr); any file there fails the run.
export ASAN_OPTIONS="log_path=$out/reports/asan:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="log_path=$out/reports/ubsan:print_stacktrace=1:halt_on_error=1"
status=0

"$out/monitor-test" "$out/kuasar-monitor" "$out/work/monitor" || status=1
"$out/proxy-test" "$out/kuasar-ttrpc-proxy" "$out/work/proxy" || status=1
if [ "$(id -u)" = 0 ]; then
    # LeakSanitizer cannot stop the world of a process that has unshared its PID namespace (its tracer would be
    # cloned into the new namespace; it hangs): the holder runs with ASan and UBSan, without leak checking.
    ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" "$out/holder-test" "$out/kuasar-holder" || status=1
else
    echo "sanitize: not root, holder test skipped"
fi

fuzzer=""
if command -v clang >/dev/null 2>&1 \
        && clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g -O1 $warn \
           -o "$out/proxy-fuzz" "$here/proxy-fuzz.c" 2>"$out/work/clang.log"; then
    fuzzer=libfuzzer
fi
"$out/proxy-fuzz-standalone" -write-seeds "$out/corpus"
if [ "$fuzzer" = libfuzzer ]; then
    echo "sanitize: libFuzzer on the proxy's frame handling for ${fuzz_seconds} s"
    "$out/proxy-fuzz" -max_total_time="$fuzz_seconds" -max_len=8192 -print_final_stats=1 \
        -artifact_prefix="$out/" "$out/corpus" >"$out/work/fuzz.log" 2>&1 || { tail -60 "$out/work/fuzz.log"; status=1; }
    grep -E "^(Done|stat::number_of_executed_units)" "$out/work/fuzz.log" || true
else
    echo "sanitize: clang with libFuzzer not found (apt-get install clang libclang-rt-14-dev); mutation driver for ${fuzz_seconds} s"
    "$out/proxy-fuzz-standalone" -seconds "$fuzz_seconds" -seed "$(date +%s)" || status=1
fi

# gcc's UBSan writes to stderr whatever log_path says: the proxy's stderr is its log.
if grep -l -E "runtime error|Sanitizer" "$out"/work/*/*.log 2>/dev/null; then
    echo "sanitize: sanitizer output in the logs above"
    status=1
fi
if [ -n "$(ls -A "$out/reports")" ]; then
    echo "sanitize: sanitizer reports:"
    cat "$out"/reports/*
    status=1
fi
if [ $status -eq 0 ]; then
    echo "sanitize: C helpers clean under ASan/UBSan"
else
    echo "sanitize: FAILED (see above; builds and logs in $out)"
fi
exit $status
