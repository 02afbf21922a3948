#!/bin/sh
# Generates runtime/protocol from proto/*.proto with the betterproto2 compiler.
# OUT names the output folder (the package's protocol folder, or a scratch one for the check).
set -eu
OUT=${OUT:-runtime/protocol}
tmp=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$tmp" "$log"' EXIT
if ! python -m grpc_tools.protoc -I proto \
    --python_betterproto2_out="$tmp" \
    --python_betterproto2_opt=client_generation=async,server_generation=async \
    proto/*.proto 2>"$log"; then
    cat "$log" >&2
    exit 1
fi
rm -rf "$OUT"
mkdir -p "$OUT"
cp -r "$tmp"/. "$OUT"/
