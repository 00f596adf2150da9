// gu: [N, 2I] = [gate | up] from the fused w1/w3 projection; out: [N, I] = silu(gate)·up.
template <typename T>
__device__ void silu_mul(const T* gu, T* out, int N, int I) {
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
