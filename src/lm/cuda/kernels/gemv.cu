// The matrix products of the frame step: a few rows (M ≤ 4: batch × positions) against a
// Linear weight W [N, K], bound by reading W once. One warp per output column n streams its
// row of W in batches of 8 sixteen-byte loads per lane, all issued before any is used, with
// f32 accumulation. The input row can be transformed on the fly, which fuses away kernels:
//   PLAIN  x[m, k]
//   NORM   x[m, k]·γ[k], the result scaled by rsqrt(mean_k x[m, k]² + eps)   (RMSNorm)
//   GATED  silu(x[m, k])·x[m, K + k] from the fused gate/up output        (SwiGLU)
// and a residual added: y = res + x·Wᵀ.

#define GEMV_PLAIN 0
#define GEMV_NORM 1
#define GEMV_GATED 2
#define GEMV_MAX_ROWS 4
#define GEMV_BATCH 8

template <typename T, int MODE>
__device__ __forceinline__ void gemv_input(const T* x, const T* gamma, int m, int K, int c,
                                           float* out, float& sumsq) {
    constexpr int VEC = 16 / sizeof(T);
    if (MODE == GEMV_GATED) {
        const uint4* row = reinterpret_cast<const uint4*>(x + (size_t)m * 2 * K);
        float g[VEC], u[VEC];
        unpack(__ldg(row + c), g, T());
        unpack(__ldg(row + K / VEC + c), u, T());
#pragma unroll
        for (int e = 0; e < VEC; ++e) out[e] = g[e] / (1.f + __expf(-g[e])) * u[e];
    } else {
        unpack(__ldg(reinterpret_cast<const uint4*>(x + (size_t)m * K) + c), out, T());
        if (MODE == GEMV_NORM) {
            float s[VEC];
            unpack(__ldg(reinterpret_cast<const uint4*>(gamma) + c), s, T());
#pragma unroll
            for (int e = 0; e < VEC; ++e) {
                sumsq += out[e] * out[e];
                out[e] *= s[e];
            }
        }
    }
}

template <typename T, typename Y, int MODE>
__device__ void gemv(const T* x, const T* W, const T* gamma, float eps, const Y* res, Y* y,
                     int M, int N, int K) {
    constexpr int VEC = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (n >= N) return;
    const uint4* w = reinterpret_cast<const uint4*>(W + (size_t)n * K);
    int chunks = K / VEC;
    float acc[GEMV_MAX_ROWS] = {0.f, 0.f, 0.f, 0.f};
    float sumsq[GEMV_MAX_ROWS] = {0.f, 0.f, 0.f, 0.f};
    for (int base = lane; base < chunks; base += 32 * GEMV_BATCH) {
        uint4 raw[GEMV_BATCH];
#pragma unroll
        for (int i = 0; i < GEMV_BATCH; ++i) {
            int c = base + 32 * i;
            if (c < chunks) raw[i] = load_stream(w + c);
        }
#pragma unroll
        for (int i = 0; i < GEMV_BATCH; ++i) {
            int c = base + 32 * i;
            if (c >= chunks) break;
            float wv[VEC], xv[VEC];
            unpack(raw[i], wv, T());
#pragma unroll
            for (int m = 0; m < GEMV_MAX_ROWS; ++m) {
                if (m < M) {
                    gemv_input<T, MODE>(x, gamma, m, K, c, xv, sumsq[m]);
#pragma unroll
                    for (int e = 0; e < VEC; ++e) acc[m] += wv[e] * xv[e];
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < GEMV_MAX_ROWS; ++m) {
        if (m < M) {
            acc[m] = warp_sum(acc[m]);
            if (MODE == GEMV_NORM) acc[m] *= rsqrtf(warp_sum(sumsq[m]) / (float)K + eps);
        }
    }
    if (lane == 0) {
        for (int m = 0; m < M; ++m) {
            float r = res ? to_f32(res[(size_t)m * N + n]) : 0.f;
            store(y + (size_t)m * N + n, r + acc[m]);
        }
    }
}

#define GEMV_ENTRY(T, Y, MODE, NAME)                                                         \
    extern "C" __global__ void NAME(const T* x, const T* W, const T* gamma, float eps,       \
                                    const Y* res, Y* y, int M, int N, int K) {               \
        gemv<T, Y, MODE>(x, W, gamma, eps, res, y, M, N, K);                                 \
    }

GEMV_ENTRY(float, float, GEMV_PLAIN, gemv_f32)
GEMV_ENTRY(float, float, GEMV_NORM, gemv_norm_f32)
GEMV_ENTRY(float, float, GEMV_GATED, gemv_gated_f32)
GEMV_ENTRY(bf16_t, bf16_t, GEMV_PLAIN, gemv_bf16)
GEMV_ENTRY(bf16_t, bf16_t, GEMV_NORM, gemv_norm_bf16)
GEMV_ENTRY(bf16_t, bf16_t, GEMV_GATED, gemv_gated_bf16)
GEMV_ENTRY(bf16_t, float, GEMV_PLAIN, gemv_bf16_to_f32)
