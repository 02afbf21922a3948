#!/bin/sh
# Fails when the committed generated code differs from what proto/ generates now.
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
OUT="$tmp/protocol" sh scripts/gen_proto.sh
if ! diff -r -x __pycache__ "$tmp/protocol" runtime/protocol >/dev/null; then
    echo "runtime/protocol is stale: run 'make proto' and commit the result" >&2
    diff -r -x __pycache__ "$tmp/protocol" runtime/protocol | head -20 >&2
    exit 1
fi
echo "generated protocol code is up to date"
