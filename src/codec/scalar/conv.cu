// The ScalarModel's streaming convolutions on CUDA, around cuBLAS products (ops.rs):
// the column matrix of a conv read straight from its history and the new frames, the
// epilogue (bias, PReLU, residual) in one pass, and the transposed conv's overlap-add.
// Arithmetic is in f32 with explicitly rounded operations (no contraction into fused
// multiply-adds), in the reference's order, so the f32 path rounds like the unfused ops.
// bf16 as its bits (NVRTC has no include path for cuda_bf16.h): widening is exact, and
// narrowing rounds to nearest even, as half's `bf16::from_f32` does (NaN stays NaN).
typedef unsigned short bf16_bits;

__device__ __forceinline__ float load_f(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float load_f(const bf16_bits* p, long i) {
    return __uint_as_float(((unsigned int)p[i]) << 16);
}
__device__ __forceinline__ void store_f(float* p, long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f(bf16_bits* p, long i, float v) {
    unsigned int u = __float_as_uint(v);
    if (v != v) { p[i] = (bf16_bits)((u >> 16) | 0x40u); return; }
    u += 0x7fffu + ((u >> 16) & 1u);
    p[i] = (bf16_bits)(u >> 16);
}

#define GRID_STRIDE(i, total) \
    for (long i = (long)blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += (long)gridDim.x * blockDim.x)

// col (batch, channels·k, n): col[b][c·k + j][t] = frames[b][c][t + j·dilation], where the
// frames are history (batch, channels, span) followed by x (batch, channels, n).
template <typename T>
__device__ void im2col_stream(const T* history, const T* x, T* col, long total, int channels,
                              int span, int n, int k, int dilation) {
    GRID_STRIDE(i, total) {
        const int t = (int)(i % n);
        const long row = i / n;
        const int j = (int)(row % k);
        const long bc = row / k;  // b·channels + c
        const int f = t + j * dilation;
        col[i] = f < span ? history[bc * span + f] : x[bc * n + (f - span)];
    }
}

// out = prelu(y + bias[c]) (+ residual), y and out (batch, channels, n); slope 1 is no
// activation. y + bias is rounded first, as when the conv adds its bias.
template <typename T>
__device__ void bias_act(const T* y, const T* bias, const T* residual, T* out, long total,
                         int channels, int n, float slope) {
    GRID_STRIDE(i, total) {
        const int c = (int)((i / n) % channels);
        float v = __fadd_rn(load_f(y, i), load_f(bias, c));
        if (!(v > 0.0f)) v = __fmul_rn(slope, v);
        if (residual) v = __fadd_rn(v, load_f(residual, i));
        store_f(out, i, v);
    }
}

// The causal ConvTranspose1d (kernel 2·stride) from every frame's full response
// r (batch, channels·2·stride, n + 1), frame 0 being the previous chunk's last:
// out[b][o][t·s + q] = (r[b][o·2s + q][t + 1] + r[b][o·2s + s + q][t]) + bias[o].
template <typename T>
__device__ void overlap_add(const T* r, const T* bias, T* out, long total, int channels,
                            int n, int stride) {
    GRID_STRIDE(i, total) {
        const int s = stride;
        const int sample = (int)(i % ((long)n * s));
        const long bo = i / ((long)n * s);  // b·channels + o
        const int o = (int)(bo % channels);
        const int t = sample / s, q = sample % s;
        const long rows = bo * 2 * s;  // row o·2s of batch b
        const float own = load_f(r, (rows + q) * (n + 1) + t + 1);
        const float carried = load_f(r, (rows + s + q) * (n + 1) + t);
        store_f(out, i, __fadd_rn(__fadd_rn(own, carried), load_f(bias, o)));
    }
}

#define SCALAR_KERNELS(T, NAME)                                                                   \
    extern "C" __global__ void im2col_stream_##NAME(const T* history, const T* x, T* col,        \
                                                    long total, int channels, int span, int n,   \
                                                    int k, int dilation) {                       \
        im2col_stream(history, x, col, total, channels, span, n, k, dilation);                    \
    }                                                                                             \
    extern "C" __global__ void bias_act_##NAME(const T* y, const T* bias, const T* residual,     \
                                               T* out, long total, int channels, int n,          \
                                               float slope) {                                    \
        bias_act(y, bias, residual, out, total, channels, n, slope);                              \
    }                                                                                             \
    extern "C" __global__ void overlap_add_##NAME(const T* r, const T* bias, T* out, long total, \
                                                  int channels, int n, int stride) {             \
        overlap_add(r, bias, out, total, channels, n, stride);                                    \
    }

SCALAR_KERNELS(float, f32)
SCALAR_KERNELS(bf16_bits, bf16)
