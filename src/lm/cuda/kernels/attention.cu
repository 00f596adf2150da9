// Attention of T new queries at positions pos[0] + t over the cached keys 0..=pos[0] + t.
// q: [B, H, T, D]; caches [B, KV, CAP, D]; out: [B, T, H, D].
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

template <typename T>
__device__ void attention(const T* q, const T* k_cache, const T* v_cache, const u32* pos, T* out,
                          float* part, u32* counters, int Tn, int H, int KV, int D, int CAP,
                          int S, int L, int LPK) {
    constexpr int VEC = 16 / sizeof(T);
    extern __shared__ float smem[];
    __shared__ bool is_last;
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
    const T* kbase = k_cache + ((size_t)b * KV + kvh) * CAP * D;
    const T* vbase = v_cache + ((size_t)b * KV + kvh) * CAP * D;

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
            const uint4* krow = reinterpret_cast<const uint4*>(kbase + (size_t)(j0 + j) * D);
            for (int c = sub_lane; c < chunks; c += LPK) {
                float x[VEC];
                unpack(__ldg(krow + c), x, T());
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
        unpack(__ldg(reinterpret_cast<const uint4*>(vbase + (size_t)(j0 + j) * D) + c), x, T());
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
    // part[(((b·H + h)·T + t)·S + s)·(D + 2) + …] = Σ p·v (D values), max, sum.
    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int g = i / D, d = i % D, h = kvh * G + g;
        float v = 0.f;
        for (int k = 0; k < subsets; ++k) v += partial[(k * G + g) * D + d];
        float* slot = part + ((((size_t)b * H + h) * Tn + t) * S + s) * (D + 2);
        slot[d] = v;
        if (d == 0) {
            slot[D] = m[g];
            slot[D + 1] = l[g];
        }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        u32* counter = counters + ((size_t)b * KV + kvh) * Tn + t;
        is_last = atomicAdd(counter, 1u) == (u32)(S - 1);
        if (is_last) *counter = 0;
    }
    __syncthreads();
    if (!is_last) return;

    for (int i = threadIdx.x; i < G * D; i += blockDim.x) {
        int g = i / D, d = i % D, h = kvh * G + g;
        const float* slots = part + (((size_t)b * H + h) * Tn + t) * S * (D + 2);
        float mx = -INF;
        for (int k = 0; k < S; ++k) mx = fmaxf(mx, __ldcg(slots + k * (D + 2) + D));
        float num = 0.f, den = 0.f;
        for (int k = 0; k < S; ++k) {
            const float* slot = slots + k * (D + 2);
            float w = __expf(__ldcg(slot + D) - mx);  // an empty split has max −inf: weight 0
            num += w * __ldcg(slot + d);
            den += w * __ldcg(slot + D + 1);
        }
        store(out + (((size_t)b * Tn + t) * H + h) * D + d, num / den);
    }
}

#define ATTENTION_ENTRY(T, NAME)                                                               \
    extern "C" __global__ void NAME(const T* q, const T* kc, const T* vc, const u32* pos,      \
        T* out, float* part, u32* counters, int Tn, int H, int KV, int D, int CAP, int S,      \
        int L, int LPK) {                                                                      \
        attention<T>(q, kc, vc, pos, out, part, counters, Tn, H, KV, D, CAP, S, L, LPK);       \
    }

ATTENTION_ENTRY(float, attention_f32)
ATTENTION_ENTRY(bf16_t, attention_bf16)
