// The frame step's matrix products on tensor cores (sm_80 and later): y = x·Wᵀ (+ res) for
// M ≤ 4 rows of bf16 x. A block owns tiles of 16 output rows; its warps split K and each
// multiplies 16 weight rows (A of mma.m16n8k16) by x (B: 8 columns, the first M real, the rest
// zero), accumulating in f32; the warps' partial sums meet in shared memory.
//
// x is first staged in shared memory by the whole block — as the tiles read it, and
// normalised there when the product follows an RMSNorm; the gate/up product leaves as the
// SwiGLU of its two halves (the norm's and the SwiGLU's own kernels are then skipped).
//
// Why tensor cores for a product bound by reading W: the plain kernels spend ~40 (bf16) to
// ~90 (FP8) instructions per 16 bytes of W on unpacking, decoding and scalar FMAs, which is
// what keeps the FP8 one from the bandwidth it needs. Here 16 bytes of two rows feed two
// (bf16) or four (FP8) mma instructions, with no unpacking of W at all (bf16) or five integer
// operations per four codes (FP8).
//
// The input order inside an mma is free: a dot product does not care which k pairs with
// which, as long as A and B agree. So each thread multiplies whole 16-byte chunks of W as
// they lie in memory (no reordering of the weights at load): thread (g, t) of a warp
// (g = lane / 4, t = lane % 4) reads chunk t of a segment from rows g and g + 8, and takes
// from x the values those chunks' weights meet.

#define MMA_WARPS 8
#define MMA_ROWS 16

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3,
                                               u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_f16_16816(float (&d)[4], u32 a0, u32 a1, u32 a2, u32 a3,
                                              u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two f32 as an f16 pair (lo in the low half), clamped to f16's finite range: bf16 values in
// that range convert exactly (f16 has more mantissa bits), so only magnitudes beyond 65504 or
// below f16's normal range (~6e-5, negligible in a sum of thousands) change.
__device__ __forceinline__ u32 f16_pair(float lo, float hi) {
    lo = fminf(fmaxf(lo, -65504.f), 65504.f);
    hi = fminf(fmaxf(hi, -65504.f), 65504.f);
    u32 d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
}

// x as the products read it: the first M rows of K values, each optionally normalised as
// the step's RMSNorm does (x·γ / sqrt(mean(x²) + eps) in f32, rounded to bf16), so that the
// norm before q/k/v and gate/up costs no kernel of its own. `inv` holds each row's 1/rms.
struct StagedInput {
    const bf16_t* x;
    const bf16_t* gamma;  // null: no norm
    const float* inv;
    int K;
    // Inputs k..k + 7 of row m (k a multiple of 8), read 16 bytes at a time.
    __device__ __forceinline__ void chunk(int m, int k, float (&v)[8]) const {
        unpack(__ldg(reinterpret_cast<const uint4*>(x + (size_t)m * K + k)), v, bf16_t());
        if (gamma) {
            float g[8];
            unpack(__ldg(reinterpret_cast<const uint4*>(gamma + k)), g, bf16_t());
#pragma unroll
            for (int e = 0; e < 8; ++e) v[e] = rounded(v[e] * inv[m] * g[e]);
        }
    }
    __device__ __forceinline__ static float rounded(float v) {
        bf16_t r;
        store(&r, v);
        return to_f32(r);
    }
};

// Each row's 1/rms into inv[m] (when normalising), from the whole block.
__device__ void row_inverse_rms(const bf16_t* x, const bf16_t* gamma, float eps, int M, int K,
                                float* inv) {
    __shared__ float sums[MMA_WARPS][GEMV_MAX_M];
    if (!gamma) return;
    float ss[GEMV_MAX_M] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll 2
    for (int c = threadIdx.x; c < K / 8; c += blockDim.x) {
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; ++m) {
            if (m < M) {
                float v[8];
                unpack(__ldg(reinterpret_cast<const uint4*>(x + (size_t)m * K) + c), v, bf16_t());
#pragma unroll
                for (int e = 0; e < 8; ++e) ss[m] += v[e] * v[e];
            }
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; ++m) {
        float v = warp_sum(ss[m]);
        if (lane == 0) sums[warp][m] = v;
    }
    __syncthreads();
    if (threadIdx.x < GEMV_MAX_M) {
        float total = 0.f;
        for (int w = 0; w < MMA_WARPS; ++w) total += sums[w][threadIdx.x];
        inv[threadIdx.x] = rsqrtf(total / (float)K + eps);
    }
    __syncthreads();
}

// bf16 weights: a chunk is 8 weights, four bf16 pairs w0..w3, and feeds two mmas. In mma j
// the pair w[2j] stands at k = 2t, 2t + 1 and w[2j + 1] at 2t + 8, 2t + 9 — and x's pairs at
// the same offsets of the same chunk stand there in B, so x is staged as it lies in memory.
struct Bf16Tiles {
    static constexpr int VALS = 8;
    static constexpr int BYTES = 2;
    // A staged row of x: K bf16 and 64 bytes more, so that the two rows of x a quarter warp
    // reads (64 bytes each) fall in different banks.
    __device__ static int row_bytes(int K) { return K * 2 + 64; }  // BF16_STAGE_PAD
    // 8 staged inputs as they lie: four bf16 pairs.
    __device__ __forceinline__ static uint4 pack(const float (&v)[8]) {
        u32 p[4];
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            bf16_t lo, hi;
            store(&lo, v[2 * e]);
            store(&hi, v[2 * e + 1]);
            p[e] = (u32)lo | ((u32)hi << 16);
        }
        return make_uint4(p[0], p[1], p[2], p[3]);
    }
    __device__ __forceinline__ void multiply(uint4 lo, uint4 hi, const unsigned char* xs, int g,
                                             int M, int K, int c, float (&d)[4]) const {
        uint4 b = make_uint4(0, 0, 0, 0);
        if (g < M) b = reinterpret_cast<const uint4*>(xs + (size_t)g * row_bytes(K))[c];
        mma_bf16_16816(d, lo.x, hi.x, lo.y, hi.y, b.x, b.y);
        mma_bf16_16816(d, lo.z, hi.z, lo.w, hi.w, b.z, b.w);
    }
    __device__ __forceinline__ float scaled(float acc, int) const { return acc; }
};

// The 4 E4M3 codes of a word as two f16 pairs: (codes 0, 2) and (codes 1, 3). Each code's 7
// magnitude bits go where an f16 keeps exponent and mantissa (biases 7 and 15: the f16 is
// the code's value times 2⁻⁸, subnormal codes included), its sign to the sign bit.
__device__ __forceinline__ u32 e4m3_even_f16(u32 w) {
    return ((w & 0x007f007fu) << 7) | ((w & 0x00800080u) << 8);
}
__device__ __forceinline__ u32 e4m3_odd_f16(u32 w) {
    return ((w >> 1) & 0x3f803f80u) | (w & 0x80008000u);
}

// FP8 weights: a chunk is 16 codes, four words, and feeds four mmas. In mma j word j's codes
// (0, 2) stand at k = 2t, 2t + 1 and (1, 3) at 2t + 8, 2t + 9. x is staged as f16 pairs in
// that order: for each chunk, per word, the B pairs (x0, x2) and (x1, x3) side by side.
struct E4m3Tiles {
    static constexpr int VALS = 16;
    static constexpr int BYTES = 1;
    const float* scale;
    // A staged row: K/16 chunks of 4 words × 2 pairs, and 16 bytes more, so that the two rows
    // of x a quarter warp reads (16 of every 32 bytes) fall in different banks.
    __device__ static int row_bytes(int K) { return K * 2 + 16; }  // E4M3_STAGE_PAD
    // 8 staged inputs, which meet two words of codes: per word the pairs (x0, x2), (x1, x3).
    __device__ __forceinline__ static uint4 pack(const float (&v)[8]) {
        return make_uint4(f16_pair(v[0], v[2]), f16_pair(v[1], v[3]), f16_pair(v[4], v[6]),
                          f16_pair(v[5], v[7]));
    }
    __device__ __forceinline__ void multiply(uint4 lo, uint4 hi, const unsigned char* xs, int g,
                                             int M, int K, int c, float (&d)[4]) const {
        uint4 b01 = make_uint4(0, 0, 0, 0), b23 = b01;
        if (g < M) {
            const uint4* row = reinterpret_cast<const uint4*>(xs + (size_t)g * row_bytes(K));
            b01 = row[2 * c];
            b23 = row[2 * c + 1];
        }
        mma_f16_16816(d, e4m3_even_f16(lo.x), e4m3_even_f16(hi.x), e4m3_odd_f16(lo.x),
                      e4m3_odd_f16(hi.x), b01.x, b01.y);
        mma_f16_16816(d, e4m3_even_f16(lo.y), e4m3_even_f16(hi.y), e4m3_odd_f16(lo.y),
                      e4m3_odd_f16(hi.y), b01.z, b01.w);
        mma_f16_16816(d, e4m3_even_f16(lo.z), e4m3_even_f16(hi.z), e4m3_odd_f16(lo.z),
                      e4m3_odd_f16(hi.z), b23.x, b23.y);
        mma_f16_16816(d, e4m3_even_f16(lo.w), e4m3_even_f16(hi.w), e4m3_odd_f16(lo.w),
                      e4m3_odd_f16(hi.w), b23.z, b23.w);
    }
    // The codes decoded to value·2⁻⁸ (see e4m3_even_f16), then the row's scale.
    __device__ __forceinline__ float scaled(float acc, int n) const {
        return acc * 256.f * scale[n];
    }
};

// The first M rows of x into shared memory as Tiles reads them, 8 inputs (16 bytes of x)
// per thread and step, the loads of several steps in flight.
template <typename Tiles>
__device__ __forceinline__ void stage_x(StagedInput in, int M, unsigned char* xs) {
    int chunks = in.K / 8;
#pragma unroll 4
    for (int i = threadIdx.x; i < M * chunks; i += blockDim.x) {
        int m = i / chunks, c = i % chunks;
        float v[8];
        in.chunk(m, 8 * c, v);
        *reinterpret_cast<uint4*>(xs + (size_t)m * Tiles::row_bytes(in.K) + 16 * c) =
            Tiles::pack(v);
    }
}

// Where a q/k/v product's outputs go when RoPE and the KV-cache write are fused into it (as
// rope_kv in rope_kv.cu does them, on the outputs rounded to Y): q rotated into q [B, H, T, D],
// k rotated and v as it is into the caches at position pos[0] + t, for x row m = b·T + t.
// Rotated pairs are adjacent outputs (2i, 2i + 1) of a head, so both lie in one tile's 16
// rows; they meet in shared memory. So do the 16 values of an FP8 cache's group (KV_GROUP):
// a tile's rows are one group of one head, as D is a multiple of 16.
template <typename Y>
struct RopeOut {
    const float* cos;
    const float* sin;
    const u32* pos;
    Y* q;
    KvOut kv;
    int Tn, H, KV, D, CAP;
    // Where output n of x row m goes: its position and RoPE angle. Read before the tile's
    // product, so that these loads wait alongside the weights' instead of after the sums.
    struct At {
        u32 p;
        float c, s;
    };
    __device__ At at(int n, int m, bool live) const {
        At a{0, 1.f, 0.f};
        if (!live) return a;
        int head = n / D, d = n % D, half = D / 2;
        a.p = pos[0] + m % Tn;
        if (head < H + KV) {
            a.c = cos[(size_t)a.p * half + d / 2];
            a.s = sin[(size_t)a.p * half + d / 2];
        }
        return a;
    }
    // Called by every thread of the block for its tile of outputs n0..n0 + 15; `live` ones
    // hold output n of x row m (tile row r), which goes to `a`.
    __device__ void put(int n0, int r, int m, int n, float value, bool live, At a) const {
        static_assert(MMA_ROWS == KV_GROUP, "a tile's rows are one FP8 group");
        __shared__ float pair[MMA_ROWS][GEMV_MAX_M];
        bool slot = threadIdx.x < MMA_ROWS * GEMV_MAX_M;
        Y rounded;
        store(&rounded, value);
        float v = to_f32(rounded);
        if (slot) pair[r][m] = v;
        __syncthreads();
        int head = n / D, d = n % D, b = m / Tn, t = m % Tn;
        float rotated = v;
        if (live && head < H + KV) {
            float other = pair[r ^ 1][m];
            // Even d holds x0 of its pair, odd d x1.
            rotated = (d & 1) ? rotate_pair(other, v, a.c, a.s).y
                              : rotate_pair(v, other, a.c, a.s).x;
        }
        bool keys = head < H + KV;
        size_t row = ((size_t)b * KV + head - H - (keys ? 0 : KV)) * CAP + a.p;
        // An FP8 cache's tile holds one group of keys or values (D is a multiple of 16 then).
        if (kv.fp8() && n0 / D >= H) {
            Y stored;
            store(&stored, rotated);
            float x = to_f32(stored);
            __shared__ float magnitude[MMA_ROWS][GEMV_MAX_M];
            if (slot) magnitude[r][m] = live ? fabsf(x) : 0.f;
            __syncthreads();
            if (!live) return;
            float largest = 0.f;
#pragma unroll
            for (int i = 0; i < MMA_ROWS; ++i) largest = fmaxf(largest, magnitude[i][m]);
            u32 e = kv_exponent(largest);
            static_cast<unsigned char*>(keys ? kv.k : kv.v)[row * D + d] = kv_code(x, e);
            if (d % KV_GROUP == 0)
                (keys ? kv.k_exps : kv.v_exps)[row * (D / KV_GROUP) + d / KV_GROUP] =
                    (unsigned char)e;
            return;
        }
        if (!live) return;
        if (head < H) {
            store(q + (((size_t)b * H + head) * Tn + t) * D + d, rotated);
        } else {
            store(static_cast<Y*>(keys ? kv.k : kv.v) + row * D + d, rotated);
        }
    }
};

// Output 8·tile + r of x row m, from a tile of 8 gate and 8 up rows: every thread of the block
// calls it, the `live` ones with tile row r's value for x row m.
template <typename Y>
__device__ void put_swiglu(int tile, int r, int m, float value, bool live, Y* y, int half) {
    __shared__ float gate_up[MMA_ROWS][GEMV_MAX_M];
    Y rounded;
    store(&rounded, value);
    if (live) gate_up[r][m] = to_f32(rounded);
    __syncthreads();
    if (live && r < 8) {
        float gate = gate_up[r][m], up = gate_up[r + 8][m];
        store(y + (size_t)m * half + 8 * tile + r, gate / (1.f + __expf(-gate)) * up);
    }
}

// gamma: null, or the RMSNorm to apply to x first. swiglu: W is [gate; up] (N/2 rows each,
// N/2 a multiple of 8) and y gets silu(gate)·up, N/2 values a row of x (as the silu_mul
// kernel computes it from the two rounded halves), with no residual: a tile then holds 8
// gate rows and the 8 up rows they pair with, so the pairs meet in shared memory and the
// down projection reads its input as it is, instead of each of its blocks making it.
// UNROLL: segments of each warp's loads in flight before the first is used (the launcher
// picks it so that each warp's segments split into even rounds).
// ROPE: the outputs go through `rope` (y and res unused), else y = x·Wᵀ + res.
//
// The grid is at most what the GPU holds at once, and each block takes tiles of 16 output
// rows blockIdx.x, blockIdx.x + gridDim.x, …: x is staged (and normalised) once per block
// instead of once per tile, and each warp issues the next tile's first loads before its
// block sums the current tile, so no wave of blocks starts from nothing behind another.
template <int UNROLL, bool ROPE, typename Tiles, typename Y>
__device__ void gemv_mma(const bf16_t* x, const bf16_t* gamma, float eps, int swiglu,
                         const unsigned char* W, Tiles tiles, const Y* res, Y* y, int M, int N,
                         int K, RopeOut<Y> rope) {
#if __CUDA_ARCH__ >= 800
    extern __shared__ __align__(16) unsigned char xs[];
    // Two tiles' partial sums: a tile's are written while the previous one's are read.
    __shared__ float partial[2][MMA_WARPS][MMA_ROWS][GEMV_MAX_M];
    __shared__ float inv[GEMV_MAX_M];
    allow_dependents();
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int g = lane >> 2, t = lane & 3;
    int tile_count = (N + MMA_ROWS - 1) / MMA_ROWS;
    size_t row_bytes = (size_t)K * Tiles::BYTES;
    const uint4 *lo_row, *hi_row;
    // Weight row of tile row i (0..15).
    auto row_of = [&](int tile, int i) {
        if (swiglu) return (i < 8 ? 0 : N / 2 - 8) + 8 * tile + i;
        return tile * MMA_ROWS + i;
    };
    auto rows_of = [&](int tile) {
        size_t lo = min(row_of(tile, g), N - 1), hi = min(row_of(tile, g + 8), N - 1);
        lo_row = reinterpret_cast<const uint4*>(W + lo * row_bytes);
        hi_row = reinterpret_cast<const uint4*>(W + hi * row_bytes);
    };
    int chunks = K / Tiles::VALS;
    int segments = (chunks + 3) / 4;  // four chunks a segment, one per thread of a group
    uint4 lo[UNROLL], hi[UNROLL];
    // Loads of this warp's round of segments from s on (a chunk past K holds zeros).
    auto load = [&](int s) {
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            int c = (s + u * MMA_WARPS) * 4 + t;
            bool ok = c < chunks;
            lo[u] = ok ? load_stream(lo_row + c) : make_uint4(0, 0, 0, 0);
            hi[u] = ok ? load_stream(hi_row + c) : make_uint4(0, 0, 0, 0);
        }
    };
    // The first loads of W do not depend on the previous kernel: issue them before waiting.
    rows_of(blockIdx.x);
    load(warp);
    wait_for_producers();
    row_inverse_rms(x, gamma, eps, M, K, inv);
    stage_x<Tiles>(StagedInput{x, gamma, inv, K}, M, xs);
    __syncthreads();
    for (int tile = blockIdx.x, parity = 0; tile < tile_count; tile += gridDim.x, parity ^= 1) {
        // This thread's output in the tile's sums: tile row r for x row m.
        int r = threadIdx.x / GEMV_MAX_M, m = threadIdx.x % GEMV_MAX_M;
        typename RopeOut<Y>::At at{};
        if constexpr (ROPE) {
            int n = row_of(tile, r);
            at = rope.at(n, m, threadIdx.x < MMA_ROWS * GEMV_MAX_M && m < M && n < N);
        }
        float d[4] = {0.f, 0.f, 0.f, 0.f};
        for (int s = warp; s < segments; s += UNROLL * MMA_WARPS) {
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                int c = (s + u * MMA_WARPS) * 4 + t;
                // A chunk past K holds zeros, but x must not be read there either.
                tiles.multiply(lo[u], hi[u], xs, g, c < chunks ? M : 0, K, c, d);
            }
            int next = s + UNROLL * MMA_WARPS;
            if (next < segments) {
                load(next);
            } else if (tile + gridDim.x < tile_count) {
                rows_of(tile + gridDim.x);
                load(warp);
            }
        }
        // d: rows g and g + 8, columns 2t and 2t + 1 (columns are rows of x; only M ≤ 4
        // are real).
        if (2 * t < GEMV_MAX_M) {
            partial[parity][warp][g][2 * t] = d[0];
            partial[parity][warp][g][2 * t + 1] = d[1];
            partial[parity][warp][g + 8][2 * t] = d[2];
            partial[parity][warp][g + 8][2 * t + 1] = d[3];
        }
        __syncthreads();
        int n0 = tile * MMA_ROWS, n = row_of(tile, r);
        bool live = threadIdx.x < MMA_ROWS * GEMV_MAX_M && m < M && n < N;
        float value = 0.f;
        if (live) {
            float acc = 0.f;
#pragma unroll
            for (int w = 0; w < MMA_WARPS; ++w) acc += partial[parity][w][r][m];
            value = (res ? to_f32(res[(size_t)m * N + n]) : 0.f) + tiles.scaled(acc, n);
        }
        if constexpr (ROPE) {
            rope.put(n0, r, m, n, value, live, at);
        } else if (swiglu) {
            put_swiglu(tile, r, m, value, live, y, N / 2);
        } else if (live) {
            store(y + (size_t)m * N + n, value);
        }
    }
#else
    __trap();  // the launcher picks these kernels only on sm_80 and later
#endif
}

// What KIND (BF16 or E4M3) of weights an entry takes: their type, the arguments after W, and
// the Tiles value made of them.
#define W_T_BF16 bf16_t
#define W_ARGS_BF16
#define TILES_BF16 Bf16Tiles()
#define W_T_E4M3 unsigned char
#define W_ARGS_E4M3 const float *scale,
#define TILES_E4M3 E4m3Tiles{scale}

// NAME(...) with UNROLL segments a warp in flight. (A minimum of blocks per SM in the launch
// bounds, even 1, lets ptxas use more registers: 66 → 75 for UNROLL 4.)
#define GEMV_MMA_ENTRY(Y, NAME, UNROLL, KIND)                                                  \
    extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32)                               \
        NAME(const bf16_t* x, const bf16_t* gamma, float eps, int swiglu,                      \
             const W_T_##KIND* W, W_ARGS_##KIND const Y* res, Y* y, int M, int N, int K) {     \
        gemv_mma<UNROLL, false>(x, gamma, eps, swiglu,                                         \
                                reinterpret_cast<const unsigned char*>(W), TILES_##KIND, res,  \
                                y, M, N, K, RopeOut<Y>{});                                     \
    }

// The q/k/v product in bf16 with RoPE and the KV-cache write: NAME_rope(...) takes RopeOut's
// fields after the product's own, and writes no y.
#define GEMV_MMA_ROPE_ENTRY(NAME, UNROLL, KIND)                                                \
    extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32)                               \
        NAME##_rope(const bf16_t* x, const bf16_t* gamma, float eps, int swiglu,               \
                    const W_T_##KIND* W, W_ARGS_##KIND int M, int N, int K, const float* cos,  \
                    const float* sin, const u32* pos, bf16_t* q, void* k_cache, void* v_cache, \
                    unsigned char* k_exps, unsigned char* v_exps, int Tn, int H, int KV, int D,\
                    int CAP) {                                                                 \
        gemv_mma<UNROLL, true>(x, gamma, eps, swiglu,                                          \
                               reinterpret_cast<const unsigned char*>(W), TILES_##KIND,        \
                               (const bf16_t*)nullptr, (bf16_t*)nullptr, M, N, K,              \
                               RopeOut<bf16_t>{cos, sin, pos, q,                               \
                                               KvOut{k_cache, v_cache, k_exps, v_exps}, Tn, H, \
                                               KV, D, CAP});                                   \
    }

// Products to bf16 come with a RoPE twin.
#define GEMV_MMA_BF16_OUT_ENTRIES(NAME, UNROLL, KIND)                                          \
    GEMV_MMA_ENTRY(bf16_t, NAME, UNROLL, KIND)                                                 \
    GEMV_MMA_ROPE_ENTRY(NAME, UNROLL, KIND)

GEMV_MMA_BF16_OUT_ENTRIES(gemv_bf16_mma, 4, BF16)
GEMV_MMA_ENTRY(float, gemv_bf16_mma_to_f32, 4, BF16)
GEMV_MMA_BF16_OUT_ENTRIES(gemv_e4m3_mma, 4, E4M3)
GEMV_MMA_BF16_OUT_ENTRIES(gemv_e4m3_mma_u6, 6, E4M3)
GEMV_MMA_BF16_OUT_ENTRIES(gemv_e4m3_mma_u8, 8, E4M3)
GEMV_MMA_ENTRY(float, gemv_e4m3_mma_to_f32, 4, E4M3)
GEMV_MMA_ENTRY(float, gemv_e4m3_mma_to_f32_u6, 6, E4M3)
