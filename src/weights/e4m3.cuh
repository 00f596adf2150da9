// E4M3 (float8, OCP: 4 exponent bits of bias 7, 3 mantissa bits, largest finite 448) on the
// device, as the host's `float8` crate converts: shared by the weights' module (`fp8.cu`) and
// the LM's (its FP8 KV cache). Needs nothing before it.

__device__ __forceinline__ unsigned char e4m3_code(float v) {
    unsigned int bits = __float_as_uint(v);
    unsigned int sign = (bits >> 24) & 0x80u;
    unsigned int magnitude = bits & 0x7fffffffu;
    float a = __uint_as_float(magnitude);
    if (a > 464.f) return (unsigned char)(sign | 0x7eu);  // beyond halfway to 480: saturate
    if (a < 0x1p-6f)  // subnormal codes are the multiples of 2⁻⁹: scaling by 2⁹ is exact
        return (unsigned char)(sign | __float2uint_rn(__fmul_rn(a, 512.f)));
    unsigned int code = ((((magnitude >> 23) - 127u + 7u) << 3) | ((magnitude >> 20) & 7u));
    unsigned int rest = magnitude & 0xfffffu;  // the 20 bits below E4M3's 3 mantissa bits
    if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) code += 1u;
    return (unsigned char)(sign | code);
}

// A code's bits where an f32 keeps them, sign and the 7 magnitude bits shifted to the top of
// exponent and mantissa: the code's value times 2⁻¹²⁰, exactly (subnormal codes become f32
// subnormals).
__device__ __forceinline__ float e4m3_bits(unsigned int code) {
    return __uint_as_float(((code & 0x7fu) << 20) | ((code & 0x80u) << 24));
}

// e4m3_bits of the four codes of a word (the lowest byte first), two at a time: each pair
// becomes two bf16 in one word (sign and magnitude moved to bf16's places), and a bf16 becomes
// an f32 by a shift or a mask.
__device__ __forceinline__ void e4m3_bits4(unsigned int w, float* out) {
    unsigned int even = ((w & 0x007f007fu) << 4) | ((w & 0x00800080u) << 8);  // codes 0 and 2
    unsigned int odd = ((w & 0x7f007f00u) >> 4) | (w & 0x80008000u);          // codes 1 and 3
    out[0] = __uint_as_float(even << 16);
    out[1] = __uint_as_float(odd << 16);
    out[2] = __uint_as_float(even & 0xffff0000u);
    out[3] = __uint_as_float(odd & 0xffff0000u);
}
