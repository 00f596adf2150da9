#!/usr/bin/env bash
# Builds the CUDA binaries here (no GPU needed) and packs them into gpu/ for a GPU machine:
#   scripts/package-gpu.sh            -> gpu/heartstream.xz, gpu/reference_parity.xz, gpu/gpu-run.sh
# On the GPU machine:  bash gpu/gpu-run.sh gpu/heartstream.xz bench --device cuda ...
# Needs the CUDA compiler of ../shared/cuda (setup.sh once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${HEARTSTREAM_SHARED:-../shared}
"$shared/cuda/setup.sh" >/dev/null
# shellcheck disable=SC1091
source "$shared/cuda/env.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda}
cargo build --release --features cuda
executable() {  # executable NAME CARGO-ARGS...: the binary cargo builds for target NAME
  local name=$1 bin; shift
  bin=$(cargo "$@" --features cuda --no-run --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$name" | tail -1)
  [ -n "$bin" ] || { echo "cargo $* built no executable $name" >&2; exit 1; }
  echo "$bin"
}
test_bin=$(executable reference_parity test --release --test reference_parity)
bench_bin=$(executable lm_kernels bench --bench lm_kernels)
codec_bin=$(executable codec bench --bench codec)
fp8_bin=$(executable fp8_accuracy bench --bench fp8_accuracy)
frame_bin=$(executable lm_frame bench --bench lm_frame)
mkdir -p gpu
for pair in "$CARGO_TARGET_DIR/release/heartstream:heartstream" "$test_bin:reference_parity" \
            "$bench_bin:lm_kernels" "$codec_bin:codec" "$fp8_bin:fp8_accuracy" \
            "$frame_bin:lm_frame"; do
  src=${pair%%:*}; name=${pair##*:}
  strip -o "gpu/$name" "$src"
  xz -T2 -6 -f "gpu/$name"
done
cp "$shared/cuda/gpu-run.sh" gpu/
# cpal links ALSA; GPU machines may lack it (run with LD_LIBRARY_PATH=gpu/lib, as gpu-bench.sh does).
mkdir -p gpu/lib
cp -L "$(ldconfig -p | sed -n 's/.*libasound.so.2 .*=> //p' | head -1)" gpu/lib/libasound.so.2
ls -la gpu
