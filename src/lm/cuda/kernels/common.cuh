// Shared helpers of the LM step kernels. NVRTC compiles them without CUDA headers: bf16 is a
// raw 16-bit value converted by hand (round to nearest even, as torch does).

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
    u += 0x7fffu + ((u >> 16) & 1u);
    *p = (bf16_t)(u >> 16);
}

// The 16 bytes `raw` as floats: 4 f32 or 8 bf16.
__device__ __forceinline__ void unpack(uint4 raw, float* out, float) {
    out[0] = __uint_as_float(raw.x); out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z); out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack(uint4 raw, float* out, bf16_t) {
    u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// RoPE of one adjacent pair (x0, x1) by the angle whose cosine and sine are (c, s), in f32 as
// torchtune does: the RoPE kernel and the q/k/v products' RoPE epilogue both use it.
__device__ __forceinline__ float2 rotate_pair(float x0, float x1, float c, float s) {
    return make_float2(x0 * c - x1 * s, x1 * c + x0 * s);
}

// Streaming 16-byte load that skips L1: weights are read once per frame, and keeping them out
// of L1 leaves it to the activations every warp re-reads.
__device__ __forceinline__ uint4 load_stream(const uint4* p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Reduces one value per thread across the block (blockDim.x a multiple of 32, ≤ 1024); every
// thread gets the result.
template <bool IS_MAX>
__device__ float block_reduce(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = IS_MAX ? warp_max(v) : warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float r = lane < warps ? scratch[lane] : (IS_MAX ? -INF : 0.f);
    return IS_MAX ? warp_max(r) : warp_sum(r);
}

// Programmatic dependent launch (Hopper): every kernel of the step is launched so that it may
// start while its predecessor finishes. It lets its own successor start at once, does its
// independent work (loading weights), then waits until the predecessor's writes are visible
// before it reads anything the step produced. Launched without the attribute, both are no-ops.
// Before Hopper the instructions do not exist (ptxas refuses them) and a launch is always
// serialised, so both are left out.
__device__ __forceinline__ void allow_dependents() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_producers() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
