#!/bin/sh
# Fails (TAP) when a C source drifts from .clang-format.
srcdir=${SANDBOXD_SRCDIR:-.}
if ! command -v clang-format >/dev/null 2>&1; then
    echo "1..0 # SKIP clang-format not installed"
    exit 0
fi
n=0
fail=0
for f in "$srcdir"/src/*.c "$srcdir"/src/*.h "$srcdir"/src/agent/*.c "$srcdir"/src/run/*.c "$srcdir"/src/run/*.h "$srcdir"/mime/*.c "$srcdir"/mime/*.h "$srcdir"/tests/unit/*.c "$srcdir"/tests/unit/*.h; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    if clang-format --style=file:"$srcdir/.clang-format" "$f" | cmp -s - "$f"; then
        echo "ok $n - $(basename "$f") is formatted"
    else
        echo "not ok $n - $(basename "$f") drifts from .clang-format (run: make format)"
        fail=1
    fi
done
echo "1..$n"
exit $fail
