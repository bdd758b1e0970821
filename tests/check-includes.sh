#!/bin/sh
# Each foreign library is included only by the modules that own it, and
# the pure modules (parsers, matching, choosing a server, the config) reach
# neither the runtime nor libevent, however many of Ferry's headers away.
# The ranks of the modules and the include cycles between them are
# tests/check-layers.py's; this keeps to foreign libraries and purity.
# Every module named here exists: a list of names that are not in src/
# fails, so the lists stay true.
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
            if [ $# -gt 0 ]; then
                echo "check-includes: $f includes $pattern, which only $* may include" >&2
            else
                echo "check-includes: $f includes $pattern, which no module may include yet" >&2
            fi
            status=1
        fi
    done
}

# Modules that own sockets, loops or libevent's buffers.
check 'event2/' loop io io_internal io_splice io_idle evmem upstream conn proxy reply request body tunnel listener daemon server main \
    log metrics admin worker \
    health resolve ratelimit_redis h1side
# OpenSSL: token and key verification (jwt, auth) and the TLS module.
check 'openssl/' jwt auth tls ratelimit_redis
check 'jansson\.h' jwt
check 'crypt\.h' auth auth_pool
check 'yaml\.h' config_yaml
check 'systemd/' daemon
check 'pcre2\.h' regex
check 'hiredis/' ratelimit_redis

# The pure modules: no coroutines, no loop, no await, no libevent, also not
# through a header they include (config.h -> http1.h -> ... is followed).
pure='http1 headers proxyproto balancer addrset route config config_* regex jwt auth ratelimit cors'
runtime='coro loop io io_internal io_splice io_idle evmem sys'

# Ferry headers that a file includes, one stem a line.
ferry_includes() {
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([A-Za-z0-9_]*\)\.h".*/\1/p' "$1"
}

for f in "$src"/*.c "$src"/*.h; do
    [ -f "$f" ] || continue
    base=$(basename "$f")
    base=${base%.*}
    is_pure=no
    for p in $pure; do
        # shellcheck disable=SC2254
        case $base in $p) is_pure=yes ;; esac
    done
    [ $is_pure = yes ] || continue
    # breadth-first over the headers it reaches
    todo="$f"
    seen=" "
    while [ -n "$todo" ]; do
        next=""
        for g in $todo; do
            if grep -Eq '^[[:space:]]*#[[:space:]]*include[[:space:]]*<event2/' "$g"; then
                echo "check-includes: $f is a pure module but reaches libevent through $g" >&2
                status=1
            fi
            for h in $(ferry_includes "$g"); do
                for r in $runtime; do
                    if [ "$h" = "$r" ]; then
                        echo "check-includes: $f is a pure module but reaches the runtime ($h.h) through $g" >&2
                        status=1
                    fi
                done
                case $seen in *" $h "*) continue ;; esac
                seen="$seen$h "
                [ -f "$src/$h.h" ] && next="$next $src/$h.h"
            done
        done
        todo=$next
    done
done

# Every module these lists name exists.
for m in loop io evmem upstream conn proxy reply request body tunnel listener daemon server main log \
    metrics admin worker config config_yaml daemon http1 headers proxyproto balancer route coro sys \
    ratelimit cors ratelimit_redis; do
    if [ ! -f "$src/$m.c" ] && [ ! -f "$src/$m.h" ]; then
        echo "check-includes: the lists name module $m, which src/ does not have" >&2
        status=1
    fi
done
exit $status
