// Sampling of one codebook token on the device, as heartlib samples: guided logits
// uncond + (cond − uncond)·cfg (rows 0/1), divided by the temperature, everything below the
// k-th largest dropped, then argmax(softmax / q) with q ~ Exp(1) drawn from the same hash of
// (seed, frame, codebook, token) as the CPU sampler, so both pick the same token.

__device__ __forceinline__ float exponential(u64 seed, u64 frame, u64 codebook, u64 token) {
    u64 key = splitmix64(splitmix64(splitmix64(seed) ^ frame) ^ codebook);
    u64 bits = splitmix64(key ^ token);
    float u = (float)((bits >> 40) + 1ull) / 16777216.f;
    return -logf(u);
}

// Order-preserving map of a float to an unsigned key.
__device__ __forceinline__ u32 order_key(float f) {
    u32 u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Warp 0 finds, among 256 digit counts (highest digit first), the digit holding the
// `remaining`-th largest key: each lane sums 8 bins, a shuffle scan orders the lanes.
__device__ void find_digit(const u32* hist, u32 remaining, u32* digit_out, u32* rest_out) {
    int lane = threadIdx.x;
    u32 bins[8], local = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        bins[i] = hist[255 - (lane * 8 + i)];
        local += bins[i];
    }
    u32 before = local;  // inclusive scan over lanes, then made exclusive
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        u32 v = __shfl_up_sync(0xffffffffu, before, o);
        if (lane >= o) before += v;
    }
    before -= local;
    if (before < remaining && before + local >= remaining) {
        u32 above = before;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            if (above + bins[i] >= remaining) {
                *digit_out = 255 - (lane * 8 + i);
                *rest_out = remaining - above;
                break;
            }
            above += bins[i];
        }
    }
}

// One block of 1024 threads. Writes the token to frame[codebook] and `token + codebook·vocab`
// to ids[0..rows) (the next embedding lookup). state[1] is the frame index.
extern "C" __global__ void sample_topk(const float* logits, int rows, int vocab, float cfg,
                                       float inv_temperature, int topk, u64 seed,
                                       const u32* state, int codebook, u32* frame, u32* ids) {
    extern __shared__ float vals[];  // vocab floats
    __shared__ u32 hist[256];
    __shared__ u32 digit_sh, rest_sh;
    __shared__ float scratch[32];
    __shared__ float best_score[32];
    __shared__ int best_index[32];
    allow_dependents();
    wait_for_producers();
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
        if (threadIdx.x < 32) find_digit(hist, remaining, &digit_sh, &rest_sh);
        __syncthreads();
        prefix |= digit_sh << shift;
        remaining = rest_sh;
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
#pragma unroll
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
