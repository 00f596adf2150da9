// gu: [N, 2I] = [gate | up] from the fused w1/w3 projection; out: [N, I] = silu(gate)·up.
template <typename T>
__device__ void silu_mul(const T* gu, T* out, int N, int I) {
    allow_dependents();
    wait_for_producers();
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)N * I) return;
    size_t n = idx / I, i = idx % I;
    float g = to_f32(gu[n * 2 * I + i]), u = to_f32(gu[n * 2 * I + I + i]);
    store(out + idx, g / (1.f + __expf(-g)) * u);
}

extern "C" __global__ void silu_mul_f32(const float* gu, float* out, int N, int I) {
    silu_mul<float>(gu, out, N, I);
}
extern "C" __global__ void silu_mul_bf16(const bf16_t* gu, bf16_t* out, int N, int I) {
    silu_mul<bf16_t>(gu, out, N, I);
}

// RMSNorm of M rows of K values, one block per row: y = x·γ / sqrt(mean(x²) + eps), in f32.
template <typename T>
__device__ void rms_norm(const T* x, const T* gamma, T* y, int K, float eps) {
    __shared__ float scratch[32];
    allow_dependents();
    wait_for_producers();
    const T* row = x + (size_t)blockIdx.x * K;
    float ss = 0.f;
    for (int k = threadIdx.x; k < K; k += blockDim.x) {
        float v = to_f32(row[k]);
        ss += v * v;
    }
    float inv = rsqrtf(block_reduce<false>(ss, scratch) / (float)K + eps);
    for (int k = threadIdx.x; k < K; k += blockDim.x)
        store(y + (size_t)blockIdx.x * K + k, to_f32(row[k]) * inv * to_f32(gamma[k]));
}

extern "C" __global__ void rms_norm_f32(const float* x, const float* g, float* y, int K, float eps) {
    rms_norm<float>(x, g, y, K, eps);
}
extern "C" __global__ void rms_norm_bf16(const bf16_t* x, const bf16_t* g, bf16_t* y, int K, float eps) {
    rms_norm<bf16_t>(x, g, y, K, eps);
}
