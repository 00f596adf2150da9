// FP8 quantisation on the GPU, one block per row: the row's largest magnitude, its scale
// (largest / 448) and each value's E4M3 code, with the host's single roundings (IEEE division,
// no fused multiply-add) and float8's conversion (round to nearest even, saturating at 448),
// so the codes and scales are the bytes `fp8.rs` writes. Compiled after `e4m3.cuh` (the
// conversion itself).

#define QUANTIZE_THREADS 256

extern "C" __global__ void quantize_e4m3_rows(const float* values, unsigned char* codes,
                                              float* scales, int cols) {
    __shared__ float partial[QUANTIZE_THREADS / 32];
    const float* row = values + (size_t)blockIdx.x * cols;
    unsigned char* out = codes + (size_t)blockIdx.x * cols;
    float m = 0.f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) m = fmaxf(m, fabsf(row[i]));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = m;
    __syncthreads();
    m = 0.f;
    for (int w = 0; w < (int)(blockDim.x >> 5); ++w) m = fmaxf(m, partial[w]);
    float scale = m > 0.f ? __fdiv_rn(m, 448.f) : 1.f;
    float inverse = __fdiv_rn(1.f, scale);
    for (int i = threadIdx.x; i < cols; i += blockDim.x) out[i] = e4m3_code(__fmul_rn(row[i], inverse));
    if (threadIdx.x == 0) scales[blockIdx.x] = scale;
}

// The matrix decoded, out[r, c] = scale[r] · e4m3(code[r, c]), rounded once in f32 and then
// to the output type, as the host's table lookup, multiply and conversion do (e4m3_bits times
// 2¹²⁰ is the code's value, exactly).
__device__ __forceinline__ float e4m3_value(u32 code) {
    return __fmul_rn(e4m3_bits(code), 0x1p120f);
}

__device__ __forceinline__ void store_value(float* out, float v) { *out = v; }
__device__ __forceinline__ void store_value(bf16_t* out, float v) { *out = to_bf16(v); }

template <typename T>
__device__ void dequantize_e4m3(const unsigned char* codes, const float* scales, T* out, u64 n,
                                u64 cols) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x)
        store_value(out + i, __fmul_rn(e4m3_value(codes[i]), scales[i / cols]));
}

// The same, sixteen codes a thread (one 16-byte load, 16-byte stores), for rows of a multiple
// of 16 codes: the flow-matching blocks decode every matrix at every Euler step
// (`--flow-precision fp8`), so this pass must run at memory speed. n / 16 < 2³².
__device__ __forceinline__ void store16(float* out, const float* v) {
    uint4* o = reinterpret_cast<uint4*>(out);
#pragma unroll
    for (int q = 0; q < 4; ++q)
        o[q] = make_uint4(__float_as_uint(v[4 * q]), __float_as_uint(v[4 * q + 1]),
                          __float_as_uint(v[4 * q + 2]), __float_as_uint(v[4 * q + 3]));
}

__device__ __forceinline__ void store16(bf16_t* out, const float* v) {
    u32 w[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) w[i] = (u32)to_bf16(v[2 * i]) | ((u32)to_bf16(v[2 * i + 1]) << 16);
    uint4* o = reinterpret_cast<uint4*>(out);
    o[0] = make_uint4(w[0], w[1], w[2], w[3]);
    o[1] = make_uint4(w[4], w[5], w[6], w[7]);
}

template <typename T>
__device__ void dequantize_e4m3_x16(const uint4* codes, const float* scales, T* out, u32 groups,
                                    u32 groups_per_row) {
    for (u32 g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += gridDim.x * blockDim.x) {
        uint4 c = codes[g];
        u32 words[4] = {c.x, c.y, c.z, c.w};
        float scale = scales[g / groups_per_row];
        float v[16];
#pragma unroll
        for (int e = 0; e < 16; ++e)
            v[e] = __fmul_rn(e4m3_value((words[e >> 2] >> (8 * (e & 3))) & 0xffu), scale);
        store16(out + (size_t)g * 16, v);
    }
}

extern "C" __global__ void dequantize_e4m3_bf16_x16(const uint4* codes, const float* scales,
                                                    bf16_t* out, u32 groups, u32 groups_per_row) {
    dequantize_e4m3_x16(codes, scales, out, groups, groups_per_row);
}

extern "C" __global__ void dequantize_e4m3_f32_x16(const uint4* codes, const float* scales,
                                                   float* out, u32 groups, u32 groups_per_row) {
    dequantize_e4m3_x16(codes, scales, out, groups, groups_per_row);
}

extern "C" __global__ void dequantize_e4m3_f32(const unsigned char* codes, const float* scales,
                                               float* out, u64 n, u64 cols) {
    dequantize_e4m3(codes, scales, out, n, cols);
}

extern "C" __global__ void dequantize_e4m3_bf16(const unsigned char* codes, const float* scales,
                                                bf16_t* out, u64 n, u64 cols) {
    dequantize_e4m3(codes, scales, out, n, cols);
}
