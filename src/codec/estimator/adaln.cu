// The estimator blocks' chains of small ops, one kernel each (bf16 in and out, f32 inside,
// rounded once): RMSNorm with the adaLN modulation, the gated residual, and SwiGLU. Where
// candle ran 10, 2 and 3 kernels (each rounding to bf16), these run one.
// `m` is a block's modulation (rows of 6·dim: shift, scale, gate of attention and MLP), one
// row for the whole batch or one per batch row.
typedef unsigned short bf16_bits;

__device__ __forceinline__ float widen(bf16_bits h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// Round to nearest even; NaN stays NaN.
__device__ __forceinline__ bf16_bits narrow(float v) {
    unsigned int u = __float_as_uint(v);
    if (v != v) return (bf16_bits)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_bits)(u >> 16);
}

// The modulation row of activation row `row` (frames per batch row `frames`).
__device__ __forceinline__ const bf16_bits* modulation(const bf16_bits* m, long row, int frames,
                                                       int m_rows, int dim) {
    return m + (m_rows == 1 ? 0L : row / frames) * 6L * dim;
}

// out = (x · rsqrt(mean(x²) + eps) · weight) · (1 + scale) + shift, with shift and scale
// parts `part` and `part + 1` of the modulation. One block of 256 threads per row.
extern "C" __global__ void __launch_bounds__(256)
    rms_modulate_bf16(const bf16_bits* x, const bf16_bits* weight, const bf16_bits* m,
                      bf16_bits* out, int dim, int frames, int m_rows, int part, float eps) {
    __shared__ float partial[8];
    const long row = blockIdx.x;
    const bf16_bits* xr = x + row * dim;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float v = widen(xr[i]);
        sum += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / 32); ++w) total += partial[w];
    const float inv = rsqrtf(total / dim + eps);
    const bf16_bits* shift = modulation(m, row, frames, m_rows, dim) + (long)part * dim;
    const bf16_bits* scale = shift + dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float y = widen(xr[i]) * inv * widen(weight[i]);
        out[row * dim + i] = narrow(y * (1.0f + widen(scale[i])) + widen(shift[i]));
    }
}

#define GRID_STRIDE(i, total) \
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (long)gridDim.x * blockDim.x)

// out = x + h · gate, the gate being part `part` of the modulation.
extern "C" __global__ void gated_add_bf16(const bf16_bits* x, const bf16_bits* h,
                                          const bf16_bits* m, bf16_bits* out, long total,
                                          int dim, int frames, int m_rows, int part) {
    GRID_STRIDE(i, total) {
        const long row = i / dim;
        const int c = (int)(i % dim);
        const float gate = widen(modulation(m, row, frames, m_rows, dim)[(long)part * dim + c]);
        out[i] = narrow(widen(x[i]) + widen(h[i]) * gate);
    }
}

// out (rows, hidden) = silu(gate) · up, from the stacked projection (rows, 2·hidden).
extern "C" __global__ void swiglu_bf16(const bf16_bits* gate_up, bf16_bits* out, long total,
                                       int hidden) {
    GRID_STRIDE(i, total) {
        const long row = i / hidden;
        const int j = (int)(i % hidden);
        const float g = widen(gate_up[row * 2 * hidden + j]);
        const float u = widen(gate_up[row * 2 * hidden + hidden + j]);
        out[i] = narrow(g / (1.0f + expf(-g)) * u);
    }
}
