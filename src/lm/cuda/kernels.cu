// Fused kernels of the LM frame step. Compiled at load time with NVRTC (no CUDA headers: bf16
// is handled as raw 16-bit values), instantiated for f32 and bf16. Every position or counter
// is read from device memory, so a captured CUDA graph replays correctly at every frame.

typedef unsigned short bf16_t;
typedef unsigned int u32;
typedef unsigned long long u64;

#define INF __int_as_float(0x7f800000)

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16_t x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(bf16_t* p, float v) {
    u32 u = __float_as_uint(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) { *p = 0x7fc0; return; }  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                // round to nearest even
    *p = (bf16_t)(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Reduces one value per thread across the block (blockDim.x a multiple of 32, ≤ 1024).
template <bool IS_MAX>
__device__ float block_reduce(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = IS_MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : (IS_MAX ? -INF : 0.f);
    r = IS_MAX ? warp_max(r) : warp_sum(r);
    return r;  // valid in every thread of warp 0 and, after the shuffles, in all warps
}

// qkv: [B*T, (H + 2*KV) * D] from the fused projection. Rotates q and k (adjacent pairs, f32
// math, as torchtune does), writes q to q_out [B, H, T, D] and k, v into the caches
// [B, KV, CAP, D] at positions pos[0] + t. Grid (B*T, H + KV), block D/2.
template <typename T>
__device__ void rope_kv(const T* qkv, const float* cos_t, const float* sin_t, const u32* pos,
                        T* q_out, T* k_cache, T* v_cache, int B, int Tn, int H, int KV, int D, int CAP) {
    int bt = blockIdx.x, b = bt / Tn, t = bt % Tn, head = blockIdx.y, i = threadIdx.x;
    int half = D / 2;
    if (i >= half) return;
    u32 p = pos[0] + t;
    const T* row = qkv + (size_t)bt * (H + 2 * KV) * D;
    float c = cos_t[(size_t)p * half + i], s = sin_t[(size_t)p * half + i];
    if (head < H) {
        float x0 = to_f32(row[head * D + 2 * i]), x1 = to_f32(row[head * D + 2 * i + 1]);
        T* dst = q_out + (((size_t)b * H + head) * Tn + t) * D;
        store(dst + 2 * i, x0 * c - x1 * s);
        store(dst + 2 * i + 1, x1 * c + x0 * s);
    } else {
        int kh = head - H;
        const T* k = row + (H + kh) * D;
        const T* v = row + (H + KV + kh) * D;
        size_t slot = (((size_t)b * KV + kh) * CAP + p) * D;
        float x0 = to_f32(k[2 * i]), x1 = to_f32(k[2 * i + 1]);
        store(k_cache + slot + 2 * i, x0 * c - x1 * s);
        store(k_cache + slot + 2 * i + 1, x1 * c + x0 * s);
        v_cache[slot + 2 * i] = v[2 * i];
        v_cache[slot + 2 * i + 1] = v[2 * i + 1];
    }
}

// The 16 bytes at `raw` as floats: 4 f32 or 8 bf16.
__device__ __forceinline__ void unpack(uint4 raw, float* out, float) {
    out[0] = __uint_as_float(raw.x); out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z); out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack(uint4 raw, float* out, bf16_t) {
    u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// Attention of T new queries at positions pos[0] + t over the cached keys 0..=pos[0] + t.
// q: [B, H, T, D]; caches [B, KV, CAP, D]; out: [B, T, H, D]. Grid (B*H, T). Rows are read
// 16 bytes at a time with many loads in flight: scores one key per thread, values by
// (key subset, 16-byte chunk) so a block streams its head's cache at full width.
// Block = subsets · chunks threads (a multiple of 32); dynamic shared memory
// (D + CAP + subsets·D + 32) floats.
template <typename T>
__device__ void attention(const T* q, const T* k_cache, const T* v_cache, const u32* pos, T* out,
                          int B, int Tn, int H, int KV, int D, int CAP) {
    constexpr int VEC = 16 / sizeof(T);
    extern __shared__ float smem[];
    int chunks = D / VEC, subsets = blockDim.x / chunks;
    float* qs = smem;
    float* scores = qs + D;
    float* partial = scores + CAP;
    float* scratch = partial + subsets * D;
    int bh = blockIdx.x, b = bh / H, h = bh % H, t = blockIdx.y;
    int kvh = h / (H / KV);
    int n = pos[0] + t + 1;
    float scale = rsqrtf((float)D);
    const T* qrow = q + (((size_t)b * H + h) * Tn + t) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) qs[d] = to_f32(qrow[d]) * scale;
    __syncthreads();
    const T* kbase = k_cache + ((size_t)b * KV + kvh) * CAP * D;
    const T* vbase = v_cache + ((size_t)b * KV + kvh) * CAP * D;

    float m = -INF;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const uint4* krow = reinterpret_cast<const uint4*>(kbase + (size_t)j * D);
        float acc = 0.f, x[VEC];
#pragma unroll 4
        for (int c = 0; c < chunks; ++c) {
            unpack(__ldg(krow + c), x, T());
            for (int e = 0; e < VEC; ++e) acc += qs[c * VEC + e] * x[e];
        }
        scores[j] = acc;
        m = fmaxf(m, acc);
    }
    m = block_reduce<true>(m, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float e = __expf(scores[j] - m);
        scores[j] = e;
        sum += e;
    }
    sum = block_reduce<false>(sum, scratch);
    __syncthreads();

    int sub = threadIdx.x / chunks, c = threadIdx.x % chunks;
    float acc[VEC], x[VEC];
    for (int e = 0; e < VEC; ++e) acc[e] = 0.f;
#pragma unroll 4
    for (int j = sub; j < n; j += subsets) {
        unpack(__ldg(reinterpret_cast<const uint4*>(vbase + (size_t)j * D) + c), x, T());
        float p = scores[j];
        for (int e = 0; e < VEC; ++e) acc[e] += p * x[e];
    }
    for (int e = 0; e < VEC; ++e) partial[sub * D + c * VEC + e] = acc[e];
    __syncthreads();
    float inv = 1.f / sum;
    T* orow = out + (((size_t)b * Tn + t) * H + h) * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float s = 0.f;
        for (int k = 0; k < subsets; ++k) s += partial[k * D + d];
        store(orow + d, s * inv);
    }
}

// Streaming 16-byte load that bypasses L1: weights are read once per frame, and keeping them
// out of L1 leaves it to the activations every warp re-reads.
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// Skinny matrix product of the frame step, bound by reading W once:
// y[m, n] = Σ_k x[m, k]·W[n, k] (+ res[m, n]) for M ≤ 4 rows; W is a Linear weight [N, K].
// One warp per output column n, 16-byte loads, f32 accumulation. Block 256 threads.
template <typename T, typename Y>
__device__ void gemv(const T* x, const T* W, const Y* res, Y* y, int M, int N, int K) {
    constexpr int VEC = 16 / sizeof(T);
    int lane = threadIdx.x & 31;
    int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (n >= N) return;
    const uint4* w = reinterpret_cast<const uint4*>(W + (size_t)n * K);
    int chunks = K / VEC;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    float wv[VEC], xv[VEC];
#pragma unroll 4
    for (int c = lane; c < chunks; c += 32) {
        unpack(load_stream(w + c), wv, T());
#pragma unroll
        for (int m = 0; m < 4; ++m) {
            if (m < M) {
                unpack(__ldg(reinterpret_cast<const uint4*>(x + (size_t)m * K) + c), xv, T());
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[m] += wv[e] * xv[e];
            }
        }
    }
#pragma unroll
    for (int m = 0; m < 4; ++m) acc[m] = warp_sum(acc[m]);
    if (lane == 0) {
        for (int m = 0; m < M; ++m) {
            float r = res ? to_f32(res[(size_t)m * N + n]) : 0.f;
            store(y + (size_t)m * N + n, r + acc[m]);
        }
    }
}

// gu: [N, 2I] = [gate | up] from the fused w1/w3 projection; out: [N, I] = silu(gate) * up.
template <typename T>
__device__ void silu_mul(const T* gu, T* out, int N, int I) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * I) return;
    size_t n = idx / I, i = idx % I;
    float g = to_f32(gu[n * 2 * I + i]), u = to_f32(gu[n * 2 * I + I + i]);
    store(out + idx, g / (1.f + __expf(-g)) * u);
}

#define INSTANTIATE(T, SUFFIX)                                                                  \
    extern "C" __global__ void rope_kv_##SUFFIX(const T* qkv, const float* c, const float* s,   \
        const u32* pos, T* q, T* kc, T* vc, int B, int Tn, int H, int KV, int D, int CAP) {     \
        rope_kv<T>(qkv, c, s, pos, q, kc, vc, B, Tn, H, KV, D, CAP);                            \
    }                                                                                           \
    extern "C" __global__ void attention_##SUFFIX(const T* q, const T* kc, const T* vc,         \
        const u32* pos, T* out, int B, int Tn, int H, int KV, int D, int CAP) {                 \
        attention<T>(q, kc, vc, pos, out, B, Tn, H, KV, D, CAP);                                \
    }                                                                                           \
    extern "C" __global__ void silu_mul_##SUFFIX(const T* gu, T* out, int N, int I) {           \
        silu_mul<T>(gu, out, N, I);                                                             \
    }                                                                                           \
    extern "C" __global__ void gemv_##SUFFIX(const T* x, const T* W, const T* res, T* y,        \
        int M, int N, int K) {                                                                  \
        gemv<T, T>(x, W, res, y, M, N, K);                                                      \
    }                                                                                           \
    extern "C" __global__ void gemv_##SUFFIX##_to_f32(const T* x, const T* W, const float* res, \
        float* y, int M, int N, int K) {                                                        \
        gemv<T, float>(x, W, res, y, M, N, K);                                                  \
    }

INSTANTIATE(float, f32)
INSTANTIATE(bf16_t, bf16)

// ---- sampling ---------------------------------------------------------------------------

__device__ __forceinline__ u64 mix(u64 x) {
    u64 z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Exp(1) draw for (seed, frame, codebook, token): the same hash as the CPU sampler.
__device__ __forceinline__ float exponential(u64 seed, u64 frame, u64 codebook, u64 token) {
    u64 key = mix(mix(mix(seed) ^ frame) ^ codebook);
    u64 bits = mix(key ^ token);
    float u = (float)((bits >> 40) + 1ull) / 16777216.f;
    return -logf(u);
}

// Order-preserving map of a float to an unsigned key.
__device__ __forceinline__ u32 order_key(float f) {
    u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Guided top-k sampling of one token (one block of 1024 threads):
// guided = uncond + (cond − uncond)·cfg (rows 0/1), scaled by 1/temperature, tokens below the
// k-th largest dropped, then argmax(softmax / q) with q ~ Exp(1). Writes the token to
// frame[codebook] and `token + codebook·vocab` to ids[0..rows) (the next embedding lookup).
extern "C" __global__ void sample_topk(const float* logits, int rows, int vocab, float cfg,
                                       float inv_temperature, int topk, u64 seed,
                                       const u32* state, int codebook, u32* frame, u32* ids) {
    extern __shared__ float vals[];  // vocab floats
    __shared__ u32 hist[256];
    __shared__ u32 prefix_sh, remaining_sh;
    __shared__ float scratch[32];
    __shared__ float best_score[32];
    __shared__ int best_index[32];
    bool guided = rows == 2 && cfg > 1.f;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float c = logits[i];
        float l = guided ? logits[vocab + i] + (c - logits[vocab + i]) * cfg : c;
        vals[i] = l * inv_temperature;
    }
    // Radix select of the k-th largest key, 8 bits at a time from the top.
    u32 prefix = 0, mask = 0, remaining = (u32)topk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            u32 k = order_key(vals[i]);
            if ((k & mask) == prefix) atomicAdd(&hist[(k >> shift) & 255u], 1u);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u32 above = 0;
            int digit = 255;
            for (; digit > 0; --digit) {
                if (above + hist[digit] >= remaining) break;
                above += hist[digit];
            }
            prefix_sh = prefix | ((u32)digit << shift);
            remaining_sh = remaining - above;
        }
        __syncthreads();
        prefix = prefix_sh;
        remaining = remaining_sh;
        mask |= 255u << shift;
    }
    u32 kth = prefix;
    float m = -INF;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, vals[i]);
    m = block_reduce<true>(m, scratch);
    u64 frame_index = state[1];
    float score = -INF;
    int index = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        if (order_key(vals[i]) < kth) continue;
        float s = __expf(vals[i] - m) / exponential(seed, frame_index, (u64)codebook, (u64)i);
        if (s > score) { score = s; index = i; }  // i increases: first index wins ties
    }
    // Arg-max across the block, smallest index on ties.
    for (int o = 16; o > 0; o >>= 1) {
        float os = __shfl_xor_sync(0xffffffffu, score, o);
        int oi = __shfl_xor_sync(0xffffffffu, index, o);
        if (os > score || (os == score && oi < index)) { score = os; index = oi; }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { best_score[warp] = score; best_index[warp] = index; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x >> 5); ++w) {
            if (best_score[w] > score || (best_score[w] == score && best_index[w] < index)) {
                score = best_score[w];
                index = best_index[w];
            }
        }
        frame[codebook] = (u32)index;
        for (int r = 0; r < rows; ++r) ids[r] = (u32)index + (u32)(codebook * vocab);
    }
}

// Backbone input ids of the next frame: ids[r*C + c] = frame[c] + c·vocab for every row.
extern "C" __global__ void frame_ids(const u32* frame, u32* ids, int rows, int codebooks, int vocab) {
    int i = threadIdx.x;
    if (i < rows * codebooks) {
        int c = i % codebooks;
        ids[i] = frame[c] + (u32)(c * vocab);
    }
}

// state = [backbone position of the next frame, index of the next frame].
extern "C" __global__ void advance(u32* state) {
    state[0] += 1;
    state[1] += 1;
}
