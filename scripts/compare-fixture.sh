#!/usr/bin/env bash
# The compare-windows figures of docs/codec-streaming.md: the reference fixture's codec laid
# out as ckpt/HeartCodec-oss, 400 codes drawn from a seeded generator (32 s), seed 0.
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=${HEARTSTREAM_FIXTURE:-tests/fixtures/reference-tiny}
ckpt=$(mktemp -d)
trap 'rm -rf "$ckpt"' EXIT
mkdir -p "$ckpt/HeartCodec-oss"
cp "$fixture"/heartcodec/* "$ckpt/HeartCodec-oss/"
awk 'BEGIN { s = 7; printf "{\"frames\": ["
  for (f = 0; f < 400; f++) { printf "%s[", (f ? "," : "")
    for (q = 0; q < 8; q++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%s%d", (q ? "," : ""), int(s / 65536) % 512 }
    printf "]" }
  print "]}" }' > "$ckpt/codes.json"
cargo run --release --quiet -- compare-windows --model "$ckpt" --codes "$ckpt/codes.json" --seed 0 "$@"
