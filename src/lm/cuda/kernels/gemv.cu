// The matrix products of the frame step: a few rows (M ≤ 4: batch × positions) against a
// Linear weight W [N, K], bound by reading W once: y[m, n] = Σ_k x[m, k]·W[n, k] (+ res[m, n]).
// Each warp computes ROWS output columns; every lane issues BATCH sixteen-byte loads of each
// of its rows before using any, so many loads are in flight per warp. f32 accumulation.

#define GEMV_MAX_M 4

template <typename T, typename Y, int ROWS, int BATCH>
__device__ void gemv(const T* x, const T* W, const Y* res, Y* y, int M, int N, int K) {
    constexpr int VEC = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int n0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * ROWS;
    if (n0 >= N) return;
    int chunks = K / VEC;
    float acc[ROWS][GEMV_MAX_M];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m) acc[r][m] = 0.f;
    for (int base = lane; base < chunks; base += 32 * BATCH) {
        uint4 raw[ROWS][BATCH];
#pragma unroll
        for (int i = 0; i < BATCH; ++i) {
            int c = base + 32 * i;
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                if (c < chunks && n0 + r < N)
                    raw[r][i] = load_stream(reinterpret_cast<const uint4*>(W + (size_t)(n0 + r) * K) + c);
            }
        }
#pragma unroll
        for (int i = 0; i < BATCH; ++i) {
            int c = base + 32 * i;
            if (c >= chunks) break;
#pragma unroll
            for (int m = 0; m < GEMV_MAX_M; ++m) {
                if (m >= M) break;
                float xv[VEC];
                unpack(__ldg(reinterpret_cast<const uint4*>(x + (size_t)m * K) + c), xv, T());
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    float wv[VEC];
                    unpack(raw[r][i], wv, T());
#pragma unroll
                    for (int e = 0; e < VEC; ++e) acc[r][m] += wv[e] * xv[e];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m) {
            if (m < M) acc[r][m] = warp_sum(acc[r][m]);
        }
    }
    if (lane < ROWS && n0 + lane < N) {
        int n = n0 + lane;
        for (int m = 0; m < M; ++m) {
            float v = 0.f;
#pragma unroll
            for (int r = 0; r < ROWS; ++r) v = r == lane ? acc[r][m] : v;
            float base_value = res ? to_f32(res[(size_t)m * N + n]) : 0.f;
            store(y + (size_t)m * N + n, base_value + v);
        }
    }
}

#define GEMV_ENTRY(T, Y, ROWS, BATCH, NAME)                                                  \
    extern "C" __global__ void NAME(const T* x, const T* W, const Y* res, Y* y, int M,       \
                                    int N, int K) {                                          \
        gemv<T, Y, ROWS, BATCH>(x, W, res, y, M, N, K);                                      \
    }

GEMV_ENTRY(float, float, 1, 8, gemv_f32)
GEMV_ENTRY(bf16_t, bf16_t, 1, 8, gemv_bf16)
GEMV_ENTRY(bf16_t, float, 1, 8, gemv_bf16_to_f32)
// Candidate shapes of the bf16 product, compared by `benches/lm_kernels.rs`.
GEMV_ENTRY(bf16_t, bf16_t, 1, 16, gemv_bf16_r1_b16)
GEMV_ENTRY(bf16_t, bf16_t, 2, 8, gemv_bf16_r2_b8)
GEMV_ENTRY(bf16_t, bf16_t, 4, 4, gemv_bf16_r4_b4)
