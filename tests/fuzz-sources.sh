#!/bin/sh
# Each fuzz target's `// sources:` line names every src/*.c file it needs.
# fuzz/build links a target from exactly that list (clang, libFuzzer), while
# `make check` replays it linked against all of libferry.a, where a missing
# file goes unnoticed until CI's fuzz stage fails to link. Here each target's
# replay object is linked, with the normal compiler, against the objects of
# exactly the files its list names and the libraries of its `// libs:` line;
# an undefined symbol fails the check, with the file that defines it.
# Needs the objects of a built tree (make check builds them first):
# FERRY_BUILDDIR, and FERRY_LINK, the command that links (Makefile.am).
: "${FERRY_SRCDIR:?}" "${FERRY_BUILDDIR:?}" "${FERRY_LINK:?}"
build=$FERRY_BUILDDIR
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

n=0
fail=0
for src in "$FERRY_SRCDIR"/fuzz/fuzz_*.c; do
    name=$(basename "$src" .c)
    name=${name#fuzz_}
    sources=$(sed -n 's|^// sources:||p' "$src" | head -n 1)
    libs=$(sed -n 's|^// libs:||p' "$src" | head -n 1)
    objs="$build/fuzz/replay_$name-fuzz_$name.o $build/fuzz/replay_$name-replay.o"
    for s in $sources; do
        base=$(basename "$s" .c)
        objs="$objs $build/src/libferry_a-$base.o"
    done
    missing=no
    for o in $objs; do
        if [ ! -f "$o" ]; then
            echo "fuzz-sources: $name: no object $o (is the file in its // sources: line in src/, and has the target a replay in Makefile.am?)" >&2
            missing=yes
        fi
    done
    if [ $missing = yes ]; then
        fail=1
        continue
    fi
    # shellcheck disable=SC2086
    if ! $FERRY_LINK -o "$tmp/$name" $objs $libs >"$tmp/err" 2>&1; then
        # GNU ld and gold say "undefined reference to `sym'", lld "undefined symbol: sym"
        syms=$(sed -n -e "s/.*undefined reference to [\`']\([^']*\)'.*/\1/p" \
            -e 's/.*undefined symbol: \([^ ]*\).*/\1/p' "$tmp/err" | sort -u)
        if [ -z "$syms" ]; then
            echo "fuzz-sources: $name does not link from its // sources: and // libs: lines:" >&2
            cat "$tmp/err" >&2
        else
            echo "fuzz-sources: $name does not link from its // sources: and // libs: lines; undefined:" >&2
            for sym in $syms; do
                # shellcheck disable=SC2016
                where=$(nm -A --defined-only "$build"/src/libferry_a-*.o 2>/dev/null |
                    awk -v s="$sym" '$NF == s { sub(/:.*/, "", $1); print $1; exit }')
                if [ -n "$where" ]; then
                    where=${where##*/libferry_a-}
                    echo "  $sym (defined in src/${where%.o}.c)" >&2
                else
                    echo "  $sym (not in libferry.a: a library for its // libs: line?)" >&2
                fi
            done
        fi
        fail=1
        continue
    fi
    n=$((n + 1))
done
[ "$fail" -eq 0 ] && echo "fuzz-sources: $n fuzz targets link from their // sources: lines"
exit "$fail"
