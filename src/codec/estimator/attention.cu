// The flow estimator's bidirectional self-attention in one kernel (bf16 on tensor cores),
// FlashAttention-2 style: a block of four warps takes 64 query frames of one (batch, head),
// each warp 16 of them, and walks the window's keys 64 at a time, keeping the softmax
// statistics (running max and sum) in f32. It reads q, k and v straight from the qkv
// projection's output (batch, frames, 3, heads, head_dim), rotates q and k (RoPE over
// adjacent pairs, rounded to bf16 like candle's rope_i) as it loads them, and writes
// (batch, frames, heads·head_dim), what o_proj reads: no permuted copies, no score matrix.
// bf16 as its bits (NVRTC has no include path for cuda_bf16.h).
typedef unsigned short bf16_bits;
#define NEG_INF __int_as_float(0xff800000)  // NVRTC has no math.h INFINITY

__device__ __forceinline__ float widen(bf16_bits h) {
    return __uint_as_float(((unsigned int)h) << 16);
}

// Round to nearest even; NaN stays NaN.
__device__ __forceinline__ unsigned int narrow(float v) {
    unsigned int u = __float_as_uint(v);
    if (v != v) return (u >> 16) | 0x40u;
    u += 0x7fffu + ((u >> 16) & 1u);
    return u >> 16;
}

__device__ __forceinline__ float round_bf16(float v) { return widen((bf16_bits)narrow(v)); }

__device__ __forceinline__ unsigned int pack(float lo, float hi) {
    return narrow(lo) | (narrow(hi) << 16);
}

// d (16×8, f32) += a (16×16, bf16, row-major fragments) · b (16×8, bf16, column fragments).
__device__ __forceinline__ void mma(float* d, const unsigned int* a, const unsigned int* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}


__device__ __forceinline__ float low(unsigned int w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float high(unsigned int w) { return __uint_as_float(w & 0xffff0000u); }

// The pair (x[2i], x[2i+1]) packed in `w` (x[2i] low), rotated by the angle whose cosine and sine are c and s.
__device__ __forceinline__ unsigned int rope_word(unsigned int w, float c, float s) {
    const float x0 = low(w), x1 = high(w);
    const float y0 = round_bf16(round_bf16(x0 * c) - round_bf16(x1 * s));
    const float y1 = round_bf16(round_bf16(x0 * s) + round_bf16(x1 * c));
    return pack(y0, y1);  // each product and the difference or sum rounded, as bf16 ops do
}

// Four pairs (8 values) rotated by their four angles.
__device__ __forceinline__ uint4 rope_quad(uint4 x, uint2 c, uint2 s) {
    return make_uint4(rope_word(x.x, low(c.x), low(s.x)), rope_word(x.y, high(c.x), high(s.x)),
                      rope_word(x.z, low(c.y), low(s.y)), rope_word(x.w, high(c.y), high(s.y)));
}

// qkv (batch, frames, 3, heads, D); cos, sin (frames, D/2); out (batch, frames, heads, D).
// Grid (ceil(frames / 64), batch·heads), 128 threads. `scale_log2` = log2(e) / sqrt(D).
template <int D>
__device__ void dit_attention(const bf16_bits* qkv, const bf16_bits* cos_t,
                              const bf16_bits* sin_t, bf16_bits* out, int frames, int heads,
                              float scale_log2) {
    constexpr int BK = 64;          // keys per tile
    constexpr int STRIDE = D + 8;   // padded shared rows: conflict-free fragment loads
    constexpr int HALF = D / 2;
    __shared__ __align__(16) bf16_bits k_tile[BK * STRIDE];
    __shared__ __align__(16) bf16_bits v_tile[BK * STRIDE];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;  // fragment row group and column pair
    const int b = blockIdx.y / heads, h = blockIdx.y % heads;
    const long frame_stride = 3L * heads * D;
    const bf16_bits* q_base = qkv + (long)b * frames * frame_stride + (long)h * D;
    const bf16_bits* k_base = q_base + (long)heads * D;
    const bf16_bits* v_base = k_base + (long)heads * D;
    const int q0 = blockIdx.x * 64 + warp * 16;

    // This warp's 16 rotated query rows as A fragments: rows g and g+8, columns 2c and
    // 2c+8 of every 16-wide slice of the head.
    unsigned int qa[D / 16][4];
#pragma unroll
    for (int kc = 0; kc < D / 16; ++kc) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int t = q0 + g + 8 * (r & 1);
            const int d = kc * 16 + 2 * c + 8 * (r >> 1);
            qa[kc][r] = 0;
            if (t < frames) {
                const long i = (long)t * HALF + d / 2;
                const unsigned int pair = *(const unsigned int*)(q_base + (long)t * frame_stride + d);
                qa[kc][r] = rope_word(pair, widen(cos_t[i]), widen(sin_t[i]));
            }
        }
    }

    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float row_max[2] = {NEG_INF, NEG_INF}, row_sum[2] = {0.0f, 0.0f};

    for (int k0 = 0; k0 < frames; k0 += BK) {
        __syncthreads();  // the previous tile is no longer read
        // 16-byte loads, all of a thread's issued before any is used: the tile's load is
        // latency-bound otherwise (each query block reads every key of its head).
        constexpr int PER_ROW = D / 8;
        constexpr int LOADS = BK * PER_ROW / 128;
#pragma unroll
        for (int l = 0; l < LOADS; ++l) {
            const int i = threadIdx.x + l * 128;
            const int r = i / PER_ROW, col = (i % PER_ROW) * 8, t = k0 + r;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = kv;  // keys past the window: zeros, never NaN
            if (t < frames) {
                const long at = (long)t * frame_stride + col;
                const long ti = (long)t * HALF + col / 2;
                kv = rope_quad(*(const uint4*)(k_base + at), *(const uint2*)(cos_t + ti),
                               *(const uint2*)(sin_t + ti));
                vv = *(const uint4*)(v_base + at);
            }
            *(uint4*)&k_tile[r * STRIDE + col] = kv;
            *(uint4*)&v_tile[r * STRIDE + col] = vv;
        }
        __syncthreads();

        // Scores of 16 queries × 64 keys: 8 column blocks of 8 keys.
        float s[BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
            const bf16_bits* key = &k_tile[(8 * j + g) * STRIDE + 2 * c];
#pragma unroll
            for (int kc = 0; kc < D / 16; ++kc) {
                const unsigned int kb[2] = {*(const unsigned int*)(key + kc * 16),
                                            *(const unsigned int*)(key + kc * 16 + 8)};
                mma(s[j], qa[kc], kb);
            }
        }

        // Online softmax in base 2: rows g (elements 0, 1) and g+8 (elements 2, 3).
        float tile_max[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + 8 * j + 2 * c + (e & 1);
                s[j][e] = key < frames ? s[j][e] * scale_log2 : NEG_INF;
                tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[j][e]);
            }
        }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // The four threads of a quad hold one row between them.
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
            tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
            const float next = fmaxf(row_max[r], tile_max[r]);
            alpha[r] = exp2f(row_max[r] - next);
            row_max[r] = next;
            row_sum[r] *= alpha[r];
        }
#pragma unroll
        for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[j][e] = exp2f(s[j][e] - row_max[e >> 1]);
                row_sum[e >> 1] += s[j][e];
            }
        }
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            o[n][0] *= alpha[0];
            o[n][1] *= alpha[0];
            o[n][2] *= alpha[1];
            o[n][3] *= alpha[1];
        }

        // o += p · v: the scores' accumulator layout is the A fragment layout of p.
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            const unsigned int pa[4] = {pack(s[2 * kk][0], s[2 * kk][1]),
                                        pack(s[2 * kk][2], s[2 * kk][3]),
                                        pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                        pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const bf16_bits* value = &v_tile[(kk * 16 + 2 * c) * STRIDE + g];
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                const bf16_bits* v = value + 8 * n;
                const unsigned int vb[2] = {
                    (unsigned int)v[0] | ((unsigned int)v[STRIDE] << 16),
                    (unsigned int)v[8 * STRIDE] | ((unsigned int)v[9 * STRIDE] << 16)};
                mma(o[n], pa, vb);
            }
        }
    }

#pragma unroll
    for (int r = 0; r < 2; ++r) {
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
        row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
        const int t = q0 + g + 8 * r;
        if (t >= frames) continue;
        const float inv = 1.0f / row_sum[r];
        bf16_bits* row = out + ((long)b * frames + t) * heads * D + (long)h * D + 2 * c;
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            *(unsigned int*)(row + 8 * n) = pack(o[n][2 * r] * inv, o[n][2 * r + 1] * inv);
        }
    }
}

#define DIT_ATTENTION(D)                                                                     \
    extern "C" __global__ void __launch_bounds__(128)                                        \
        dit_attention_d##D(const bf16_bits* qkv, const bf16_bits* cos_t,                     \
                           const bf16_bits* sin_t, bf16_bits* out, int frames, int heads,    \
                           float scale_log2) {                                               \
        dit_attention<D>(qkv, cos_t, sin_t, out, frames, heads, scale_log2);                 \
    }

DIT_ATTENTION(64)
DIT_ATTENTION(128)
