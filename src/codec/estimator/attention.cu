// The flow estimator's bidirectional self-attention (bf16 on tensor cores) in two kernels:
// `dit_rope_qk` rotates q and k once (RoPE over adjacent pairs, rounded to bf16 like
// candle's rope_i) from the qkv projection's output (batch, frames, 3, heads, head_dim);
// `dit_attention`, FlashAttention-2 style, gives a block of warps query frames of one
// (batch, head), each warp 16 or 32 of them, and walks the window's keys a tile at a time —
// the next tile copied asynchronously while this one is multiplied — keeping the softmax
// statistics (running max and sum) in f32. It writes (batch, frames, heads·head_dim), what
// o_proj reads: no permuted copies, no score matrix. (bf16.cuh comes first.)

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

// 2^x in one instruction. The softmax's exponents are never positive, so its results lie in
// (0, 1]; those below f32's normal range (2^-126) flush to zero, which changes no row sum
// (each holds a 1). Plain exp2f spends extra instructions per call keeping such subnormals.
__device__ __forceinline__ float exp2_flush(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// The shared-memory address of `p`, for cp.async.
__device__ __forceinline__ unsigned int shared_address(const void* p) {
    unsigned int a;
    asm("{ .reg .u64 s; cvta.to.shared.u64 s, %1; cvt.u32.u64 %0, s; }" : "=r"(a) : "l"(p));
    return a;
}

// Four 8×8 bf16 matrices from shared memory, lanes 8i..8i+7 giving the row addresses of
// matrix i; each lane receives, from matrix i, the pair at row lane/4, columns 2·(lane%4)
// and +1 (`trans`: column lane/4, rows 2·(lane%4) and +1) — the mma fragments' layout.
__device__ __forceinline__ void load_matrices(unsigned int* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
}

__device__ __forceinline__ void load_matrices_transposed(unsigned int* r, const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_address(row)));
}

// Copies 16 bytes to shared memory without passing through registers; `bytes` 0 writes
// zeros (rows past the window).
__device__ __forceinline__ void copy_async(void* shared, const void* global, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared)),
                 "l"(global), "r"(bytes)
                 : "memory");
}

__device__ __forceinline__ void copies_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most `N` committed groups of copies are still in flight.
template <int N>
__device__ __forceinline__ void copies_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// qk (batch, frames, 2, heads, D) = q and k of qkv (batch, frames, 3, heads, D), rotated by
// the angles of cos, sin (frames, D/2). Grid (frames, ⌈2·heads·D/8 / blockDim⌉, batch), a
// thread per 8 values of one frame's q and k: the indices need no division but by D/8.
template <int D>
__device__ void dit_rope_qk(const bf16_bits* qkv, const bf16_bits* cos_t,
                            const bf16_bits* sin_t, bf16_bits* qk, int frames, int heads) {
    const int j = blockIdx.y * blockDim.x + threadIdx.x;  // 8 values of the frame's q and k
    if (j >= 2 * heads * (D / 8)) return;
    const int t = blockIdx.x;
    const long frame = (long)blockIdx.z * frames + t;
    const int rest = j / (D / 8);  // part·heads + h
    const int d = (j % (D / 8)) * 8;
    const long ti = (long)t * (D / 2) + d / 2;
    const uint4 x = *(const uint4*)(qkv + (frame * 3L * heads + rest) * D + d);
    *(uint4*)(qk + (frame * 2L * heads + rest) * D + d) =
        rope_quad(x, *(const uint2*)(cos_t + ti), *(const uint2*)(sin_t + ti));
}

// qk as dit_rope_qk writes it, v in qkv; out (batch, frames, heads, D). Grid
// (ceil(frames / (16·MT·WARPS)), batch·heads), 32·WARPS threads: each warp takes MT slices
// of 16 query rows, so every key and value fragment it loads feeds MT products; the block's
// warps share each tile of BK keys. `scale_log2` = log2(e) / sqrt(D).
template <int D, int MT, int BK, int WARPS>
__device__ void dit_attention(const bf16_bits* qk, const bf16_bits* qkv, bf16_bits* out,
                              int frames, int heads, float scale_log2) {
    constexpr int THREADS = 32 * WARPS;
    constexpr int STRIDE = D + 8;          // padded shared rows: conflict-free fragment loads
    constexpr int PER_ROW = D / 8;         // 16-byte copies per row
    constexpr int COPIES = BK * PER_ROW / THREADS;
    static_assert(COPIES * THREADS == BK * PER_ROW, "a tile is whole copies per thread");
    __shared__ __align__(16) bf16_bits k_tile[2][BK * STRIDE];
    __shared__ __align__(16) bf16_bits v_tile[2][BK * STRIDE];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, c = lane % 4;  // fragment row group and column pair
    const int b = blockIdx.y / heads, h = blockIdx.y % heads;
    const long qk_stride = 2L * heads * D, v_stride = 3L * heads * D;
    const bf16_bits* q_base = qk + (long)b * frames * qk_stride + (long)h * D;
    const bf16_bits* k_base = q_base + (long)heads * D;
    const bf16_bits* v_base = qkv + (long)b * frames * v_stride + 2L * heads * D + (long)h * D;
    const int q0 = (blockIdx.x * WARPS + warp) * 16 * MT;

    // Keys [k0, k0 + BK) into stage `stage`: rows past the window are zeros, never NaN.
    auto load_tile = [&](int stage, int k0) {
#pragma unroll
        for (int l = 0; l < COPIES; ++l) {
            const int i = threadIdx.x + l * THREADS;
            const int r = i / PER_ROW, col = (i % PER_ROW) * 8, t = k0 + r;
            const int bytes = t < frames ? 16 : 0;
            const long row = t < frames ? t : 0;
            copy_async(&k_tile[stage][r * STRIDE + col], k_base + row * qk_stride + col, bytes);
            copy_async(&v_tile[stage][r * STRIDE + col], v_base + row * v_stride + col, bytes);
        }
        copies_commit();
    };
    load_tile(0, 0);

    // This warp's query rows as A fragments, 16 rows a slice m: rows g and g+8, columns 2c
    // and 2c+8 of every 16-wide slice of the head.
    unsigned int qa[MT][D / 16][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int kc = 0; kc < D / 16; ++kc) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int t = q0 + 16 * m + g + 8 * (r & 1);
                const int d = kc * 16 + 2 * c + 8 * (r >> 1);
                qa[m][kc][r] =
                    t < frames ? *(const unsigned int*)(q_base + (long)t * qk_stride + d) : 0;
            }
        }
    }

    float o[MT][D / 8][4];
    float row_max[MT][2], row_sum[MT][2];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int n = 0; n < D / 8; ++n) o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.0f;
        row_max[m][0] = row_max[m][1] = NEG_INF;
        row_sum[m][0] = row_sum[m][1] = 0.0f;
    }

    for (int tile = 0, k0 = 0; k0 < frames; ++tile, k0 += BK) {
        const int stage = tile & 1;
        // The other stage was last read in the previous tile, which every warp has left.
        if (k0 + BK < frames) {
            load_tile(stage ^ 1, k0 + BK);
            copies_wait<1>();
        } else {
            copies_wait<0>();
        }
        __syncthreads();  // this tile's copies, by every thread, have landed
        const bf16_bits* keys = k_tile[stage];
        const bf16_bits* values = v_tile[stage];

        // Scores of the warp's queries × BK keys: column blocks of 8 keys. One ldmatrix gives
        // the B fragments of two 16-wide slices of the head: lane l points at key 8j + l%8,
        // columns 8·(l/8) on.
        float s[MT][BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
            for (int m = 0; m < MT; ++m) s[m][j][0] = s[m][j][1] = s[m][j][2] = s[m][j][3] = 0.0f;
            const bf16_bits* key = &keys[(8 * j + lane % 8) * STRIDE + 8 * (lane / 8)];
#pragma unroll
            for (int kc = 0; kc < D / 16; kc += 2) {
                unsigned int kb[4];
                load_matrices(kb, key + kc * 16);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    mma(s[m][j], qa[m][kc], kb);
                    mma(s[m][j], qa[m][kc + 1], kb + 2);
                }
            }
        }
        // Online softmax in base 2 on the raw scores, the scale folded into one multiply-add
        // per score: rows g (elements 0, 1) and g+8 (elements 2, 3) of each slice. Only the
        // last tile reaches past the window.
        if (k0 + BK > frames) {
#pragma unroll
            for (int m = 0; m < MT; ++m) {
#pragma unroll
                for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        if (k0 + 8 * j + 2 * c + (e & 1) >= frames) s[m][j][e] = NEG_INF;
                    }
                }
            }
        }
#pragma unroll
        for (int m = 0; m < MT; ++m) {
            float tile_max[2] = {NEG_INF, NEG_INF};
#pragma unroll
            for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
                for (int e = 0; e < 4; ++e)
                    tile_max[e >> 1] = fmaxf(tile_max[e >> 1], s[m][j][e]);
            }
            float alpha[2], shift[2];
#pragma unroll
            for (int r = 0; r < 2; ++r) {
                // The four threads of a quad hold one row between them.
                tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
                tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
                const float next = fmaxf(row_max[m][r], tile_max[r]);
                alpha[r] = exp2_flush((row_max[m][r] - next) * scale_log2);  // 0 before the first tile
                row_max[m][r] = next;
                shift[r] = next * scale_log2;
                row_sum[m][r] *= alpha[r];
            }
#pragma unroll
            for (int j = 0; j < BK / 8; ++j) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    s[m][j][e] = exp2_flush(fmaf(s[m][j][e], scale_log2, -shift[e >> 1]));
                    row_sum[m][e >> 1] += s[m][j][e];
                }
            }
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                o[m][n][0] *= alpha[0];
                o[m][n][1] *= alpha[0];
                o[m][n][2] *= alpha[1];
                o[m][n][3] *= alpha[1];
            }
        }

        // o += p · v: the scores' accumulator layout is the A fragment layout of p.
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            unsigned int pa[MT][4];
#pragma unroll
            for (int m = 0; m < MT; ++m) {
                pa[m][0] = pack(s[m][2 * kk][0], s[m][2 * kk][1]);
                pa[m][1] = pack(s[m][2 * kk][2], s[m][2 * kk][3]);
                pa[m][2] = pack(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
                pa[m][3] = pack(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
            }
            // Transposed ldmatrix: the B fragments of two 8-wide column blocks of v; lane l
            // points at key 16kk + 8·(l/8 % 2) + l%8, columns 8·(l/16) on.
            const bf16_bits* value =
                &values[(kk * 16 + 8 * ((lane / 8) % 2) + lane % 8) * STRIDE + 8 * (lane / 16)];
#pragma unroll
            for (int n = 0; n < D / 8; n += 2) {
                unsigned int vb[4];
                load_matrices_transposed(vb, value + 8 * n);
#pragma unroll
                for (int m = 0; m < MT; ++m) {
                    mma(o[m][n], pa[m], vb);
                    mma(o[m][n + 1], pa[m], vb + 2);
                }
            }
        }
        __syncthreads();  // done with this stage before it is refilled
    }

#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float sum = row_sum[m][r];
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const int t = q0 + 16 * m + g + 8 * r;
            if (t >= frames) continue;
            const float inv = 1.0f / sum;
            bf16_bits* row = out + ((long)b * frames + t) * heads * D + (long)h * D + 2 * c;
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                *(unsigned int*)(row + 8 * n) =
                    pack(o[m][n][2 * r] * inv, o[m][n][2 * r + 1] * inv);
            }
        }
    }
}

// Head width D: MT slices of 16 query rows a warp, WARPS warps a block, BK keys a tile, and
// at least MIN_BLOCKS blocks resident on an SM (the registers a thread may use follow). The
// launcher's `Tiling` agrees. For 64-wide heads, 32-key tiles keep a thread within the 168
// registers that let three blocks share an SM, so a 744-latent window's 288 blocks (48 batch
// and head pairs) are resident at once rather than a full wave and a second of 24; the
// 128-wide kernel used 168 registers already.
#define DIT_ATTENTION(D, MT, BK, WARPS, MIN_BLOCKS)                                          \
    extern "C" __global__ void dit_rope_qk_d##D(const bf16_bits* qkv, const bf16_bits* cos_t, \
                                                const bf16_bits* sin_t, bf16_bits* qk,        \
                                                int frames, int heads) {                      \
        dit_rope_qk<D>(qkv, cos_t, sin_t, qk, frames, heads);                                \
    }                                                                                        \
    extern "C" __global__ void __launch_bounds__(32 * WARPS, MIN_BLOCKS)                     \
        dit_attention_d##D(const bf16_bits* qk, const bf16_bits* qkv, bf16_bits* out,        \
                           int frames, int heads, float scale_log2) {                        \
        dit_attention<D, MT, BK, WARPS>(qk, qkv, out, frames, heads, scale_log2);            \
    }

DIT_ATTENTION(64, 2, 32, 4, 3)
DIT_ATTENTION(128, 1, 32, 4, 3)
