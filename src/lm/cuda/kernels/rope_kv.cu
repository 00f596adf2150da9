// qkv: [B*T, (H + 2*KV) * D] from the fused projection. Rotates q and k (adjacent pairs, f32
// math, as torchtune does), writes q to q_out [B, H, T, D] and k, v into the caches
// [B, KV, CAP, D] at positions pos[0] + t. Grid (B*T, H + KV), block D/2.
template <typename T>
__device__ void rope_kv(const T* qkv, const float* cos_t, const float* sin_t, const u32* pos,
                        T* q_out, T* k_cache, T* v_cache, int Tn, int H, int KV, int D, int CAP) {
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
    } else {
        int kh = head - H;
        const T* k = row + (H + kh) * D;
        const T* v = row + (H + KV + kh) * D;
        size_t slot = (((size_t)b * KV + kh) * CAP + p) * D;
        float x0 = to_f32(k[2 * i]), x1 = to_f32(k[2 * i + 1]);
        float2 r = rotate_pair(x0, x1, c, s);
        store(k_cache + slot + 2 * i, r.x);
        store(k_cache + slot + 2 * i + 1, r.y);
        v_cache[slot + 2 * i] = v[2 * i];
        v_cache[slot + 2 * i + 1] = v[2 * i + 1];
    }
}

#define ROPE_KV_ENTRY(T, NAME)                                                                 \
    extern "C" __global__ void NAME(const T* qkv, const float* c, const float* s,              \
        const u32* pos, T* q, T* kc, T* vc, int Tn, int H, int KV, int D, int CAP) {           \
        rope_kv<T>(qkv, c, s, pos, q, kc, vc, Tn, H, KV, D, CAP);                              \
    }

ROPE_KV_ENTRY(float, rope_kv_f32)
ROPE_KV_ENTRY(bf16_t, rope_kv_bf16)
