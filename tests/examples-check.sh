#!/bin/sh
# Every configuration in conf/examples/ must pass `ferry -t` without a
# diagnostic. Files they name under /etc/ferry/ (keys) are taken from
# conf/examples/ itself, as its comments tell an operator to install them.
: "${FERRY_BIN:?}" "${FERRY_SRCDIR:?}"
dir="$FERRY_SRCDIR/conf/examples"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

n=0
fail=0
for conf in "$dir"/*.yaml; do
    name=$(basename "$conf")
    sed "s|/etc/ferry/|$dir/|g" "$conf" >"$tmp/$name"
    if ! "$FERRY_BIN" -t -c "$tmp/$name" >"$tmp/out" 2>"$tmp/err"; then
        echo "examples-check: ferry -t rejected conf/examples/$name:" >&2
        cat "$tmp/err" >&2
        fail=1
    elif [ -s "$tmp/err" ]; then
        echo "examples-check: ferry -t printed diagnostics for conf/examples/$name:" >&2
        cat "$tmp/err" >&2
        fail=1
    fi
    n=$((n + 1))
done
# The four setups the README names; a lost file must not pass unnoticed.
for name in api-gateway canary websocket socket-activated; do
    [ -f "$dir/$name.yaml" ] || { echo "examples-check: conf/examples/$name.yaml is missing" >&2; fail=1; }
done
# Socket units name the same addresses as the listeners they serve (ferry
# matches an inherited socket to an equal listen address only): the shipped
# ferry.socket and conf/ferry.yaml, the socket-activated example's
# ListenStream= lines and its listen:.
listens() { sed -n 's/^  - address: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$1" | sort; }
streams() { sed -n "s/^$2ListenStream=\(..*\)$/\1/p" "$1" | sort; }
[ -n "$(listens "$dir/socket-activated.yaml")" ] || { echo "examples-check: no listen address found" >&2; fail=1; }
if [ "$(listens "$FERRY_SRCDIR/conf/ferry.yaml")" != "$(streams "$FERRY_SRCDIR/systemd/ferry.socket" "")" ]; then
    echo "examples-check: systemd/ferry.socket's ListenStream= differ from conf/ferry.yaml's listen addresses" >&2
    fail=1
fi
if [ "$(listens "$dir/socket-activated.yaml")" != "$(streams "$dir/socket-activated.yaml" "#   ")" ]; then
    echo "examples-check: socket-activated.yaml's ListenStream= lines differ from its listen addresses" >&2
    fail=1
fi
[ "$fail" -eq 0 ] && echo "examples-check: $n examples pass ferry -t"
exit "$fail"
