// The matrix products of the frame step: a few rows (M ≤ 4: batch × positions) against a
// Linear weight W [N, K], bound by reading W once: y[m, n] = Σ_k x[m, k]·W[n, k] (+ res[m, n]).
// 16-byte loads of W that skip L1, f32 accumulation.
//
// In the batched form each warp computes ROWS output columns and every lane issues BATCH loads
// of each of its rows before using any, so many loads are in flight per warp.

#define GEMV_MAX_M 4

template <typename T, typename Y, int ROWS, int BATCH>
__device__ void gemv(const T* x, const T* W, const Y* res, Y* y, int M, int N, int K) {
    constexpr int VEC = 16 / sizeof(T);
    allow_dependents();
    wait_for_producers();
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

// acc[r][m] += W chunk c of row r · x[m] chunk c, for the R rows of a warp and the M rows of
// x: each x chunk is read once for all R rows.
template <typename T, int VEC, int R>
__device__ __forceinline__ void accumulate_chunk(const uint4 (&w)[R], const T* x, int K, int M,
                                                 int c, float (&acc)[R][GEMV_MAX_M]) {
    float wv[R][VEC], xv[VEC];
#pragma unroll
    for (int r = 0; r < R; ++r) unpack(w[r], wv[r], T());
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m < M) {
            unpack(__ldg(reinterpret_cast<const uint4*>(x + (size_t)m * K) + c), xv, T());
#pragma unroll
            for (int r = 0; r < R; ++r)
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[r][m] += wv[r][e] * xv[e];
        }
    }
}

// How a matrix's rows are stored, for the plain form below: dense rows of T, VEC weights per
// 16-byte chunk and no scale.
template <typename T>
struct DenseRows {
    static constexpr int VEC = 16 / sizeof(T);
    static constexpr int BYTES = sizeof(T);
    template <int R>
    __device__ __forceinline__ void accumulate(const uint4 (&w)[R], const T* x, int K, int M,
                                               int c, float (&acc)[R][GEMV_MAX_M]) const {
        accumulate_chunk<T, VEC, R>(w, x, K, M, c, acc);
    }
    __device__ __forceinline__ float scaled(float acc, int) const { return acc; }
};

// The plain form: R output columns per warp, the compiler left to pipeline the loads; the
// first loads of W are issued before waiting for the previous kernel (see common.cuh).
template <typename T, typename Y, typename Rows, int R = 1>
__device__ void gemv_rows(const T* x, const void* W, Rows rows, const Y* res, Y* y, int M, int N,
                          int K) {
    constexpr int EARLY = 4;  // loads of W issued before waiting for x
    allow_dependents();
    int lane = threadIdx.x & 31;
    int n0 = (blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)) * R;
    const uint4* w[R];
#pragma unroll
    for (int r = 0; r < R; ++r)
        w[r] = reinterpret_cast<const uint4*>(reinterpret_cast<const unsigned char*>(W) +
                                              (size_t)min(n0 + r, N - 1) * K * Rows::BYTES);
    int chunks = K / Rows::VEC;
    uint4 early[EARLY][R];
#pragma unroll
    for (int i = 0; i < EARLY; ++i) {
        int c = lane + 32 * i;
#pragma unroll
        for (int r = 0; r < R; ++r)
            if (c < chunks) early[i][r] = load_stream(w[r] + c);
    }
    wait_for_producers();
    if (n0 >= N) return;
    float acc[R][GEMV_MAX_M];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m) acc[r][m] = 0.f;
#pragma unroll
    for (int i = 0; i < EARLY; ++i) {
        int c = lane + 32 * i;
        if (c >= chunks) break;
        rows.template accumulate<R>(early[i], x, K, M, c, acc);
    }
#pragma unroll 4
    for (int c = lane + 32 * EARLY; c < chunks; c += 32) {
        uint4 chunk[R];
#pragma unroll
        for (int r = 0; r < R; ++r) chunk[r] = load_stream(w[r] + c);
        rows.template accumulate<R>(chunk, x, K, M, c, acc);
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m) acc[r][m] = warp_sum(acc[r][m]);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            int n = n0 + r;
            if (n >= N) break;
            for (int m = 0; m < M; ++m) {
                float base_value = res ? to_f32(res[(size_t)m * N + n]) : 0.f;
                store(y + (size_t)m * N + n, base_value + rows.scaled(acc[r][m], n));
            }
        }
    }
}

#define GEMV_SIMPLE_ENTRY(T, Y, NAME)                                                        \
    extern "C" __global__ void NAME(const T* x, const T* W, const Y* res, Y* y, int M,       \
                                    int N, int K) {                                          \
        gemv_rows<T, Y>(x, W, DenseRows<T>(), res, y, M, N, K);                             \
    }

#define GEMV_ENTRY(T, Y, ROWS, BATCH, NAME)                                                  \
    extern "C" __global__ void NAME(const T* x, const T* W, const Y* res, Y* y, int M,       \
                                    int N, int K) {                                          \
        gemv<T, Y, ROWS, BATCH>(x, W, res, y, M, N, K);                                      \
    }

GEMV_SIMPLE_ENTRY(float, float, gemv_f32)
GEMV_SIMPLE_ENTRY(bf16_t, bf16_t, gemv_bf16)
GEMV_SIMPLE_ENTRY(bf16_t, float, gemv_bf16_to_f32)
// Candidate shapes of the bf16 product, compared by `benches/lm_kernels.rs`.
GEMV_ENTRY(bf16_t, bf16_t, 1, 8, gemv_bf16_r1_b8)
GEMV_ENTRY(bf16_t, bf16_t, 1, 16, gemv_bf16_r1_b16)
GEMV_ENTRY(bf16_t, bf16_t, 4, 4, gemv_bf16_r4_b4)

// FP8 weights (E4M3 codes, one f32 scale per output row): 16 codes per 16-byte load, half the
// bytes of bf16. A code is decoded in registers with integer operations only (no conversion
// instruction, whose throughput would bound the kernel): its 7 magnitude bits go where a bf16
// keeps exponent and mantissa, its sign to the sign bit, and the bf16 becomes an f32 by a
// shift. The result is the E4M3 value times 2⁻¹²⁰ (the exponent biases differ by 120;
// subnormal codes land on f32 subnormals, which the FMA keeps: no flush to zero here), and
// 2¹²⁰ is applied to the row's sum with its scale. NaN codes (0x7f, 0xff) never occur:
// quantisation saturates. Works on every architecture.
__device__ __forceinline__ void unpack_e4m3(uint4 raw, float* out) {
    e4m3_bits4(raw.x, out);
    e4m3_bits4(raw.y, out + 4);
    e4m3_bits4(raw.z, out + 8);
    e4m3_bits4(raw.w, out + 12);
}

// acc[r][m] += 16 codes of chunk c of row r · the matching 16 values of x[m] (f32 or bf16).
template <typename T, int R>
__device__ __forceinline__ void accumulate_e4m3(const uint4 (&w)[R], const T* x, int K, int M,
                                                int c, float (&acc)[R][GEMV_MAX_M]) {
    constexpr int XV = 16 / sizeof(T);  // x values per 16-byte load
    float wv[R][16], xv[XV];
#pragma unroll
    for (int r = 0; r < R; ++r) unpack_e4m3(w[r], wv[r]);
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        if (m < M) {
            const uint4* xp = reinterpret_cast<const uint4*>(x + (size_t)m * K) + c * (16 / XV);
#pragma unroll
            for (int j = 0; j < 16 / XV; ++j) {
                unpack(__ldg(xp + j), xv, T());
#pragma unroll
                for (int r = 0; r < R; ++r)
#pragma unroll
                    for (int e = 0; e < XV; ++e) acc[r][m] += wv[r][j * XV + e] * xv[e];
            }
        }
    }
}

// FP8 rows: 16 codes per chunk, a scale per row, and E4M3's 2¹²⁰ (see unpack_e4m3) applied
// before the scale so that no product of the two can overflow.
template <typename T>
struct E4m3Rows {
    static constexpr int VEC = 16;
    static constexpr int BYTES = 1;
    const float* scale;
    template <int R>
    __device__ __forceinline__ void accumulate(const uint4 (&w)[R], const T* x, int K, int M,
                                               int c, float (&acc)[R][GEMV_MAX_M]) const {
        accumulate_e4m3<T, R>(w, x, K, M, c, acc);
    }
    __device__ __forceinline__ float scaled(float acc, int n) const {
        return (acc * 0x1p120f) * scale[n];
    }
};

#define GEMV_E4M3_ENTRY(T, Y, R, NAME)                                                       \
    extern "C" __global__ void NAME(const T* x, const unsigned char* W, const float* scale,  \
                                    const Y* res, Y* y, int M, int N, int K) {               \
        gemv_rows<T, Y, E4m3Rows<T>, R>(x, W, E4m3Rows<T>{scale}, res, y, M, N, K);          \
    }

GEMV_E4M3_ENTRY(float, float, 1, gemv_e4m3_f32)
GEMV_E4M3_ENTRY(bf16_t, bf16_t, 1, gemv_e4m3_bf16)
GEMV_E4M3_ENTRY(bf16_t, float, 1, gemv_e4m3_bf16_to_f32)
// Candidate shapes of the FP8 product (output columns per warp), compared by
// `benches/lm_kernels.rs`.
GEMV_E4M3_ENTRY(bf16_t, bf16_t, 2, gemv_e4m3_bf16_r2)
GEMV_E4M3_ENTRY(bf16_t, bf16_t, 4, gemv_e4m3_bf16_r4)
