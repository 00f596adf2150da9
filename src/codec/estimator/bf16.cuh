// bf16 as its bits for the estimator's kernels (NVRTC has no include path for cuda_bf16.h):
// widening is exact, narrowing rounds to nearest even in one instruction, as half's
// `bf16::from_f32` does (a NaN stays a NaN; only its payload may differ).
typedef unsigned short bf16_bits;

__device__ __forceinline__ float widen(bf16_bits h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

__device__ __forceinline__ bf16_bits narrow(float v) {
    bf16_bits r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(v));
    return r;
}

// Two values rounded into one word, `lo` in its low half.
// `v` rounded to bf16 and back.
__device__ __forceinline__ float round_bf16(float v) { return widen(narrow(v)); }

__device__ __forceinline__ unsigned int pack(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

#define NEG_INF __int_as_float(0xff800000)  // NVRTC has no math.h INFINITY
