// Attention of T new queries at positions pos[0] + t over the cached keys 0..=pos[0] + t.
// q: [B, H, T, D]; caches [B, KV, CAP, D] (dense, or FP8 with their exponents: the Cache
// readers of kv_fp8.cu); out: [B, T, H, D].
//
// Split over keys (flash-decoding): grid (B·KV, T, S); block s takes keys [s·L, s·L + L) for
// the G = H / KV query heads that share a kv head, so each cached row is read once per
// group. Rows are read 16 bytes at a time: scores by LPK lanes per key, values by
// (key subset, chunk). Each block leaves its partial (max, sum, Σ p·v) in `part`; the last
// block of a (b, kv head, t) to finish — counted in `counters`, which it resets for the next
// call — merges them. Block = subsets · chunks threads; dynamic shared memory
// (G·D + G·L + subsets·G·D + 32) floats.

#define ATTN_MAX_GROUP 4
#define ATTN_UNROLL 4

// At most this many key splits per (b, kv head, t): the merge keeps a weight per split.
#define MERGE_MAX_SPLITS 64
// Floats of a split's partial: Σ p·v (D values), max, sum and two of padding, so that every
// slot starts on 16 bytes (D is a multiple of 4) and the merge reads four values at a time.
#define SLOT(D) ((D) + 4)

// After a block wrote its partial (Σ p·v, max, sum) for each head of its group into `part`:
// counts the block, and the last block of a (b, kv head, t) to finish merges every split's
// partials into `out` and resets its counter for the next call. A warp per query head turns
// the splits' maxima and sums into one weight each, exp(m_k − max) / Σ_j exp(m_j − max)·l_j,
// so that each output then reads one value per split, four outputs a thread (reading every
// split's statistics again for every output made the merge the slowest part of a long cache's
// attention).
template <typename T>
__device__ void merge_if_last(const float* part, u32* counters, T* out, int b, int kvh, int t,
                              int Tn, int H, int KV, int D, int S) {
    __shared__ bool is_last;
    __shared__ float weight[ATTN_MAX_GROUP][MERGE_MAX_SPLITS];
    const int G = H / KV;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        u32* counter = counters + ((size_t)b * KV + kvh) * Tn + t;
        is_last = atomicAdd(counter, 1u) == (u32)(S - 1);
        if (is_last) *counter = 0;
    }
    __syncthreads();
    if (!is_last) return;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    auto slots_of = [&](int g) {
        return part + (((size_t)b * H + kvh * G + g) * Tn + t) * S * SLOT(D);
    };
    for (int g = warp; g < G; g += blockDim.x >> 5) {
        const float* slots = slots_of(g);
        float m[2], l[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            int k = lane + 32 * r;
            m[r] = k < S ? __ldcg(slots + k * SLOT(D) + D) : -INF;
            l[r] = k < S ? __ldcg(slots + k * SLOT(D) + D + 1) : 0.f;
        }
        float mx = warp_max(fmaxf(m[0], m[1]));
        // An empty split has max −inf: weight 0.
        float w[2] = {__expf(m[0] - mx), __expf(m[1] - mx)};
        float den = warp_sum(w[0] * l[0] + w[1] * l[1]);
#pragma unroll
        for (int r = 0; r < 2; ++r)
            if (lane + 32 * r < S) weight[g][lane + 32 * r] = w[r] / den;
    }
    __syncthreads();
    const int quads = D / 4;
    for (int i = threadIdx.x; i < G * quads; i += blockDim.x) {
        int g = i / quads, d = 4 * (i % quads), h = kvh * G + g;
        const float* slots = slots_of(g) + d;
        float4 num = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
        for (int k = 0; k < S; ++k) {
            float4 v = __ldcg(reinterpret_cast<const float4*>(slots + k * SLOT(D)));
            float w = weight[g][k];
            num.x += w * v.x;
            num.y += w * v.y;
            num.z += w * v.z;
            num.w += w * v.w;
        }
        T* o = out + (((size_t)b * Tn + t) * H + h) * D + d;
        store(o, num.x);
        store(o + 1, num.y);
        store(o + 2, num.z);
        store(o + 3, num.w);
    }
}


template <typename T, typename Cache>
__device__ void attention(const T* q, Cache cache, const u32* pos, T* out, float* part,
                          u32* counters, int Tn, int H, int KV, int D, int CAP, int S, int L,
                          int LPK) {
    constexpr int VEC = 16 / sizeof(T);
    extern __shared__ float smem[];
    allow_dependents();
    wait_for_producers();
    const int G = H / KV, chunks = D / VEC, subsets = blockDim.x / chunks;
    float* qs = smem;
    float* scores = qs + G * D;
    float* partial = scores + G * L;
    float* scratch = partial + subsets * G * D;
    int b = blockIdx.x / KV, kvh = blockIdx.x % KV, t = blockIdx.y, s = blockIdx.z;
    int n = pos[0] + t + 1;
    int j0 = s * L, j1 = min(j0 + L, n), len = max(j1 - j0, 0);

    float scale = rsqrtf((float)D);
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int h = kvh * G + i / D;
        qs[i] = to_f32(q[(((size_t)b * H + h) * Tn + t) * D + i % D]) * scale;
    }
    __syncthreads();
    const size_t first_row = ((size_t)b * KV + kvh) * CAP + j0;

    // Scores: LPK lanes share a key (each a slice of its 16-byte chunks), a warp takes
    // 32 / LPK keys at a time and issues the loads of ATTN_UNROLL such steps before reducing,
    // so a few round trips to memory cover the block's keys whatever the head size.
    const int keys_per_warp = 32 / LPK, lane = threadIdx.x & 31, sub_lane = lane % LPK;
    const int stride = (blockDim.x >> 5) * keys_per_warp;
    for (int base = (threadIdx.x >> 5) * keys_per_warp + lane / LPK; base - lane / LPK < len;
         base += stride * ATTN_UNROLL) {
        float acc[ATTN_UNROLL][ATTN_MAX_GROUP];
#pragma unroll
        for (int u = 0; u < ATTN_UNROLL; ++u) {
#pragma unroll
            for (int g = 0; g < ATTN_MAX_GROUP; ++g) acc[u][g] = 0.f;
            int j = base + u * stride;
            if (j >= len) continue;
            for (int c = sub_lane; c < chunks; c += LPK) {
                float x[VEC];
                chunk_values(cache, cache.key(first_row + j, D, c), x);
#pragma unroll
                for (int g = 0; g < ATTN_MAX_GROUP; ++g) {
                    if (g < G) {
#pragma unroll
                        for (int e = 0; e < VEC; ++e) acc[u][g] += qs[g * D + c * VEC + e] * x[e];
                    }
                }
            }
        }
#pragma unroll
        for (int u = 0; u < ATTN_UNROLL; ++u) {
#pragma unroll
            for (int g = 0; g < ATTN_MAX_GROUP; ++g) {
                for (int o = LPK / 2; o > 0; o >>= 1)
                    acc[u][g] += __shfl_xor_sync(0xffffffffu, acc[u][g], o);
            }
            int j = base + u * stride;
            if (sub_lane == 0 && j < len) {
                for (int g = 0; g < G; ++g) scores[g * L + j] = acc[u][g];
            }
        }
    }
    __syncthreads();
    float m[ATTN_MAX_GROUP], l[ATTN_MAX_GROUP];
    for (int g = 0; g < G; ++g) {
        float mg = -INF;
        for (int j = threadIdx.x; j < len; j += blockDim.x) mg = fmaxf(mg, scores[g * L + j]);
        m[g] = block_reduce<true>(mg, scratch);
        float lg = 0.f;
        for (int j = threadIdx.x; j < len; j += blockDim.x) {
            float e = __expf(scores[g * L + j] - m[g]);
            scores[g * L + j] = e;
            lg += e;
        }
        l[g] = block_reduce<false>(lg, scratch);
    }
    __syncthreads();

    int sub = threadIdx.x / chunks, c = threadIdx.x % chunks;
    float acc[ATTN_MAX_GROUP][VEC];
#pragma unroll
    for (int g = 0; g < ATTN_MAX_GROUP; ++g)
#pragma unroll
        for (int e = 0; e < VEC; ++e) acc[g][e] = 0.f;
#pragma unroll 4
    for (int j = sub; j < len; j += subsets) {
        float x[VEC];
        chunk_values(cache, cache.value(first_row + j, D, c), x);
#pragma unroll
        for (int g = 0; g < ATTN_MAX_GROUP; ++g) {
            if (g < G) {
                float p = scores[g * L + j];
#pragma unroll
                for (int e = 0; e < VEC; ++e) acc[g][e] += p * x[e];
            }
        }
    }
    for (int g = 0; g < G; ++g)
        for (int e = 0; e < VEC; ++e) partial[(sub * G + g) * D + c * VEC + e] = acc[g][e];
    __syncthreads();

    if (S == 1) {  // one block saw every key: no partials to merge
        for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
            int g = i / D, d = i % D, h = kvh * G + g;
            float v = 0.f;
            for (int k = 0; k < subsets; ++k) v += partial[(k * G + g) * D + d];
            store(out + (((size_t)b * Tn + t) * H + h) * D + d, v / l[g]);
        }
        return;
    }
    // part[(((b·H + h)·T + t)·S + s)·SLOT(D) + …] = Σ p·v (D values), max, sum.
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int g = i / D, d = i % D, h = kvh * G + g;
        float v = 0.f;
        for (int k = 0; k < subsets; ++k) v += partial[(k * G + g) * D + d];
        float* slot = part + ((((size_t)b * H + h) * Tn + t) * S + s) * SLOT(D);
        slot[d] = v;
        if (d == 0) {
            slot[D] = m[g];
            slot[D + 1] = l[g];
        }
    }
    merge_if_last<T>(part, counters, out, b, kvh, t, Tn, H, KV, D, S);
}

// The cache arguments of an entry for dense (T) or FP8 caches, and the reader made of them.
#define KV_ARGS_DENSE(T) const T *kc, const T *vc
#define KV_READER_DENSE(T) DenseKv<T>{kc, vc}
#define KV_ARGS_E4M3(T) const unsigned char *kc, const unsigned char *vc,                      \
                        const unsigned char *ke, const unsigned char *ve
#define KV_READER_E4M3(T) E4m3Kv<T>{kc, vc, ke, ve}

#define ATTENTION_ENTRY(T, KV_KIND, NAME)                                                      \
    extern "C" __global__ void NAME(const T* q, KV_ARGS_##KV_KIND(T), const u32* pos,          \
        T* out, float* part, u32* counters, int Tn, int H, int KV, int D, int CAP, int S,      \
        int L, int LPK) {                                                                      \
        attention<T>(q, KV_READER_##KV_KIND(T), pos, out, part, counters, Tn, H, KV, D, CAP,   \
                     S, L, LPK);                                                               \
    }

ATTENTION_ENTRY(float, DENSE, attention_f32)
ATTENTION_ENTRY(bf16_t, DENSE, attention_bf16)
ATTENTION_ENTRY(float, E4M3, attention_e4m3_f32)
ATTENTION_ENTRY(bf16_t, E4M3, attention_e4m3_bf16)

// The same attention for rows of 16·CPL chunks of 16 bytes (bf16: head_dim 128·CPL; f32:
// 64·CPL), in one pass over the keys: 16 lanes share a key, each holding CPL chunks of its
// row, so a warp reads two keys a step and ROWS_STEPS steps of keys and values before using
// any; scores, an online softmax and Σ p·v stay in registers, and the warps of a block meet
// once in shared memory. The partials are the kernel above's (merged by the last block), but
// the S splits divide the live keys, not the cache: each takes the same whole rounds of 64
// keys (at least L), so that every block of a frame's graph shares the work however long the
// song is so far. The chain of dependent steps per block is short: what made
// the kernel above take ~20 µs per layer over 630 positions was its shared-memory passes
// and block-wide reductions, not bytes.
#define ROWS_WARPS 4

template <typename T, int CPL, int GMAX, typename Cache>
__device__ void attention_rows(const T* q, Cache cache, const u32* pos, T* out, float* part,
                               u32* counters, int Tn, int H, int KV, int D, int CAP, int S,
                               int L) {
    constexpr int VEC = 16 / sizeof(T);
    constexpr int W = CPL * VEC;                      // values of a row per lane
    constexpr int STEPS = CPL >= 8 ? 1 : 8 / CPL;     // key pairs per round
    constexpr int KEYS = 2 * STEPS;                   // keys per warp per round
    __shared__ float wm[ROWS_WARPS][GMAX], wl[ROWS_WARPS][GMAX];
    __shared__ float wacc[ROWS_WARPS][GMAX][16 * W];
    allow_dependents();
    wait_for_producers();
    const int G = H / KV;
    int b = blockIdx.x / KV, kvh = blockIdx.x % KV, t = blockIdx.y, s = blockIdx.z;
    int n = pos[0] + t + 1;
    int per_split = max(L, ((pos[0] + Tn + S - 1) / S + 63) / 64 * 64);  // the last query's keys
    int j0 = s * per_split, j1 = min(j0 + per_split, n);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, half = lane >> 4, hl = lane & 15;
    const size_t first_row = ((size_t)b * KV + kvh) * CAP;

    // This lane's slice of each query head (chunks hl, hl + 16, …), scaled by 1/√D.
    float qv[GMAX][W];
    float scale = rsqrtf((float)D);
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
        const T* qrow = q + (((size_t)b * H + kvh * G + min(g, G - 1)) * Tn + t) * D;
#pragma unroll
        for (int c = 0; c < CPL; ++c) {
            float x[VEC];
            unpack(__ldg(reinterpret_cast<const uint4*>(qrow) + c * 16 + hl), x, T());
#pragma unroll
            for (int e = 0; e < VEC; ++e) qv[g][c * VEC + e] = x[e] * scale;
        }
    }
    float m[GMAX], l[GMAX], acc[GMAX][W];
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
        m[g] = -INF;
        l[g] = 0.f;
#pragma unroll
        for (int e = 0; e < W; ++e) acc[g][e] = 0.f;
    }
    for (int r0 = j0 + warp * KEYS; r0 < j1; r0 += ROWS_WARPS * KEYS) {
        typename Cache::Raw kr[STEPS][CPL], vr[STEPS][CPL];
#pragma unroll
        for (int i = 0; i < STEPS; ++i) {
            int j = r0 + 2 * i + half;
#pragma unroll
            for (int c = 0; c < CPL; ++c) {
                kr[i][c] = vr[i][c] = typename Cache::Raw{};
                if (j < j1) {
                    kr[i][c] = cache.key(first_row + j, D, c * 16 + hl);
                    vr[i][c] = cache.value(first_row + j, D, c * 16 + hl);
                }
            }
        }
        // Scores of this half warp's keys, summed over its 16 lanes.
        float sc[STEPS][GMAX];
#pragma unroll
        for (int i = 0; i < STEPS; ++i) {
#pragma unroll
            for (int g = 0; g < GMAX; ++g) sc[i][g] = 0.f;
#pragma unroll
            for (int c = 0; c < CPL; ++c) {
                float x[VEC];
                cache.decode(kr[i][c], x);
#pragma unroll
                for (int g = 0; g < GMAX; ++g) {
                    if constexpr (Cache::SCALED) {  // the chunk's dot product, scaled once
                        float dot = 0.f;
#pragma unroll
                        for (int e = 0; e < VEC; ++e) dot += qv[g][c * VEC + e] * x[e];
                        sc[i][g] += cache.factor(kr[i][c]) * dot;
                    } else {
#pragma unroll
                        for (int e = 0; e < VEC; ++e) sc[i][g] += qv[g][c * VEC + e] * x[e];
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < GMAX; ++g) {
#pragma unroll
                for (int o = 8; o > 0; o >>= 1) sc[i][g] += __shfl_xor_sync(0xffffffffu, sc[i][g], o);
                if (r0 + 2 * i + half >= j1) sc[i][g] = -INF;
            }
        }
        // Online softmax: both halves move to the round's common maximum.
#pragma unroll
        for (int g = 0; g < GMAX; ++g) {
            float mr = -INF;
#pragma unroll
            for (int i = 0; i < STEPS; ++i) mr = fmaxf(mr, sc[i][g]);
            mr = fmaxf(mr, __shfl_xor_sync(0xffffffffu, mr, 16));
            float mn = fmaxf(m[g], mr);
            if (mn == -INF) continue;  // no key yet for this warp
            float corr = __expf(m[g] - mn);
            l[g] *= corr;
#pragma unroll
            for (int e = 0; e < W; ++e) acc[g][e] *= corr;
#pragma unroll
            for (int i = 0; i < STEPS; ++i) {
                float p = __expf(sc[i][g] - mn);  // a key past the end has score −inf: 0
                l[g] += p;
#pragma unroll
                for (int c = 0; c < CPL; ++c) {
                    float x[VEC];
                    cache.decode(vr[i][c], x);
                    float w = p * cache.factor(vr[i][c]);  // exactly p for a dense cache
#pragma unroll
                    for (int e = 0; e < VEC; ++e) acc[g][c * VEC + e] += w * x[e];
                }
            }
            m[g] = mn;
        }
    }
    // The two halves saw different keys with the same maximum: add them up.
#pragma unroll
    for (int g = 0; g < GMAX; ++g) {
        l[g] += __shfl_xor_sync(0xffffffffu, l[g], 16);
#pragma unroll
        for (int e = 0; e < W; ++e) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], 16);
    }
    if (lane < 16) {
#pragma unroll
        for (int g = 0; g < GMAX; ++g) {
#pragma unroll
            for (int c = 0; c < CPL; ++c)
#pragma unroll
                for (int e = 0; e < VEC; ++e) wacc[warp][g][(c * 16 + hl) * VEC + e] = acc[g][c * VEC + e];
            if (lane == 0) {
                wm[warp][g] = m[g];
                wl[warp][g] = l[g];
            }
        }
    }
    __syncthreads();
    // The block's warps merged: into out when one block saw every key, else into its slot.
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int g = i / D, d = i % D, h = kvh * G + g;
        float mx = -INF;
        for (int w = 0; w < ROWS_WARPS; ++w) mx = fmaxf(mx, wm[w][g]);
        float num = 0.f, den = 0.f;
        if (mx != -INF) {
            for (int w = 0; w < ROWS_WARPS; ++w) {
                float f = __expf(wm[w][g] - mx);
                num += f * wacc[w][g][d];
                den += f * wl[w][g];
            }
        }
        if (S == 1) {
            store(out + (((size_t)b * Tn + t) * H + h) * D + d, num / den);
        } else {
            float* slot = part + ((((size_t)b * H + h) * Tn + t) * S + s) * SLOT(D);
            slot[d] = num;
            if (d == 0) {
                slot[D] = mx;
                slot[D + 1] = den;
            }
        }
    }
    if (S > 1) merge_if_last<T>(part, counters, out, b, kvh, t, Tn, H, KV, D, S);
}

#define ATTENTION_ROWS_ENTRY(T, KV_KIND, CPL, GMAX, NAME)                                      \
    extern "C" __global__ void __launch_bounds__(ROWS_WARPS * 32)                              \
        NAME(const T* q, KV_ARGS_##KV_KIND(T), const u32* pos, T* out, float* part,            \
             u32* counters, int Tn, int H, int KV, int D, int CAP, int S, int L) {              \
        attention_rows<T, CPL, GMAX>(q, KV_READER_##KV_KIND(T), pos, out, part, counters, Tn,  \
                                     H, KV, D, CAP, S, L);                                     \
    }

// The backbone (head_dim 128, 3 query heads a kv head) in bf16 and f32, and over an FP8 cache;
// the decoder (384, 2). The launcher names the shapes (ROWS_KERNELS in kernels.rs).
ATTENTION_ROWS_ENTRY(bf16_t, DENSE, 1, 3, attention_rows_bf16_c1)
ATTENTION_ROWS_ENTRY(bf16_t, DENSE, 3, 2, attention_rows_bf16_c3)
ATTENTION_ROWS_ENTRY(float, DENSE, 2, 3, attention_rows_f32_c2)
ATTENTION_ROWS_ENTRY(bf16_t, E4M3, 1, 3, attention_rows_e4m3_bf16_c1)
