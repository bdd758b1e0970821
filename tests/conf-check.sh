#!/bin/sh
# The shipped conf/ferry.yaml must pass `ferry -t` without a warning, and
# -t must fail with positioned errors on a broken file.
: "${FERRY_BIN:?}" "${FERRY_SRCDIR:?}"
conf="$FERRY_SRCDIR/conf/ferry.yaml"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

if ! "$FERRY_BIN" -t -c "$conf" >"$tmp/out" 2>"$tmp/err"; then
    echo "conf-check: ferry -t rejected $conf:" >&2
    cat "$tmp/err" >&2
    exit 1
fi
if [ -s "$tmp/err" ]; then
    echo "conf-check: ferry -t printed diagnostics for $conf:" >&2
    cat "$tmp/err" >&2
    exit 1
fi
grep -Eq "^ferry: .*/conf/ferry.yaml: ok: 1 listener, 2 routes, 1 upstream$" "$tmp/out" || {
    echo "conf-check: unexpected summary:" >&2
    cat "$tmp/out" >&2
    exit 1
}

# A typo: exit 1 and FILE:LINE:COLUMN: PATH: message with a suggestion.
sed 's/^  client_idle:/  client_idel:/' "$conf" >"$tmp/bad.yaml"
if "$FERRY_BIN" -t -c "$tmp/bad.yaml" >/dev/null 2>"$tmp/err"; then
    echo "conf-check: ferry -t accepted a misspelt key" >&2
    exit 1
fi
grep -Eq '^.*/bad\.yaml:[0-9]+:3: timeouts\.client_idel: unknown key "client_idel" \(did you mean "client_idle"\?\)$' "$tmp/err" || {
    echo "conf-check: unexpected error output:" >&2
    cat "$tmp/err" >&2
    exit 1
}

# The CLI: -V, -h, a bad option (exit 2), a missing file (exit 1).
"$FERRY_BIN" -V | grep -Eq '^ferry [0-9]' || { echo "conf-check: -V" >&2; exit 1; }
"$FERRY_BIN" -h | grep -q 'Exit status' || { echo "conf-check: -h" >&2; exit 1; }
"$FERRY_BIN" --bogus >/dev/null 2>&1
[ $? -eq 2 ] || { echo "conf-check: a bad option must exit 2" >&2; exit 1; }
"$FERRY_BIN" -t -c "$tmp/missing.yaml" >/dev/null 2>&1
[ $? -eq 1 ] || { echo "conf-check: a missing file must exit 1" >&2; exit 1; }
exit 0
