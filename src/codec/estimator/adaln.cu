// The estimator blocks' chains of small ops, one kernel each (bf16 in and out, f32 inside,
// rounded once): RMSNorm with the adaLN modulation, the gated residual, and SwiGLU. Where
// candle ran 10, 2 and 3 kernels (each rounding to bf16), these run one.
// `m` is a block's modulation (rows of 6·dim: shift, scale, gate of attention and MLP), one
// row for the whole batch or one per batch row. (bf16.cuh comes first.)

// The modulation row of activation row `row` (frames per batch row `frames`).
__device__ __forceinline__ const bf16_bits* modulation(const bf16_bits* m, int row, int frames,
                                                       int m_rows, int dim) {
    return m + (m_rows == 1 ? 0L : (long)(row / frames)) * 6L * dim;
}

// Eight bf16 values (one 16-byte load) as f32, and back.
struct Eight {
    float v[8];
};

__device__ __forceinline__ Eight load8(const bf16_bits* p) {
    const uint4 w = *(const uint4*)p;
    const unsigned int words[4] = {w.x, w.y, w.z, w.w};
    Eight e;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        e.v[2 * i] = __uint_as_float(words[i] << 16);
        e.v[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
    }
    return e;
}

__device__ __forceinline__ void store8(bf16_bits* p, const Eight& e) {
    unsigned int words[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) words[i] = pack(e.v[2 * i], e.v[2 * i + 1]);
    *(uint4*)p = make_uint4(words[0], words[1], words[2], words[3]);
}

// Widths are multiples of 8 and rows at most MAX_EIGHTS_PER_LANE · 256 values (checked by
// the op), so a warp holds its row in registers: x is read once.
#define MAX_EIGHTS_PER_LANE 16

// out = (x · rsqrt(mean(x²) + eps) · weight) · (1 + scale) + shift, with shift and scale
// parts `part` and `part + 1` of the modulation. A warp per row, 4 rows per block.
extern "C" __global__ void __launch_bounds__(128)
    rms_modulate_bf16(const bf16_bits* x, const bf16_bits* weight, const bf16_bits* m,
                      bf16_bits* out, int rows, int dim, int frames, int m_rows, int part,
                      float eps) {
    const int row = blockIdx.x * 4 + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= rows) return;
    const int eights = dim / 8;
    const bf16_bits* xr = x + (long)row * dim;
    Eight xs[MAX_EIGHTS_PER_LANE];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < MAX_EIGHTS_PER_LANE; ++k) {
        const int j = lane + 32 * k;
        if (j < eights) {
            xs[k] = load8(xr + 8 * j);
#pragma unroll
            for (int i = 0; i < 8; ++i) sum += xs[k].v[i] * xs[k].v[i];
        }
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = rsqrtf(sum / dim + eps);
    const bf16_bits* shift = modulation(m, row, frames, m_rows, dim) + (long)part * dim;
    const bf16_bits* scale = shift + dim;
#pragma unroll
    for (int k = 0; k < MAX_EIGHTS_PER_LANE; ++k) {
        const int j = lane + 32 * k;
        if (j < eights) {
            const Eight w = load8(weight + 8 * j), sh = load8(shift + 8 * j), sc = load8(scale + 8 * j);
            Eight y;
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                y.v[i] = xs[k].v[i] * inv * w.v[i] * (1.0f + sc.v[i]) + sh.v[i];
            }
            store8(out + (long)row * dim + 8 * j, y);
        }
    }
}

#define GRID_STRIDE(i, total) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += gridDim.x * blockDim.x)

// out = x + h · gate, the gate being part `part` of the modulation; a thread per 8 values.
extern "C" __global__ void gated_add_bf16(const bf16_bits* x, const bf16_bits* h,
                                          const bf16_bits* m, bf16_bits* out, int eights,
                                          int dim, int frames, int m_rows, int part) {
    const int row_eights = dim / 8;
    GRID_STRIDE(i, eights) {
        const int row = i / row_eights, c = (i - row * row_eights) * 8;
        const Eight gate = load8(modulation(m, row, frames, m_rows, dim) + (long)part * dim + c);
        const Eight a = load8(x + 8L * i), b = load8(h + 8L * i);
        Eight y;
#pragma unroll
        for (int k = 0; k < 8; ++k) y.v[k] = a.v[k] + b.v[k] * gate.v[k];
        store8(out + 8L * i, y);
    }
}

// out (rows, hidden) = silu(gate) · up, from the stacked projection (rows, 2·hidden); a
// thread per 8 values.
extern "C" __global__ void swiglu_bf16(const bf16_bits* gate_up, bf16_bits* out, int eights,
                                       int hidden) {
    const int row_eights = hidden / 8;
    GRID_STRIDE(i, eights) {
        const int row = i / row_eights, j = (i - row * row_eights) * 8;
        const bf16_bits* in = gate_up + (long)row * 2 * hidden + j;
        const Eight g = load8(in), u = load8(in + hidden);
        Eight y;
#pragma unroll
        for (int k = 0; k < 8; ++k) y.v[k] = g.v[k] / (1.0f + expf(-g.v[k])) * u.v[k];
        store8(out + 8L * i, y);
    }
}
