// Where a q/k/v step's keys and values go: caches [B, KV, CAP, D] of the step's dtype Y, or,
// with `k_exps` set, FP8 caches (codes in k/v, exponents [B, KV, CAP, D / KV_GROUP]: kv_fp8.cu).
struct KvOut {
    void* k;
    void* v;
    unsigned char* k_exps;
    unsigned char* v_exps;
    __device__ bool fp8() const { return k_exps != nullptr; }
};

// qkv: [B*T, (H + 2*KV) * D] from the fused projection. Rotates q and k (adjacent pairs, f32
// math, as torchtune does), writes q to q_out [B, H, T, D] and k, v into the caches at
// positions pos[0] + t. Grid (B*T, H + KV), block D/2 (D a multiple of 16 for FP8 caches, so
// that a group's 8 threads share a warp).
template <typename T>
__device__ void rope_kv(const T* qkv, const float* cos_t, const float* sin_t, const u32* pos,
                        T* q_out, KvOut caches, int Tn, int H, int KV, int D, int CAP) {
    allow_dependents();
    wait_for_producers();
    int bt = blockIdx.x, b = bt / Tn, t = bt % Tn, head = blockIdx.y, i = threadIdx.x;
    int half = D / 2;
    if (i >= half) return;
    u32 p = pos[0] + t;
    const T* row = qkv + (size_t)bt * (H + 2 * KV) * D;
    float c = cos_t[(size_t)p * half + i], s = sin_t[(size_t)p * half + i];
    if (head < H) {
        float x0 = to_f32(row[head * D + 2 * i]), x1 = to_f32(row[head * D + 2 * i + 1]);
        T* dst = q_out + (((size_t)b * H + head) * Tn + t) * D;
        float2 r = rotate_pair(x0, x1, c, s);
        store(dst + 2 * i, r.x);
        store(dst + 2 * i + 1, r.y);
        return;
    }
    int kh = head - H;
    const T* k = row + (H + kh) * D;
    const T* v = row + (H + KV + kh) * D;
    size_t slot = ((size_t)b * KV + kh) * CAP + p;
    float2 r = rotate_pair(to_f32(k[2 * i]), to_f32(k[2 * i + 1]), c, s);
    T kr[2], vr[2] = {v[2 * i], v[2 * i + 1]};
    store(kr, r.x);
    store(kr + 1, r.y);
    if (!caches.fp8()) {
        T* kc = static_cast<T*>(caches.k) + slot * D;
        T* vc = static_cast<T*>(caches.v) + slot * D;
        kc[2 * i] = kr[0];
        kc[2 * i + 1] = kr[1];
        vc[2 * i] = vr[0];
        vc[2 * i + 1] = vr[1];
        return;
    }
    // The rounded values quantised, each group of KV_GROUP values by its 8 threads.
    u32 lanes = half >= 32 ? 0xffffffffu : (1u << half) - 1u;
    float k0 = to_f32(kr[0]), k1 = to_f32(kr[1]), v0 = to_f32(vr[0]), v1 = to_f32(vr[1]);
    float km = fmaxf(fabsf(k0), fabsf(k1)), vm = fmaxf(fabsf(v0), fabsf(v1));
    for (int o = 4; o > 0; o >>= 1) {
        km = fmaxf(km, __shfl_xor_sync(lanes, km, o));
        vm = fmaxf(vm, __shfl_xor_sync(lanes, vm, o));
    }
    u32 ke = kv_exponent(km), ve = kv_exponent(vm);
    unsigned char* kc = static_cast<unsigned char*>(caches.k) + slot * D;
    unsigned char* vc = static_cast<unsigned char*>(caches.v) + slot * D;
    kc[2 * i] = kv_code(k0, ke);
    kc[2 * i + 1] = kv_code(k1, ke);
    vc[2 * i] = kv_code(v0, ve);
    vc[2 * i + 1] = kv_code(v1, ve);
    if (i % (KV_GROUP / 2) == 0) {
        caches.k_exps[slot * (D / KV_GROUP) + 2 * i / KV_GROUP] = (unsigned char)ke;
        caches.v_exps[slot * (D / KV_GROUP) + 2 * i / KV_GROUP] = (unsigned char)ve;
    }
}

#define ROPE_KV_ENTRY(T, NAME)                                                                 \
    extern "C" __global__ void NAME(const T* qkv, const float* c, const float* s,              \
        const u32* pos, T* q, void* kc, void* vc, unsigned char* ke, unsigned char* ve,        \
        int Tn, int H, int KV, int D, int CAP) {                                               \
        rope_kv<T>(qkv, c, s, pos, q, KvOut{kc, vc, ke, ve}, Tn, H, KV, D, CAP);               \
    }

ROPE_KV_ENTRY(float, rope_kv_f32)
ROPE_KV_ENTRY(bf16_t, rope_kv_bf16)
