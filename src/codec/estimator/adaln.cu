// The estimator blocks' chains of small ops, one kernel each (bf16 in and out, f32 inside,
// rounded once): RMSNorm with the adaLN modulation, the gated residual (alone and with the
// norm that reads it), and SwiGLU. Where candle ran 10, 2 and 3 kernels (each rounding to
// bf16), these run one.
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

// The norms take a block per row and a thread per 8 values (widths are multiples of 8, at
// most MAX_NORM_THREADS · 8, checked by the op): each thread's loads are in flight together
// and a row costs two memory round trips, however wide. Threads past the row's end only join
// the reduction.
#define MAX_NORM_THREADS 512

// The sum over the block of each thread's `v`, in a fixed order (warps, then their sums):
// every kernel that reduces a row this way gets the same bits.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[MAX_NORM_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, warps = blockDim.x / 32;
    if (threadIdx.x % 32 == 0) partial[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; ++w) total += partial[w];
    return total;
}

// The RMSNorm and modulation of a row, this thread's eight `x` (when `active`) written to
// `out` + its offset: out = (x · rsqrt(mean(x²) + eps) · weight) · (1 + scale) + shift,
// scale following shift.
__device__ __forceinline__ void rms_modulate_eight(const Eight& x, bool active, int dim,
                                                   const bf16_bits* weight,
                                                   const bf16_bits* shift, bf16_bits* out,
                                                   float eps) {
    const int c = 8 * threadIdx.x;
    float squares = 0.0f;
    Eight w, sh, sc;
    if (active) {
#pragma unroll
        for (int i = 0; i < 8; ++i) squares += x.v[i] * x.v[i];
        // Loaded before the reduction: their round trip overlaps it.
        w = load8(weight + c);
        sh = load8(shift + c);
        sc = load8(shift + dim + c);
    }
    const float inv = rsqrtf(block_sum(squares) / dim + eps);
    if (!active) return;
    Eight y;
#pragma unroll
    for (int i = 0; i < 8; ++i) y.v[i] = x.v[i] * inv * w.v[i] * (1.0f + sc.v[i]) + sh.v[i];
    store8(out + c, y);
}

// The gated residual x + h · gate before rounding: one expression for both kernels that
// make it, so that they contract it into the same multiply-add.
__device__ __forceinline__ float gated(float x, float h, float gate) { return x + h * gate; }

// RMSNorm with the modulation's shift and scale, parts `part` and `part + 1`.
extern "C" __global__ void __launch_bounds__(MAX_NORM_THREADS)
    rms_modulate_bf16(const bf16_bits* x, const bf16_bits* weight, const bf16_bits* m,
                      bf16_bits* out, int rows, int dim, int frames, int m_rows, int part,
                      float eps) {
    const int row = blockIdx.x;
    const bool active = 8 * threadIdx.x < dim;
    const long at = (long)row * dim;
    Eight xs;
    if (active) xs = load8(x + at + 8 * threadIdx.x);
    const bf16_bits* shift = modulation(m, row, frames, m_rows, dim) + (long)part * dim;
    rms_modulate_eight(xs, active, dim, weight, shift, out + at, eps);
}

// The gated residual and the norm that reads it, in one pass: sum = x + h · gate (part
// `gate_part` of `m`), rounded as gated_add stores it, into out's first `rows` rows; its
// RMSNorm with the shift and scale of `m_norm` (parts `norm_part`, `norm_part + 1`) into the
// next `rows`. The values are rms_modulate's of gated_add's, bit for bit.
extern "C" __global__ void __launch_bounds__(MAX_NORM_THREADS)
    gated_add_rms_modulate_bf16(const bf16_bits* x, const bf16_bits* h, const bf16_bits* m,
                                const bf16_bits* weight, const bf16_bits* m_norm,
                                bf16_bits* out, int rows, int dim, int frames, int m_rows,
                                int gate_part, int norm_part, float eps) {
    const int row = blockIdx.x, c = 8 * threadIdx.x;
    const bool active = c < dim;
    const long at = (long)row * dim;
    Eight sum;
    if (active) {
        const bf16_bits* gate = modulation(m, row, frames, m_rows, dim) + (long)gate_part * dim;
        const Eight a = load8(x + at + c), b = load8(h + at + c), g = load8(gate + c);
#pragma unroll
        for (int i = 0; i < 8; ++i) sum.v[i] = round_bf16(gated(a.v[i], b.v[i], g.v[i]));
        store8(out + at + c, sum);
    }
    const bf16_bits* shift =
        modulation(m_norm, row, frames, m_rows, dim) + (long)norm_part * dim;
    rms_modulate_eight(sum, active, dim, weight, shift, out + (long)rows * dim + at, eps);
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
        for (int k = 0; k < 8; ++k) y.v[k] = gated(a.v[k], b.v[k], gate.v[k]);
        store8(out + 8L * i, y);
    }
}

// out (rows, hidden) = silu(gate) · up, from the stacked projection (rows, 2·hidden); a
// thread per 8 values. The exponential and the division are the hardware's approximations
// (a few f32 ulps, far inside the bf16 rounding that follows): exact ones took as long as
// the kernel's memory traffic. Where exp(-gate) overflows, the quotient is 0, silu's limit.
extern "C" __global__ void swiglu_bf16(const bf16_bits* gate_up, bf16_bits* out, int eights,
                                       int hidden) {
    const int row_eights = hidden / 8;
    GRID_STRIDE(i, eights) {
        const int row = i / row_eights, j = (i - row * row_eights) * 8;
        const bf16_bits* in = gate_up + (long)row * 2 * hidden + j;
        const Eight g = load8(in), u = load8(in + hidden);
        Eight y;
#pragma unroll
        for (int k = 0; k < 8; ++k) y.v[k] = __fdividef(g.v[k], 1.0f + __expf(-g.v[k])) * u.v[k];
        store8(out + 8L * i, y);
    }
}
