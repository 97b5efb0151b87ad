#!/bin/sh
# fuzz-smoke.sh - build every libFuzzer harness in tests/fuzz with clang
# (ASan + UBSan + fuzzer coverage), replay its regression inputs, then fuzz
# it for FUZZ_SECONDS (default 10) from the committed seed corpus. One TAP
# line per harness; the diagnostic gives the exec count. A crash leaves
# its input in tests/fuzz/crashes/ (copy it to regressions/<name>/ once fixed).
#
# Environment (set by `make check` / `make fuzz-smoke`): SANDBOXD_SRCDIR,
# FUZZ_CFLAGS, FUZZ_LIBS; optional FUZZ_SECONDS, FUZZ_CC (default clang),
# FUZZ_ONLY (one harness name).
set -u
src=${SANDBOXD_SRCDIR:-.}
seconds=${FUZZ_SECONDS:-10}
cc=${FUZZ_CC:-clang}
out=${FUZZ_BUILD_DIR:-tests/fuzz}
mkdir -p "$out/bin" "$out/crashes"

harnesses="jsonv jupyter execution mime paths agent http ws"
[ -n "${FUZZ_ONLY:-}" ] && harnesses=$FUZZ_ONLY
set -- $harnesses
echo "1..$#"

if ! command -v "$cc" >/dev/null 2>&1; then
    for h in $harnesses; do
        echo "not ok - fuzz_$h # $cc not found (./bootstrap installs clang)"
    done
    exit 0
fi

sources_of () {
    case $1 in
    jsonv) echo "src/jsonv.c src/util.c" ;;
    jupyter) echo "src/jupyter.c src/jsonv.c src/util.c" ;;
    execution) echo "src/execution.c mime/mime.c src/jsonv.c src/util.c" ;;
    mime) echo "mime/mime.c src/util.c" ;;
    paths) echo "src/files.c src/jsonv.c src/util.c" ;;
    agent) echo "" ;;
    ws) echo "src/ws.c src/util.c" ;;
    http) (cd "$src" && ls src/*.c | grep -v '^src/main\.c$' && echo mime/mime.c) ;;
    esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-smoke-XXXXXX")
export TMPDIR="$work" # harness scratch (fuzz_paths) goes away with it
trap 'rm -rf "$work"' EXIT INT TERM
n=0
for h in $harnesses; do
    n=$((n + 1))
    bin="$out/bin/fuzz_$h"
    srcs=""
    for s in $(sources_of "$h"); do srcs="$srcs $src/$s"; done
    # shellcheck disable=SC2086
    if ! $cc -g -O1 -std=gnu11 -D_GNU_SOURCE -DPACKAGE_VERSION='"fuzz"' \
        -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=undefined -I"$src/src" -I"$src/mime" $FUZZ_CFLAGS \
        "$src/tests/fuzz/fuzz_$h.c" $srcs -o "$bin" $FUZZ_LIBS >"$work/build-$h.log" 2>&1; then
        echo "not ok $n - fuzz_$h builds"
        sed 's/^/# /' "$work/build-$h.log" | head -40
        continue
    fi
    # Every input that once crashed must keep passing.
    reg="$src/tests/fuzz/regressions/$h"
    if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
        if ! "$bin" -runs=1 "$reg"/* >"$work/reg-$h.log" 2>&1; then
            echo "not ok $n - fuzz_$h regression inputs"
            tail -n 30 "$work/reg-$h.log" | sed 's/^/# /'
            continue
        fi
    fi
    mkdir -p "$work/corpus-$h"
    if "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$out/crashes/$h-" -print_final_stats=1 \
        "$work/corpus-$h" "$src/tests/fuzz/corpus/$h" >"$work/run-$h.log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/run-$h.log")
        cov=$(grep -o 'cov: [0-9]*' "$work/run-$h.log" | tail -n 1)
        echo "ok $n - fuzz_$h: ${execs:-?} execs in ${seconds}s, ${cov:-cov: ?}"
    else
        echo "not ok $n - fuzz_$h found a crash (input saved in $out/crashes/)"
        grep -E 'ERROR|SUMMARY|#[0-9]+ 0x' "$work/run-$h.log" | head -30 | sed 's/^/# /'
    fi
done
