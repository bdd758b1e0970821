#!/bin/sh
# A test of tests/check-includes.sh: on a copy of src/ with one planted
# violation at a time it must fail (and say why); on the copy untouched it
# must pass.
: "${FERRY_SRCDIR:=$(cd "$(dirname "$0")/.." && pwd)}"
checker="$FERRY_SRCDIR/tests/check-includes.sh"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
status=0

# plant NAME EXPECT COMMAND...: copy src/, run COMMAND in the copy, run the
# checker; EXPECT is "pass" or a string its stderr must contain.
plant() {
    name=$1
    expect=$2
    shift 2
    rm -rf "$tmp/src"
    cp -R "$FERRY_SRCDIR/src" "$tmp/src"
    (cd "$tmp/src" && "$@") || {
        echo "check-includes-test: $name: could not plant" >&2
        status=1
        return
    }
    if FERRY_SRCDIR="$tmp" sh "$checker" >"$tmp/out" 2>"$tmp/err"; then
        got=pass
    else
        got=fail
    fi
    if [ "$expect" = pass ]; then
        [ $got = pass ] && echo "ok: $name passes" && return
        echo "check-includes-test: $name: the checker failed:" >&2
    else
        [ $got = fail ] && grep -qF -- "$expect" "$tmp/err" && echo "ok: $name fails" && return
        echo "check-includes-test: $name: want a failure saying \"$expect\", got $got:" >&2
    fi
    cat "$tmp/err" >&2
    status=1
}

append() {
    printf '\n%s\n' "$2" >>"$1"
}

plant "the tree untouched" pass true
plant "a pure module reaching libevent through a header (route.h -> io_internal.h)" \
    "route.h is a pure module but reaches libevent" append route.h '#include "io_internal.h"'
plant "a pure module including the runtime (http1.c -> loop.h)" \
    "http1.c is a pure module but reaches the runtime (loop.h)" append http1.c '#include "loop.h"'
plant "a pure module reaching the runtime two headers away (balancer.c -> route.h -> tunnel.h -> io.h)" \
    "balancer.c is a pure module but reaches" sh -c \
    "printf '\n#include \"route.h\"\n' >>balancer.c && printf '\n#include \"tunnel.h\"\n' >>route.h && printf '\n#include \"io.h\"\n' >>tunnel.h"
plant "openssl outside its module" "includes openssl/, which only jwt auth tls ratelimit_redis may include" \
    append proxy.c '#include <openssl/ssl.h>'
plant "yaml.h outside the config module" "includes yaml\\.h, which only config_yaml may include" \
    append route.c '#include <yaml.h>'
plant "libevent in a module that owns none" "includes event2/, which only" \
    append balancer.c '#include <event2/buffer.h>'
plant "a listed module gone" "the lists name module tunnel, which src/ does not have" rm tunnel.c tunnel.h
exit $status
