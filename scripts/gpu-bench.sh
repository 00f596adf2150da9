#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md, on a machine with an NVIDIA GPU and the binaries that
# scripts/package-gpu.sh put in gpu/. Writes each result to $OUT (default: gpu-results/).
#   bash scripts/gpu-bench.sh [parity] [bench] [kernels]      (default: all three)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
run() { bash gpu/gpu-run.sh "$@"; }
parts=${*:-parity bench kernels}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"
for part in $parts; do
  case $part in
    parity)
      # The reference fixture on CUDA: f32 must meet the CPU tolerances; bf16 reports its errors.
      HEARTSTREAM_TEST_DEVICE=cuda run gpu/reference_parity.xz --test-threads 1 > "$out/parity-f32.txt" 2>&1
      echo "parity f32 exit $?" >> "$out/summary.txt"
      HEARTSTREAM_TEST_DEVICE=cuda HEARTSTREAM_TEST_DTYPE=bf16 run gpu/reference_parity.xz \
        --test-threads 1 --nocapture > "$out/parity-bf16.txt" 2>&1
      echo "parity bf16 exit $?" >> "$out/summary.txt" ;;
    bench)
      # Full-size synthetic weights made on the GPU; 20 s of audio; three runs per setting.
      for steps in 10 5; do
        for i in 1 2 3; do
          run gpu/heartstream.xz bench --synthetic 3b --device cuda --max-seconds 20 \
            --ignore-eos --seed "$i" --flow-steps "$steps" >> "$out/bench-steps$steps.jsonl" \
            2>> "$out/bench-stderr.txt"
        done
      done
      # The LM never yielding to the codec (what the start-up yield buys).
      run gpu/heartstream.xz bench --synthetic 3b --device cuda --max-seconds 20 --ignore-eos \
        --seed 1 --lm-yield-lead 0 >> "$out/bench-noyield.jsonl" 2>> "$out/bench-stderr.txt"
      # The same without the CUDA graph, to show what capture saves.
      HEARTSTREAM_CUDA_GRAPH=0 run gpu/heartstream.xz bench --synthetic 3b --device cuda \
        --max-seconds 20 --ignore-eos --seed 1 >> "$out/bench-nograph.jsonl" 2>> "$out/bench-stderr.txt"
      # The LM alone (no codec on the GPU).
      run gpu/heartstream.xz codes --synthetic 3b --device cuda --max-seconds 20 --ignore-eos \
        --seed 1 --out /tmp/codes.json 2> "$out/codes.txt" ;;
    kernels)
      run gpu/lm_kernels.xz > "$out/kernels.txt" 2>&1 ;;
  esac
done
cat "$out"/summary.txt "$out"/*.jsonl "$out"/codes.txt 2>/dev/null
