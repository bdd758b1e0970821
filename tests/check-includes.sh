#!/bin/sh
# Keeps the layering of README "Layout of src/" (dependencies point down)
# true: pure modules never see the runtime or libevent, and each foreign
# library is included by the one module that owns it.
src="${FERRY_SRCDIR:-$(dirname "$0")/..}/src"
status=0

# pattern, then the files allowed to include it (basenames without extension)
check() {
    pattern=$1
    shift
    for f in "$src"/*.c "$src"/*.h; do
        base=$(basename "$f")
        base=${base%.*}
        allowed=no
        for a in "$@"; do
            [ "$base" = "$a" ] && allowed=yes
        done
        [ $allowed = yes ] && continue
        if grep -En "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($pattern)" "$f"; then
            echo "check-includes: $f includes $pattern, which only $* may include" >&2
            status=1
        fi
    done
}

check 'event2/' loop io evmem upstream health conn proxy reply request body tunnel listener daemon server main log metrics admin tls
check 'openssl/' tls crypto
check 'yaml\.h' config config_yaml
check 'systemd/' daemon
# The pure modules: no coroutines, no loop, no await.
for pure in http1 headers balancer config route; do
    for f in "$src/$pure.c" "$src/$pure.h"; do
        [ -f "$f" ] || continue
        if grep -En '^[[:space:]]*#[[:space:]]*include[[:space:]]*"(coro|loop|io)\.h"' "$f"; then
            echo "check-includes: $f is a pure module and must not include the runtime" >&2
            status=1
        fi
    done
done
exit $status
