#!/usr/bin/env bash
# The GPU measurements of BENCHMARKS.md, on a machine with an NVIDIA GPU and the binaries that
# scripts/package-gpu.sh put in gpu/. Writes each result to $OUT (default: gpu-results/).
#   bash scripts/gpu-bench.sh [parity] [codec] [windows] [bench] [variants] [tuning] [long] [decode]
#                             [kernels] [fp8] [kv] [memory] [load] [profile] [f32decoder] [frame]
#                             [frameprofile]
# (default: parity codec bench long decode)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
export LD_LIBRARY_PATH=$PWD/gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The LM kernels' disk cache lives with the results' machine, not in the repository.
export HEARTSTREAM_CACHE_DIR=${HEARTSTREAM_CACHE_DIR:-/tmp/heartstream-cache}
# Each program run is bounded, so that a hung kernel costs one part, not the whole lease.
run() { timeout "${GPU_BENCH_TIMEOUT:-400}" bash gpu/gpu-run.sh "$@"; }
song() {  # song NAME SECONDS SEED [ARGS...]: one bench run appended to $out/NAME.jsonl
  local name=$1 seconds=$2 seed=$3; shift 3
  run gpu/heartstream.xz bench --synthetic 3b --device cuda --max-seconds "$seconds" \
    --ignore-eos --seed "$seed" "$@" >> "$out/$name.jsonl" 2>> "$out/bench-stderr.txt"
  echo "$name seed $seed exit $?" >> "$out/summary.txt"
}
unpack_bin() {  # unpack_bin NAME: gpu/NAME.xz to /tmp/gpu-run-bin/NAME, for tools that start it
  mkdir -p /tmp/gpu-run-bin
  python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
    "gpu/$1.xz" "/tmp/gpu-run-bin/$1" && chmod +x "/tmp/gpu-run-bin/$1"
}
ncu_path() { command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1; }
parts=${*:-parity codec bench long decode}
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
    codec)
      # Window shapes eager vs captured; ScalarModel steps eager vs captured, f32/TF32/bf16.
      run gpu/codec.xz > "$out/codec.txt" 2>&1
      echo "codec bench exit $?" >> "$out/summary.txt" ;;
    windows)
      # The captured window shapes alone, 10 steps, twice (to compare kernels quickly).
      for rep in 1 2; do run gpu/codec.xz windows >> "$out/windows.txt" 2>&1; done
      echo "windows exit $?" >> "$out/summary.txt" ;;
    bench)
      # 20 s songs, full-size random weights made on the GPU; three seeds per setting.
      for seed in 1 2 3; do song bench-steps10 20 "$seed"; done
      for seed in 1 2 3; do song bench-steps5 20 "$seed" --flow-steps 5; done ;;
    variants)
      # What each piece buys: flow or decoder graphs off, normal codec priority, no LM yield
      # or the LM yielding only while the listener's lead is under 4 s, bf16 decoder.
      HEARTSTREAM_FLOW_GRAPH=0 song variant-noflowgraph 20 1
      HEARTSTREAM_DECODER_GRAPH=0 song variant-nodecodergraph 20 1
      HEARTSTREAM_DECODER_GRAPH=0 song variant-nodecodergraph-180s 180 1
      song variant-normalpriority 20 1 --codec-normal-priority
      song variant-noyield 20 1 --lm-yield-lead 0
      song variant-noyield-normalpriority 20 1 --lm-yield-lead 0 --codec-normal-priority
      song variant-yield4-180s 180 1 --lm-yield-lead 4
      song variant-decoder-bf16 20 1 --decoder-dtype bf16 ;;
    tuning)
      # The decoder's step size (25: FP8's, against bf16's default of 50) and the first
      # window's size.
      song variant-decode-chunk25 20 1 --decode-chunk-latents 25
      song variant-decode-chunk25-180s 180 1 --decode-chunk-latents 25
      song variant-first-window-0.32 20 1 --first-window 0.32 ;;
    long)
      # A 3-minute song.
      song long-180s 180 1 ;;
    decode)
      # The codec alone on 180 s of codes (2,250 frames), as the stream decodes them: the
      # default decoder (TF32 products), then f32 and bf16.
      python3 -c 'import json,random; r=random.Random(7); print(json.dumps({"frames":[[r.randrange(8192) for _ in range(8)] for _ in range(2250)]}))' > /tmp/codes-180s.json
      run gpu/heartstream.xz decode --synthetic 3b --device cuda --codes /tmp/codes-180s.json \
        --join streaming --out /tmp/decoded.wav > "$out/decode.txt" 2>&1
      echo "decode exit $?" >> "$out/summary.txt"
      for dtype in f32 bf16; do
        run gpu/heartstream.xz decode --synthetic 3b --device cuda --codes /tmp/codes-180s.json \
          --join streaming --decoder-dtype "$dtype" --out /tmp/decoded.wav >> "$out/decode.txt" 2>&1
        echo "decode $dtype exit $?" >> "$out/summary.txt"
      done ;;
    f32decoder)
      # The decoder's products in f32 (the reference's; TF32 is the default on a GPU):
      # 20 s songs (seeds 1-3), 3 minutes.
      for seed in 1 2 3; do song f32decoder-20s 20 "$seed" --decoder-dtype f32; done
      song f32decoder-180s 180 1 --decoder-dtype f32 ;;
    kernels)
      run gpu/lm_kernels.xz > "$out/kernels.txt" 2>&1 ;;
    frame)
      # The LM frame step alone (no codec): 500 frames in bf16 and in FP8, then 3,000 (a
      # 4-minute song's cache, where attention grows).
      run gpu/lm_frame.xz --frames 500 > "$out/frame.txt" 2>&1
      echo "frame exit $?" >> "$out/summary.txt"
      run gpu/lm_frame.xz --frames 3000 > "$out/frame3000.txt" 2>&1
      echo "frame 3000 exit $?" >> "$out/summary.txt" ;;
    frameprofile)
      # GPU time of each kernel of one captured frame (Nsight Compute, clocks left alone, caches
      # not flushed between kernels, as in the graph), and of the frame's whole graph, bf16 then
      # FP8.
      unpack_bin lm_frame
      for precision in bf16 fp8; do
        for mode in node graph; do
          HEARTSTREAM_PROFILE_FRAME=20 run "$(ncu_path)" --profile-from-start off \
            --clock-control none --cache-control none --graph-profiling "$mode" \
            --metrics gpu__time_duration.sum \
            --csv --page raw /tmp/gpu-run-bin/lm_frame "$precision" --frames 24 \
            > "$out/frameprofile-$precision-$mode.csv" 2>&1
          echo "frameprofile $precision $mode exit $?" >> "$out/summary.txt"
        done
      done ;;
    profile)
      # GPU time per kernel (Nsight Compute, clocks left alone) of `codec profile`: one eager
      # Euler step of a 744-latent window and two eager 25-latent decoder steps.
      # Then the same for the smallest window (16 latents), whose step is bound by latency.
      unpack_bin codec
      run "$(ncu_path)" --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        /tmp/gpu-run-bin/codec profile > "$out/profile.txt" 2>&1
      echo "profile exit $?" >> "$out/summary.txt"
      run "$(ncu_path)" --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
        /tmp/gpu-run-bin/codec profile 16 > "$out/profile-16.txt" 2>&1
      echo "profile 16 exit $?" >> "$out/summary.txt" ;;
    fp8)
      # FP8 LM matrices: c0 logits against dense on the same frames; 20 s songs against bf16
      # (the same seeds as bench), the flow blocks in FP8 too (auto), then in bf16.
      run gpu/fp8_accuracy.xz 3b 100 > "$out/fp8-accuracy.txt" 2>&1
      echo "fp8 accuracy exit $?" >> "$out/summary.txt"
      for seed in 1 2 3; do song fp8-20s 20 "$seed" --lm-precision fp8; done
      song fp8-20s-flow-bf16 20 1 --lm-precision fp8 --flow-precision bf16 ;;
    kv)
      # The FP8 KV cache: c0 logits against dense (the cache alone, then with FP8 matrices),
      # and the LM frame alone over a 4-minute song's cache, FP8 against bf16 keys and values.
      for parts in kv both; do
        run gpu/fp8_accuracy.xz 3b 100 "$parts" >> "$out/kv-accuracy.txt" 2>&1
        echo "kv accuracy $parts exit $?" >> "$out/summary.txt"
      done
      for kv in bf16 fp8; do
        run gpu/lm_frame.xz fp8 --frames 3000 --kv "$kv" >> "$out/kv-frame.txt" 2>&1
        echo "kv frame $kv exit $?" >> "$out/summary.txt"
      done ;;
    memory)
      # Where a 4-minute song's GPU memory goes: FP8 LM matrices (and so FP8 flow blocks and KV
      # cache), the same with a bf16 KV cache, FP8 LM with bf16 flow blocks, bf16. The JSON's
      # load.gpu_memory (after each step of start-up) and peak_gpu (with CUDA's pools).
      song memory-fp8-240s 240 1 --lm-precision fp8
      song memory-fp8-kv-bf16-240s 240 1 --lm-precision fp8 --kv-precision bf16
      song memory-fp8-flow-bf16-240s 240 1 --lm-precision fp8 --flow-precision bf16
      song memory-bf16-240s 240 1 --lm-precision bf16 ;;
    load)
      # The official layout at full size (random fp32, sharded): the first read, then from the
      # page cache, for bf16 and fp8 matrices; load_ms, load.* and peak_rss_mib in the JSON.
      python3 scripts/write-full-checkpoint.py /tmp/ckpt-full > "$out/write-checkpoint.txt" 2>&1
      sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
      for precision in bf16 bf16 fp8 fp8; do
        run gpu/heartstream.xz bench --model /tmp/ckpt-full --device cuda --max-seconds 2 \
          --ignore-eos --seed 1 --lm-precision "$precision" >> "$out/load.jsonl" 2>> "$out/bench-stderr.txt"
        echo "load $precision exit $?" >> "$out/summary.txt"
      done
      rm -rf /tmp/ckpt-full ;;
  esac
done
cat "$out"/summary.txt
