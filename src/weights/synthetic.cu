// Synthetic weights on the GPU: element i of a tensor is
//   center + half_width · (2·u − 1),  u = (splitmix64(key + i) >> 40) / 2²⁴,
// with the same single roundings as the host's Rust (no fused multiply-add), so the values are
// bit-identical to `synthetic.rs`'s; bf16 targets are rounded to nearest even, as half does.
// Compiled after `src/hash.cuh` (splitmix64).

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short bf16_t;

__device__ __forceinline__ float draw(u64 key, u64 i, float center, float half_width) {
    float u = __fmul_rn(__ull2float_rn(splitmix64(key + i) >> 40), 1.0f / 16777216.0f);
    return __fadd_rn(center, __fmul_rn(half_width, __fsub_rn(__fmul_rn(2.0f, u), 1.0f)));
}

__device__ __forceinline__ bf16_t to_bf16(float v) {
    u32 u = __float_as_uint(v);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

extern "C" __global__ void synthetic_f32(float* out, u64 n, u64 key, float center,
                                         float half_width) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x)
        out[i] = draw(key, i, center, half_width);
}

extern "C" __global__ void synthetic_bf16(bf16_t* out, u64 n, u64 key, float center,
                                          float half_width) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x)
        out[i] = to_bf16(draw(key, i, center, half_width));
}
