// The FP8 KV cache (`--kv-precision fp8`; `src/lm/kv_fp8.rs` is the host's twin, byte for
// byte): a cached row of D values is D E4M3 codes, and each group of KV_GROUP values has one
// byte e, the biased exponent of its scale 2^(e − 127). The scale takes the group's largest
// magnitude to [128, 256), far from E4M3's largest value (448) and its smallest normal (2⁻⁶),
// so no value saturates and only values below 2⁻¹⁴ of their group's largest lose bits. A power
// of two keeps quantising and decoding exact multiplications. e ≤ 134 (scale ≤ 2⁷) keeps the
// decoding factor a normal f32; magnitudes beyond 448·2⁷ saturate.
// Compiled after common.cuh and e4m3.cuh.

#define KV_GROUP 16

__device__ __forceinline__ u32 kv_exponent(float largest) {
    int biased = (int)((__float_as_uint(largest) >> 23) & 0xffu);
    return (u32)min(max(biased - 7, 1), 134);
}

// The code of v in a group of exponent e.
__device__ __forceinline__ unsigned char kv_code(float v, u32 e) {
    return e4m3_code(__fmul_rn(v, __uint_as_float((254u - e) << 23)));
}

// What e4m3_bits of a code is multiplied by to give its value in a group of exponent e:
// 2¹²⁰ · 2^(e − 127).
__device__ __forceinline__ float kv_factor(u32 e) { return __uint_as_float((e + 120u) << 23); }

// x [rows, D] (contiguous) to codes [rows, D] and exponents [rows, D / KV_GROUP], a thread a
// group (the prompt's keys and values, a few tens of thousands of groups).
template <typename T>
__device__ void kv_quantize(const T* x, unsigned char* codes, unsigned char* exps, u64 groups) {
    allow_dependents();
    wait_for_producers();
    for (u64 g = blockIdx.x * (u64)blockDim.x + threadIdx.x; g < groups;
         g += (u64)gridDim.x * blockDim.x) {
        float v[KV_GROUP];
        float largest = 0.f;
#pragma unroll
        for (int i = 0; i < KV_GROUP; ++i) {
            v[i] = to_f32(x[g * KV_GROUP + i]);
            largest = fmaxf(largest, fabsf(v[i]));
        }
        u32 e = kv_exponent(largest);
#pragma unroll
        for (int i = 0; i < KV_GROUP; ++i) codes[g * KV_GROUP + i] = kv_code(v[i], e);
        exps[g] = (unsigned char)e;
    }
}

// The first `len` positions of caches [BKV, CAP, D] decoded into out [BKV, len, D].
template <typename T>
__device__ void kv_dequantize(const unsigned char* codes, const unsigned char* exps, T* out,
                              u64 groups, int len, int CAP, int D) {
    allow_dependents();
    wait_for_producers();
    int per_row = D / KV_GROUP;
    for (u64 g = blockIdx.x * (u64)blockDim.x + threadIdx.x; g < groups;
         g += (u64)gridDim.x * blockDim.x) {
        u64 row = g / per_row;
        int c = (int)(g % per_row);
        u64 src = (row / len) * CAP + row % len;  // (b·KV + head, position)
        float f = kv_factor(exps[src * per_row + c]);
        const unsigned char* in = codes + src * D + c * KV_GROUP;
#pragma unroll
        for (int i = 0; i < KV_GROUP; ++i)
            store(out + row * D + c * KV_GROUP + i, __fmul_rn(e4m3_bits(in[i]), f));
    }
}

#define KV_FP8_ENTRIES(T, SUFFIX)                                                              \
    extern "C" __global__ void kv_quantize_##SUFFIX(const T* x, unsigned char* codes,          \
                                                     unsigned char* exps, u64 groups) {        \
        kv_quantize<T>(x, codes, exps, groups);                                                \
    }                                                                                          \
    extern "C" __global__ void kv_dequantize_##SUFFIX(const unsigned char* codes,              \
        const unsigned char* exps, T* out, u64 groups, int len, int CAP, int D) {              \
        kv_dequantize<T>(codes, exps, out, groups, len, CAP, D);                               \
    }

KV_FP8_ENTRIES(float, f32)
KV_FP8_ENTRIES(bf16_t, bf16)

// How the attention kernels read a cache: chunk c of a row holds values [c·VEC, c·VEC + VEC),
// VEC being what 16 bytes of the queries' type T hold. `key`/`value` load a chunk of row
// `row` (b·KV + head)·CAP + position; `decode` makes floats of it, which a SCALED cache's
// `factor` (one for the chunk) turns into its values, so that a kernel can sum first and
// scale once (`chunk_values` scales them first).
template <typename T>
struct DenseKv {
    static constexpr int VEC = 16 / sizeof(T);
    static constexpr bool SCALED = false;
    typedef uint4 Raw;
    const T* k;
    const T* v;
    __device__ Raw key(size_t row, int D, int c) const {
        return __ldg(reinterpret_cast<const uint4*>(k + row * D) + c);
    }
    __device__ Raw value(size_t row, int D, int c) const {
        return __ldg(reinterpret_cast<const uint4*>(v + row * D) + c);
    }
    __device__ void decode(Raw raw, float* x) const { ::unpack(raw, x, T()); }
    __device__ float factor(Raw) const { return 1.f; }
};

// VEC codes as one load: 8 (bf16 queries) or 4 (f32).
template <int VEC>
struct CodeChunk;
template <>
struct CodeChunk<8> {
    typedef uint2 Type;
    __device__ static void bits(Type c, float* x) {
        e4m3_bits4(c.x, x);
        e4m3_bits4(c.y, x + 4);
    }
};
template <>
struct CodeChunk<4> {
    typedef u32 Type;
    __device__ static void bits(Type c, float* x) { e4m3_bits4(c, x); }
};

// The FP8 cache read chunk by chunk as DenseKv reads a dense one: VEC codes and their group's
// exponent (a chunk never straddles two groups: VEC divides KV_GROUP).
template <typename T>
struct E4m3Kv {
    static constexpr int VEC = 16 / sizeof(T);
    static constexpr bool SCALED = true;
    typedef CodeChunk<VEC> Chunk;
    struct Raw {
        typename Chunk::Type codes;
        u32 e;
    };
    const unsigned char* k;
    const unsigned char* v;
    const unsigned char* k_exps;
    const unsigned char* v_exps;
    __device__ static Raw read(const unsigned char* codes, const unsigned char* exps, size_t row,
                               int D, int c) {
        Raw r;
        r.codes = __ldg(reinterpret_cast<const typename Chunk::Type*>(codes + row * D) + c);
        r.e = __ldg(exps + row * (D / KV_GROUP) + c * VEC / KV_GROUP);
        return r;
    }
    __device__ Raw key(size_t row, int D, int c) const { return read(k, k_exps, row, D, c); }
    __device__ Raw value(size_t row, int D, int c) const { return read(v, v_exps, row, D, c); }
    __device__ void decode(Raw raw, float* x) const { Chunk::bits(raw.codes, x); }
    __device__ float factor(Raw raw) const { return kv_factor(raw.e); }
};

// The values of a chunk of either cache.
template <typename Cache>
__device__ __forceinline__ void chunk_values(const Cache& cache, typename Cache::Raw raw,
                                             float* x) {
    cache.decode(raw, x);
    if constexpr (Cache::SCALED) {
        float f = cache.factor(raw);
#pragma unroll
        for (int i = 0; i < Cache::VEC; ++i) x[i] *= f;
    }
}
