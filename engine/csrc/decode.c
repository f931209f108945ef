/* One decode step of the Llama family (Llama, Mistral, Qwen2, Qwen3, Phi-3), Gemma 2/3 or GPT-2 on CPU for B rows: weights
 * in float32, bfloat16 or float16 (an F16 GGUF file's, kept as they are), or quantized; KV cache in
 * float32, bfloat16 or float16; activations in float32.
 *
 * Why this exists: at batch 1 a decode step is ~120 matrix-vector products whose speed is how
 * fast the weights stream from memory. Through torch each product is a separate call with a fixed
 * cost (oneDNN creates its primitive descriptor every call, ~10 us) and every tiny op around them
 * (norms, RoPE, cache writes, attention) costs a few microseconds more; together about a fifth of
 * the step. Here the whole step is one call: one OpenMP parallel region (torch's own OpenMP
 * runtime: libgomp is already loaded, so no second thread pool competes for the cores), rows of
 * every weight split between the threads, barriers between the phases of a layer.
 *
 * The weights are the ones llama_packed.py prepares, in plain row-major (out, in) matrices:
 *   wqkv ((H + 2 H_kv) hd, D)  norm gain folded into columns, 1/sqrt(hd) into the q rows,
 *                              q/k rows of each head in adjacent RoPE pairs (2i, 2i+1)
 *   bqkv ((H + 2 H_kv) hd)     float32, or NULL (Qwen2 has q/k/v biases)
 *   q_norm, k_norm (hd)        float32 gains of Qwen3's per-head RMSNorm on each query and key
 *                              head before RoPE, in RoPE-pair order, q_norm carrying 1/sqrt(hd)
 *                              (which the norm would cancel in the q rows); NULL for the others
 *   wo (D, H hd), w13 (2F, D) (gate rows then up rows, norm gain folded), w2 (D, F)
 *   out (V, D) the vocabulary head; norm (D,) the final norm gain, applied here.
 * GPT-2 (gpt2_packed.py, m->gpt2): LayerNorm instead of RMSNorm (gain and shift folded into the next
 * matmul's columns and bias, or given where the weights are quantized), no RoPE (the caller adds the position embedding to x), w13 holds
 * the fc rows only (F, D) and the MLP is GELU(fc h + b13); wo, w13 and w2 have biases.
 * Gemma (gemma_packed.py): the Llama layout with (1 + w) norm gains and query_pre_attn_scalar^-0.5
 * folded as above, plus: post_attn_norm, post_ffn_norm (D,) gains of the RMSNorms on the attention
 * and feed-forward outputs before each residual add (x += norm(wo att) g: no weight can take them);
 * geglu (the gate through GELU, gelu_tanh saying which, not SiLU); attn_softcap (scores s ->
 * c tanh(s / c) before the softmax, Gemma 2); local (n_layers,) flags of the sliding-window layers,
 * which attend over local_window slots and turn by local_inv_freq (Gemma 3's own base; NULL: the
 * global inv_freq). The embedding's sqrt(D) and the final logit soft-cap are applied by the caller.
 * The KV cache is kv_cache.KVCache's buffer (n_layers, B, 2 H_kv, max_len, hd): keys, then values.
 * Quantized weights (GGUF blocks, quant.h; llama_packed.py's _pack_layer_quantized): wtypes gives
 * each layer's (wq, wk, wv, wo, gate, up, down) ggml types and out_type the head's; a fused weight
 * is its parts' rows back to back, each part in its own type (wqkv: H hd q rows, H_kv hd k rows,
 * H_kv hd v rows; w13: F gate rows, F up rows), float parts as float32; q8_0, q4_0, q5_0, q4_k and
 * q6_k parts have their rows interleaved eight or sixteen at a time (type + T_X8 / T_X16: repack.h,
 * repack16.h), which is why the threads share a product's rows in groups of 16 (share_rows).
 * Nothing is folded: the norm gains come as attn_norm, ffn_norm (D,) (GPT-2's LayerNorm shifts as
 * attn_norm_bias, ffn_norm_bias), the query scale as q_scale (GPT-2's, which may differ by layer:
 * layer_q_scale) and long-rope's attention factor as rope_mag (RoPE's magnitude); the q/k rows are
 * still in RoPE-pair order. The KV cache is then float16 (kv_type 2, as llama.cpp's default): the cache is
 * most of what attention reads, and at four rows or a long context it is a fifth to a half of all
 * a step streams (135M, f32: 46 KB per token and row against 90 MB of q8_0 weights).
 *
 * bfloat16 halves the bytes a step streams, so it runs nearly twice as fast; widening bf16 to
 * float32 is a 16-bit shift, so no bf16 instructions are needed. float16 weights stream as many
 * bytes, widened as the float16 cache is (F16C where the CPU has it). In float32 the numbers agree with
 * the torch path to rounding (tests pin both to transformers); in bfloat16 they are closer to the
 * float32 truth than transformers' bfloat16 (whose activations are bfloat16 too).
 * Built at first use by native.py with the machine's C compiler; nothing here is required: without
 * a compiler the torch path runs.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#if defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

/* 16 floats: one AVX-512 register, two AVX2 ones, four NEON ones; GCC lowers it to what -march has. */
typedef float v16 __attribute__((vector_size(64)));

/* How far ahead (floats) the weight loops ask for the cache line they will need: 4 KB, which
 * also reaches across the 4 KB page boundaries where the hardware prefetcher stops. Measured
 * against no prefetch: 7% faster steps at one row, 12% at four; 512-2048 are alike. */
#define PREFETCH 1024

/* Bytes of x rows above which matvec switches to tiles of four weight rows (see matvec). */
#ifndef L1_ROWS_BYTES
#define L1_ROWS_BYTES 16384
#endif

static inline v16 load16(const float *p) {
    v16 v;
    memcpy(&v, p, sizeof v); /* an unaligned vector load */
    return v;
}

typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

typedef int32_t v16i __attribute__((vector_size(64)));

static inline float hsum(v16 v);

static inline v16 splat(float c) { return (v16){0} + c; }
static inline v16 select16(v16i m, v16 a, v16 b) { return (v16)(((v16i)a & m) | ((v16i)b & ~m)); }

/* e^r for |r| <= ln2/2 by Cephes' degree-6 polynomial (within 2 ulp of expf). */
static inline v16 exp_poly(v16 r) {
    v16 p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    return p * r * r + r + splat(1.f);
}

/* e^x for 16 floats at once (libm's expf is scalar; the SiLU of a step, its attention softmax
 * and the sampler call it ~10^5 times): x = n ln2 + r, e^r by exp_poly, times 2^n. NaN stays NaN. */
static inline v16 exp16(v16 x) {
#if defined(__AVX512F__)
    /* vscalefps multiplies by 2^n and gives 0 and inf past the ends itself: half the instructions
     * of building 2^n by hand. Clamped to [-110, 89] first (max/min keep a NaN x, their second
     * operand): e^-110 rounds to 0 as -inf must, e^89 overflows to inf. */
    const __m512 c = _mm512_min_ps(_mm512_set1_ps(89.f), _mm512_max_ps(_mm512_set1_ps(-110.f), (__m512)x));
    const v16 nf = (v16)_mm512_roundscale_ps(_mm512_mul_ps(c, _mm512_set1_ps(1.44269504088896341f)),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const v16 r = (v16)c - nf * splat(0.693359375f) + nf * splat(2.12194440e-4f);
    return (v16)_mm512_scalef_ps((__m512)exp_poly(r), (__m512)nf);
#else
    /* Below -87.3 gives 0, above 88.37 inf; 2^n built in the exponent bits. */
    const v16i under = x < splat(-87.3365447504f), over = x > splat(88.3762626647f);
    x = select16(under, splat(0.f), select16(over, splat(0.f), x)); /* keep the polynomial finite */
    v16 fx = x * splat(1.44269504088896341f) + splat(0.5f);
    v16i n = __builtin_convertvector(fx, v16i);                     /* truncates toward zero... */
    n += (v16i)(__builtin_convertvector(n, v16) > fx);              /* ...so step down: floor */
    v16 nf = __builtin_convertvector(n, v16);
    v16 y = exp_poly(x - nf * splat(0.693359375f) + nf * splat(2.12194440e-4f));
    y *= (v16)((n + 127) << 23);
    return select16(under, splat(0.f), select16(over, splat(INFINITY), y));
#endif
}

static inline void store16(float *p, v16 v) { memcpy(p, &v, sizeof v); }

/* v[i] = e^(v[i] - shift) over n floats, in place; returns their sum. */
static float exp_shifted(float *v, int n, float shift) {
    v16 acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 e = exp16(load16(v + i) - splat(shift));
        store16(v + i, e);
        acc += e;
    }
    float s = hsum(acc);
    for (; i < n; i++) {
        v[i] = expf(v[i] - shift);
        s += v[i];
    }
    return s;
}

/* act[i] = silu(gate[i]) * up[i] = gate / (1 + e^-gate) * up over n floats. The last n % 16 go
 * through the same vector code (zero-padded), so an element's value does not depend on where a
 * thread's share of the rows begins: a step gives the same bits on any number of threads. */
static inline v16 silu_mul16(v16 g, v16 u) { return g / (splat(1.f) + exp16(-g)) * u; }
static void silu_mul(float *act, const float *gate, const float *up, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        store16(act + i, silu_mul16(load16(gate + i), load16(up + i)));
    if (i < n) {
        float g[16] = {0}, u[16] = {0}, out[16];
        memcpy(g, gate + i, sizeof(float) * (n - i)), memcpy(u, up + i, sizeof(float) * (n - i));
        store16(out, silu_mul16(load16(g), load16(u)));
        memcpy(act + i, out, sizeof(float) * (n - i));
    }
}

/* v[i] = gelu(v[i]) in place: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), tanh(u) = 1 - 2 / (1 + e^2u);
 * or the exact x/2 (1 + erf(x / sqrt 2)). */
static inline v16 gelu_tanh16(v16 x) {
    const v16 u = splat(0.7978845608028654f) * (x + splat(0.044715f) * x * x * x); /* sqrt(2 / pi) (...) */
    const v16 th = splat(1.f) - splat(2.f) / (splat(1.f) + exp16(u + u));
    return splat(0.5f) * x * (splat(1.f) + th);
}
static void gelu(float *v, int n, int tanh_approx) {
    int i = 0;
    if (tanh_approx) { /* the tail zero-padded through the same code, as in silu_mul */
        for (; i + 16 <= n; i += 16)
            store16(v + i, gelu_tanh16(load16(v + i)));
        if (i < n) {
            float t[16] = {0};
            memcpy(t, v + i, sizeof(float) * (n - i));
            store16(t, gelu_tanh16(load16(t)));
            memcpy(v + i, t, sizeof(float) * (n - i));
        }
        return;
    }
    for (; i < n; i++)
        v[i] = 0.5f * v[i] * (1.f + erff(v[i] * 0.7071067811865476f));
}

static inline float hsum(v16 v) {
    v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* bfloat16 is the upper half of a float32: widening is a shift (no CPU support needed). */
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));

static inline v16 load16_bf16(const uint16_t *p) {
    v16h h;
    memcpy(&h, p, sizeof h);
    return (v16)(__builtin_convertvector(h, v16u) << 16);
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even, as torch converts (NaN stays NaN). */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* IEEE half (the float16 KV cache): 1 sign, 5 exponent, 10 mantissa bits. The portable
 * conversions are the reference for builds without F16C (and for tk_f16_roundtrip's test); with
 * F16C the CPU converts, to the same bits (round to nearest even, subnormals kept, as torch's
 * `.half()`). */
static inline float f16_to_f32_portable(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    uint32_t u;
    if (e == 0x1f) /* inf, NaN */
        u = sign | 0x7f800000u | (m << 13);
    else if (e) /* normal: rebias the exponent (127 - 15 = 112) */
        u = sign | ((e + 112) << 23) | (m << 13);
    else { /* zero or subnormal: m 2^-24, exact in float32 */
        const float f = (float)m * 0x1p-24f;
        memcpy(&u, &f, sizeof u);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t f32_to_f16_portable(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: a quiet one */
        return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) /* 65520 and up round (to even) past 65504, the largest half: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) /* 2^-14 and up: normal; drop 13 mantissa bits to nearest even, rebias */
        return (uint16_t)(sign | ((a + 0xfffu + ((a >> 13) & 1u) - (112u << 23)) >> 13));
    /* below 2^-14: a multiple of 2^-24 (subnormal, or 1024 of them: the smallest normal) */
    const int shift = 126 - (int)(a >> 23); /* |f| = mant 2^(E - 150) = (mant >> shift) 2^-24 */
    if (shift > 24)
        return (uint16_t)sign; /* under 2^-25: rounds to zero (exactly 2^-25 ties to even 0) */
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u, half = 1u << (shift - 1), rest = mant & ((half << 1) - 1);
    uint32_t m = mant >> shift;
    m += rest > half || (rest == half && (m & 1u));
    return (uint16_t)(sign | m);
}

#if defined(__F16C__)
static inline float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
static inline uint16_t f32_to_f16(float f) { return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
#else
static inline float f16_to_f32(uint16_t h) { return f16_to_f32_portable(h); }
static inline uint16_t f32_to_f16(float f) { return f32_to_f16_portable(f); }
#endif

static inline v16 load16_f16(const uint16_t *p) {
#if defined(__AVX512F__)
    return (v16)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
#elif defined(__F16C__)
    const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
    float f[16];
    _mm256_storeu_ps(f, lo), _mm256_storeu_ps(f + 8, hi);
    return load16(f);
#else
    float f[16];
    for (int i = 0; i < 16; i++)
        f[i] = f16_to_f32_portable(p[i]);
    return load16(f);
#endif
}

/* The kernels that read weights or cached keys/values, once for float32, once for bfloat16 and
 * once for float16 elements (activations are float32 either way): dot_f32, tile_f32,
 * dot_rows_f32, axpy_f32, and the same with _bf16 and _f16. */
#define T float
#define SUF _f32
#define LOAD(p) load16(p)
#define GET(p, i) ((p)[i])
#include "kernels.h"
#undef T
#undef SUF
#undef LOAD
#undef GET
#define T uint16_t
#define SUF _bf16
#define LOAD(p) load16_bf16(p)
#define GET(p, i) bf16_to_f32((p)[i])
#include "kernels.h"
#undef T
#undef SUF
#undef LOAD
#undef GET
#define T uint16_t
#define SUF _f16
#define LOAD(p) load16_f16(p)
#define GET(p, i) f16_to_f32((p)[i])
#include "kernels.h"
#undef T
#undef SUF
#undef LOAD
#undef GET

/* The kernels that read GGUF-quantized weight rows (q8_0, q4_0, q4_1, q4_k, q5_k, q6_k). */
#include "quant.h"
#include "dequant.h"

/* The KV cache's element types (Model.kv_type). */
enum { KV_F32 = 0, KV_BF16 = 1, KV_F16 = 2 };

/* The model as the step sees it. One list, MODEL_FIELDS, declares the struct and describes it to
 * Python (tk_model_layout: each field's name, kind and offset), so native.py builds its ctypes mirror
 * from this list and refuses a library whose layout it cannot map: the two can never drift apart.
 * Kinds: INT, FLOAT, PTRS (one pointer per layer), PTR (one pointer); F = float32 data, I = int32. */
#define MODEL_FIELDS(X)                                                                             \
    X(INT, n_layers) X(INT, dim) X(INT, n_heads) X(INT, n_kv_heads) X(INT, head_dim) X(INT, ffn_dim)  \
    X(INT, vocab)                                                                                   \
    X(INT, window)    /* sliding window (Mistral), 0 for none */                                    \
    X(INT, ftype)     /* the float weights' ggml type: T_F32, T_F16 or T_BF16; activations float32 */ \
    X(INT, kv_type)   /* the KV cache's elements: KV_F32, KV_BF16 (bf16 models), KV_F16 (quantized) */\
    X(INT, gpt2)      /* GPT-2: LayerNorm, no RoPE (positions are in x already), fc -> GELU -> proj */\
    X(INT, gelu_tanh) /* GPT-2's GELU: the tanh approximation (else the exact one) */               \
    X(FLOAT, eps)                                                                                   \
    X(PTRS, wqkv) X(PTRS, wo) X(PTRS, w13) X(PTRS, w2)     /* per layer */                          \
    X(FPTRS, bqkv) X(FPTRS, bo) X(FPTRS, b13) X(FPTRS, b2) /* per layer biases, or NULL */          \
    X(FPTRS, q_norm) X(FPTRS, k_norm) /* per layer (hd,) per-head RMSNorm gains (Qwen3), or NULL */ \
    X(IPTR, wtypes)   /* (n_layers, 7) ggml types (quantized models; header), or NULL: ftype */ \
    X(FPTRS, attn_norm) X(FPTRS, ffn_norm) /* per layer (D,) norm gains not folded, or NULL */      \
    X(FLOAT, q_scale) /* the query scale where it is not folded into wqkv or q_norm, else 1 */     \
    X(FLOAT, rope_mag) /* turning pairs' cos, sin times this (long-rope's factor, quantized), or 1 */ \
    X(INT, out_type)  /* the head's type */                                                         \
    X(PTR, out)                                                                                     \
    X(FPTR, norm) X(FPTR, norm_bias) X(FPTR, inv_freq) /* norm_bias (GPT-2), inv_freq (RoPE): or NULL */   \
    X(IPTR, same_row) /* per call: (B,) a row whose cache slots 0..same_len-1 equal this row's, or NULL */  \
    X(INT, same_len)                                                                               \
    X(FPTRS, post_attn_norm) X(FPTRS, post_ffn_norm) /* per layer (D,) gains on the branch outputs (Gemma), or NULL */\
    X(INT, geglu)     /* the feed-forward's gate through GELU (gelu_tanh: which), not SiLU (Gemma) */ \
    X(FLOAT, attn_softcap) /* attention scores s -> c tanh(s / c) before the softmax (Gemma 2), 0 for none */ \
    X(IPTR, local)    /* (n_layers,) 1 for a local layer: local_window, local_inv_freq (Gemma), or NULL */ \
    X(INT, local_window) /* the local layers' sliding window, 0 for none */                         \
    X(FPTR, local_inv_freq) /* the local layers' RoPE frequencies, or NULL: inv_freq */             \
    X(FPTRS, attn_norm_bias) X(FPTRS, ffn_norm_bias) /* per layer (D,) LayerNorm shifts not folded (GPT-2), or NULL */\
    X(FPTR, layer_q_scale) /* (n_layers,) each layer's query scale where not folded (GPT-2), or NULL: q_scale */

#define KIND_INT int
#define KIND_FLOAT float
#define KIND_PTRS const void *const *
#define KIND_FPTRS const float *const *
#define KIND_PTR const void *
#define KIND_FPTR const float *
#define KIND_IPTR const int32_t *
#define DECLARE(kind, name) KIND_##kind name;
typedef struct {
    MODEL_FIELDS(DECLARE)
} Model;

/* "name kind offset;..." for every field, then "size N": what native.py mirrors. */
const char *tk_model_layout(void) {
    static char text[1024];
    if (!text[0]) {
        int n = 0;
#define DESCRIBE(kind, name) \
    n += snprintf(text + n, sizeof text - n, "%s %s %zu;", #name, #kind, offsetof(Model, name));
        MODEL_FIELDS(DESCRIBE)
#undef DESCRIBE
        snprintf(text + n, sizeof text - n, "size %zu", sizeof(Model));
    }
    return text;
}

/* This thread's share [lo, hi) of n items split in contiguous blocks. */
static inline void share(int n, int t, int nt, int *lo, int *hi) {
    *lo = (int)((int64_t)n * t / nt);
    *hi = (int)((int64_t)n * (t + 1) / nt);
}

/* This thread's share [lo, hi) of a weight's n rows, in whole groups of 16 (repacked weights are
 * read 8 or 16 rows at a time; feed_forward_in relies on every product of a layer splitting alike). */
static inline void share_rows(int n, int t, int nt, int *lo, int *hi) {
    share((n + 15) / 16, t, nt, lo, hi);
    *lo = *lo * 16 < n ? *lo * 16 : n;
    *hi = *hi * 16 < n ? *hi * 16 : n;
}

/* p + n elements of float type ft (T_F32, T_F16, T_BF16) */
static inline const void *advance(const void *p, int ft, int64_t n) {
    return (const char *)p + n * (ft == T_F32 ? 4 : 2);
}

/* y[b, r] = W[r] . x[b] (+ bias[r]) (+ y[b, r] when accumulate) for this thread's rows r.
 * W (O, I) row-major; x (B, I); y (B, O). Each weight row is read once for all B rows. */
static void matvec(const void *W, int ft, const float *bias, const float *x, float *y, int B, int O, int I,
                   int ldy, int accumulate, int t, int nt) {
    int lo, hi;
    share_rows(O, t, nt, &lo, &hi);
    float v[16];
    /* Several rows of x that no longer fit in L1 beside a weight row go through 4 weight rows at
     * a time (tile4); short rows, and one row of x, one weight row at a time. */
    const int by4 = B > 1 && (int64_t)(B < 4 ? B : 4) * I * sizeof(float) > L1_ROWS_BYTES;
    int r = lo;
    for (; by4 && r + 4 <= hi; r += 4)
        for (int b0 = 0; b0 < B; b0 += 4) {
            const int nb = B - b0 < 4 ? B - b0 : 4;
            if (ft == T_BF16)
                rows4_bf16((const uint16_t *)W + (int64_t)r * I, x + (int64_t)b0 * I, I, nb, v);
            else if (ft == T_F16)
                rows4_f16((const uint16_t *)W + (int64_t)r * I, x + (int64_t)b0 * I, I, nb, v);
            else
                rows4_f32((const float *)W + (int64_t)r * I, x + (int64_t)b0 * I, I, nb, v);
            for (int k = 0; k < 4; k++)
                for (int b = 0; b < nb; b++) {
                    float *dst = y + (int64_t)(b0 + b) * ldy + r + k;
                    float u = bias ? v[k * nb + b] + bias[r + k] : v[k * nb + b];
                    *dst = accumulate ? *dst + u : u;
                }
        }
    float u[B];
    for (; r < hi; r++) {
        if (ft == T_BF16)
            dot_rows_bf16((const uint16_t *)W + (int64_t)r * I, x, I, B, u);
        else if (ft == T_F16)
            dot_rows_f16((const uint16_t *)W + (int64_t)r * I, x, I, B, u);
        else
            dot_rows_f32((const float *)W + (int64_t)r * I, x, I, B, u);
        for (int b = 0; b < B; b++) {
            float *dst = y + (int64_t)b * ldy + r;
            float w = bias ? u[b] + bias[r] : u[b];
            *dst = accumulate ? *dst + w : w;
        }
    }
}

/* Memory a thread will read soon, asked for a little at a time while it computes: n regions,
 * stride bytes apart from base (the cached keys and values of its attention share), per_row of
 * them per batch row; region r asks for bytes [lo[row], hi[row]) of itself (each row reads its
 * own slots: attention_slots). */
typedef struct {
    const char *base;
    int64_t stride, off, end; /* off: the next byte to ask for in region r, end: its last */
    int n, r, per_row;
    const int64_t *lo, *hi;   /* (B,) each row's bytes, from its slot 0 */
    int64_t total;            /* bytes of all regions, to spread the asking over a product */
} Prefetch;

/* Start asking for region r (or past the last one). */
static inline void prefetch_region(Prefetch *p, int r) {
    p->r = r;
    if (r < p->n)
        p->off = p->lo[r / p->per_row], p->end = p->hi[r / p->per_row];
}

/* Ask for the next `bytes` of p (into L2: prefetcht1), as far as any are left. A region's lines in
 * a loop of locals: updating p a line at a time (a store and reload each) was ~2 % of a four-row
 * step, where the rows' keys and values are four times one row's. */
static inline void prefetch_more(Prefetch *p, int64_t bytes) {
    while (bytes > 0 && p->r < p->n) {
        if (p->off >= p->end) { /* region r done (or nothing of it to ask for): the next one */
            prefetch_region(p, p->r + 1);
            continue;
        }
        const char *at = p->base + p->r * p->stride;
        const int64_t stop = p->end - p->off < bytes ? p->end : p->off + bytes;
        int64_t off = p->off;
        for (; off < stop; off += 64)
            __builtin_prefetch(at + off, 0, 2);
        bytes -= off - p->off, p->off = off;
    }
}

/* matvec for a quantized W of `type` (rows of row_bytes(type, I) bytes): the thread quantizes x
 * into its own `a` (unless a already holds it in this block size: callers set a->kind = 0 when x
 * changes), then computes its share of the rows. With pf, it asks for pf's memory spread over
 * its rows: where several input rows make the product compute-bound, the memory is idle.
 * A full group of 8 or 16 interleaved rows (type & T_LAYOUT) at up to 4 input rows goes from
 * x8_group_any / x16_group_any straight into y, bias and sum included (repack.h's X8Out). */
static void qmatvec(const void *W, int type, const float *bias, const float *x, Act *a, float *y, int B, int O, int I,
                    int ldy, int accumulate, int t, int nt, Prefetch *pf) {
    int lo, hi;
    share_rows(O, t, nt, &lo, &hi);
    act_quantize(a, x, B, I, block_elems(type) == 256 ? 256 : 32);
    const int64_t rb = row_bytes(type, I);
    const int G = type & T_X16 ? 16 : 8; /* rows at a time */
    const int64_t pf_step = pf && hi > lo ? (pf->total / ((hi - lo + G - 1) / G) + 63) / 64 * 64 : 0;
    const int direct = (type & T_LAYOUT) && B <= 4;
    float u[16 * B]; /* (B, G): G rows' products */
    for (int r = lo; r < hi; r += G) { /* lo is a multiple of 16, and so is hi unless it is O */
        const int nr = hi - r < G ? hi - r : G;
        const uint8_t *w = (const uint8_t *)W + r * rb;
        if (pf)
            prefetch_more(pf, pf_step);
        if (direct && nr == G) {
            const X8Out o = {y + r, ldy, bias ? bias + r : NULL, accumulate};
            if (G == 16)
                x16_group_any(type & ~T_LAYOUT, w, a, B, o);
            else
                x8_group_any(type & ~T_LAYOUT, w, a, B, o);
            continue;
        }
        for (int b0 = 0; b0 < B; b0 += 4)
            qrows_tile(type, w, 0, nr, a, b0, B - b0 < 4 ? B - b0 : 4, u, G);
        put_sums((X8Out){y + r, ldy, bias ? bias + r : NULL, accumulate}, B, nr, G, u);
    }
}

/* matvec for a weight of any type (float32, bfloat16, float16 or quantized; a: the thread's input scratch;
 * pf: memory to ask for meanwhile, or NULL; the float products, bandwidth-bound, ignore it). */
static void matvec_any(const void *W, int type, const float *bias, const float *x, Act *a, float *y, int B, int O,
                       int I, int ldy, int accumulate, int t, int nt, Prefetch *pf) {
    if (is_quant(type))
        qmatvec(W, type, bias, x, a, y, B, O, I, ldy, accumulate, t, nt, pf);
    else
        matvec(W, type, bias, x, y, B, O, I, ldy, accumulate, t, nt);
}

/* h = x / rms(x), or (x - mean) / std with layernorm, then * gain + bias where given; every
 * thread computes all of it into its own buffer (no barrier). */
static void norm(const float *x, const float *gain, const float *bias, float *h, int B, int D, float eps,
                 int layernorm) {
    for (int b = 0; b < B; b++) {
        const float *xb = x + (int64_t)b * D;
        float *hb = h + (int64_t)b * D;
        float mean = 0.f;
        if (layernorm) {
            for (int i = 0; i < D; i++)
                mean += xb[i];
            mean /= D;
            for (int i = 0; i < D; i++)
                hb[i] = xb[i] - mean;
            xb = hb;
        }
        float r = 1.0f / sqrtf(dot_f32(xb, xb, D) / D + eps);
        for (int i = 0; i < D; i++)
            hb[i] = xb[i] * r * (gain ? gain[i] : 1.0f) + (bias ? bias[i] : 0.0f);
    }
}

/* Rotate n_heads heads of hd floats, adjacent pairs (2i, 2i+1), by angle pos * inv_freq[i]. */
static void rope(float *v, int n_heads, int hd, const float *cs, const float *sn) {
    for (int h = 0; h < n_heads; h++) {
        float *p = v + (int64_t)h * hd;
        for (int i = 0; i < hd / 2; i++) {
            float a = p[2 * i], b = p[2 * i + 1];
            p[2 * i] = a * cs[i] - b * sn[i];
            p[2 * i + 1] = a * sn[i] + b * cs[i];
        }
    }
}

/* p + n cache elements of type kvt */
static inline const void *kv_at(const void *p, int kvt, int64_t n) {
    return (const char *)p + n * (kvt == KV_F32 ? 4 : 2);
}

/* 16 cache elements of type kvt from p + i as floats (kvt a constant where this is inlined). */
static inline __attribute__((always_inline)) v16 load16_kv(const void *p, int64_t i, const int kvt) {
    return kvt == KV_F16    ? load16_f16((const uint16_t *)p + i)
           : kvt == KV_BF16 ? load16_bf16((const uint16_t *)p + i)
                            : load16((const float *)p + i);
}

/* n floats into the cache at dst (elements of type kvt), each rounded to nearest even. */
static void cache_write(void *dst, int kvt, const float *src, int n) {
    uint16_t *d = dst;
    int i = 0;
    switch (kvt) {
    case KV_F32: memcpy(dst, src, sizeof(float) * n); break;
    case KV_BF16:
        for (; i < n; i++)
            d[i] = f32_to_bf16(src[i]);
        break;
    default:
#if defined(__AVX512F__)
        for (; i + 16 <= n; i += 16)
            _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#elif defined(__F16C__)
        for (; i + 8 <= n; i += 8)
            _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
        for (; i < n; i++)
            d[i] = f32_to_f16(src[i]);
    }
}

/* What every stage of one step shares: the model, the batch, the cache and the scratch buffers.
 * A model with local layers (Gemma) has two: one for its global layers, one for its local ones,
 * alike but for the window, the rows' slot ranges and RoPE's angles (step_setup). */
typedef struct {
    const Model *m;
    int B, D, H, Hkv, hd, F, Q, S, group, ft, slot;
    int window;                       /* the layers' sliding window, 0 for none */
    int kvt;                          /* the cache's element type (KV_F32, KV_BF16, KV_F16) */
    int parts;                        /* attention's slot ranges: the most any row has */
    int *first, *range, *nparts;      /* (B,) each row's first visible slot, slots per range, ranges */
    float *x;                         /* (B, D) the residual stream, updated in place */
    void *kv;                         /* the KV cache, (layer, row, 2 Hkv, max_len, hd) */
    int64_t head_stride, row_stride, layer_stride; /* cache offsets in elements */
    const uint8_t *mask;              /* (B, mask_stride) visible slots, or NULL */
    int64_t mask_stride;
    float *qkv, *att, *act, *upb;     /* (B, Q), (B, H hd), (B, F), (B, F) */
    float *branch;                    /* (B, D): wo's or w2's output where a norm follows (Gemma) */
    float *cs, *sn;                   /* (B, hd/2) each: RoPE's cos and sin at each row's position */
    float *partial;                   /* (parts, B, H, hd + 2): each slot range's partial softmax */
} Step;

/* Per-head RMSNorm (Qwen3) and RoPE on the query and key heads; keys and values into the cache.
 * One (row, head) per item, heads 0..H-1 the queries, H..H+Hkv-1 the keys (with their values). */
static void rope_and_cache(const Step *s, int l, int t, int nt) {
    int lo, hi;
    share(s->B * (s->H + s->Hkv), t, nt, &lo, &hi);
    for (int it = lo; it < hi; it++) {
        const int b = it / (s->H + s->Hkv), hh = it % (s->H + s->Hkv), hd = s->hd;
        float *head = s->qkv + (int64_t)b * s->Q + (int64_t)hh * hd;
        const float *const *gains = hh < s->H ? s->m->q_norm : s->m->k_norm;
        if (gains)
            norm(head, gains[l], NULL, head, 1, hd, s->m->eps, 0); /* in place */
        const float q_scale = s->m->layer_q_scale ? s->m->layer_q_scale[l] : s->m->q_scale;
        if (hh < s->H && q_scale != 1.f)
            for (int i = 0; i < hd; i++)
                head[i] *= q_scale;
        if (!s->m->gpt2)
            rope(head, 1, hd, s->cs + b * hd / 2, s->sn + b * hd / 2);
        if (hh >= s->H) {
            int64_t at = l * s->layer_stride + b * s->row_stride + (hh - s->H) * s->head_stride + (int64_t)s->slot * hd;
            cache_write((void *)kv_at(s->kv, s->kvt, at), s->kvt, head, hd);
            cache_write((void *)kv_at(s->kv, s->kvt, at + s->Hkv * s->head_stride), s->kvt, head + (int64_t)s->Hkv * hd,
                        hd);
        }
    }
}

/* The largest of x[0..n), NaN skipped (sampling's rows, attention's scores); nonfinite (or NULL): set
 * where x holds NaN or +inf. Four running maxima: one compare-and-select chain waited on its
 * latency (6 us a 49k row, now 3). */
static inline __attribute__((always_inline)) float scan_max(const float *x, int n, int *nonfinite) {
    v16 mx[4] = {splat(-INFINITY), splat(-INFINITY), splat(-INFINITY), splat(-INFINITY)};
    v16i bad = {0};
    int i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 4; k++) {
            const v16 v = load16(x + i + 16 * k);
            if (nonfinite)
                bad |= (v != v) | (v == splat(INFINITY));
            mx[k] = select16(v > mx[k], v, mx[k]);
        }
    for (; i + 16 <= n; i += 16) {
        const v16 v = load16(x + i);
        if (nonfinite)
            bad |= (v != v) | (v == splat(INFINITY));
        mx[0] = select16(v > mx[0], v, mx[0]);
    }
    int odd = 0;
    for (int j = 0; j < 16; j++)
        odd |= bad[j];
    /* The four maxima into one, then its lanes by halves: 64 scalar compares from the stack were
     * most of a 16-slot range's softmax (attention calls this per row, head and range). */
    v16 v = select16(mx[1] > mx[0], mx[1], mx[0]), w = select16(mx[3] > mx[2], mx[3], mx[2]);
    v = select16(w > v, w, v);
    w = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    v = select16(w > v, w, v);
    w = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    v = select16(w > v, w, v);
    w = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    v = select16(w > v, w, v);
    float m = v[0] > v[1] ? v[0] : v[1];
    for (; i < n; i++)
        odd |= x[i] != x[i] || x[i] == INFINITY, m = x[i] > m ? x[i] : m;
    if (nonfinite)
        *nonfinite = odd;
    return m;
}

#include "attention.h" /* the layer's attention: ranges of slots, partial softmaxes, their merge */

/* The type of layer l's weight k: 0..6 = wq, wk, wv, wo, gate (GPT-2: fc), up, down. */
static inline int wtype(const Step *s, int l, int k) {
    return s->m->wtypes ? s->m->wtypes[7 * l + k] : s->ft;
}

/* qkv = wqkv h + bqkv: one product, or one per part when q, k and v differ in type (their rows lie
 * back to back in wqkv, each part in its own type). */
static void qkv_in(const Step *s, int l, const float *h, Act *a, int t, int nt) {
    const Model *m = s->m;
    const float *bias = m->bqkv ? m->bqkv[l] : NULL;
    const int types[3] = {wtype(s, l, 0), wtype(s, l, 1), wtype(s, l, 2)};
    /* one product unless the types differ, or interleaved parts' groups of 8 or 16 do not line up */
    const int g = types[0] & T_X16 ? 16 : 8;
    const int aligned = !(types[0] & T_LAYOUT) || (s->H * s->hd % g == 0 && s->Hkv * s->hd % g == 0);
    int64_t lo[s->B], hi[s->B];
    Prefetch pf = kv_prefetch(s, l, t, nt, lo, hi); /* the layer's attention reads, asked for meanwhile */
    if (types[0] == types[1] && types[1] == types[2] && aligned) {
        matvec_any(m->wqkv[l], types[0], bias, h, a, s->qkv, s->B, s->Q, s->D, s->Q, 0, t, nt, &pf);
        return;
    }
    const int rows[3] = {s->H * s->hd, s->Hkv * s->hd, s->Hkv * s->hd};
    const char *w = m->wqkv[l];
    for (int k = 0, at = 0; k < 3; w += rows[k] * row_bytes(types[k], s->D), at += rows[k], k++)
        matvec_any(w, types[k], bias ? bias + at : NULL, h, a, s->qkv + at, s->B, rows[k], s->D, s->Q, 0, t, nt, &pf);
}

/* act = gelu(fc h + b) (GPT-2), or silu(gate h) * (up h) with gate rows 0..F and up rows F..2F of
 * w13 (each part in its own type). */
static void feed_forward_in(const Step *s, int l, const float *h, Act *a, int t, int nt) {
    const Model *m = s->m;
    const int B = s->B, F = s->F, D = s->D, tg = wtype(s, l, 4);
    int lo, hi;
    share_rows(F, t, nt, &lo, &hi); /* the share of F rows that matvec gives this thread */
    if (m->gpt2) {
        matvec_any(m->w13[l], tg, m->b13 ? m->b13[l] : NULL, h, a, s->act, B, F, D, F, 0, t, nt, NULL);
        for (int b = 0; b < B; b++)
            gelu(s->act + (int64_t)b * F + lo, hi - lo, m->gelu_tanh);
    } else {
        matvec_any(m->w13[l], tg, NULL, h, a, s->act, B, F, D, F, 0, t, nt, NULL);
        const char *up = (const char *)m->w13[l] + F * row_bytes(tg, D);
        matvec_any(up, wtype(s, l, 5), NULL, h, a, s->upb, B, F, D, F, 0, t, nt, NULL);
        for (int b = 0; b < B; b++) {
            float *act = s->act + (int64_t)b * F + lo;
            const float *upb = s->upb + (int64_t)b * F + lo;
            if (m->geglu) { /* gelu(gate) * up, as torch's two ops */
                gelu(act, hi - lo, m->gelu_tanh);
                for (int i = 0; i < hi - lo; i++)
                    act[i] *= upb[i];
            } else {
                silu_mul(act, act, upb, hi - lo);
            }
        }
    }
}

/* RoPE's cos and sin (B, hd/2) each at each row's position, for frequencies inv_freq (NULL: none). */
static void rope_angles(const Model *m, const float *inv_freq, int B, int hd, const int64_t *pos, float *cs,
                        float *sn) {
    for (int b = 0; b < B; b++)
        for (int i = 0; i < hd / 2; i++) {
            float a = inv_freq ? (float)pos[b] * inv_freq[i] : 0.f; /* float32, as torch computes it */
            /* A pair that turns is scaled by rope_mag, long-rope's attention factor where quantized
             * weights cannot fold it in; one with inv_freq 0 (past a partial rotary's) passes through. */
            const float mag = inv_freq && inv_freq[i] != 0.f ? m->rope_mag : 1.f;
            cs[b * hd / 2 + i] = mag * cosf(a);
            sn[b * hd / 2 + i] = mag * sinf(a);
        }
}

/* The shared scratch (one allocation, freed by the caller via s->qkv) and RoPE's angles; with
 * local layers (m->local), *loc is the step of those: s but for its window, ranges and angles. */
static int step_setup(Step *s, Step *loc, const Model *m, int B, float *x, const int64_t *pos, void *kv, int max_len,
                      int slot, const uint8_t *mask, int64_t mask_stride, int n_threads) {
    const int D = m->dim, H = m->n_heads, Hkv = m->n_kv_heads, hd = m->head_dim, F = m->ffn_dim;
    *s = (Step){.m = m, .B = B, .D = D, .H = H, .Hkv = Hkv, .hd = hd, .F = F, .Q = (H + 2 * Hkv) * hd,
                .S = slot + 1, .group = H / Hkv, .ft = m->ftype, .kvt = m->kv_type, .slot = slot, .window = m->window,
                .x = x, .kv = kv, .head_stride = (int64_t)max_len * hd, .mask = mask, .mask_stride = mask_stride};
    s->row_stride = 2 * Hkv * s->head_stride;
    s->layer_stride = B * s->row_stride;
    const int views = m->local ? 2 : 1; /* each with its own angles (B hd floats) and ranges (3 B ints) */
    s->qkv = malloc(sizeof(float) * ((size_t)B * s->Q + (size_t)B * H * hd + (size_t)2 * B * F + (size_t)B * D +
                                     (size_t)views * B * hd + (size_t)MAX_PARTS * B * H * (hd + 2)) +
                    sizeof(int) * 3 * (size_t)views * B);
    if (!s->qkv)
        return -1;
    s->att = s->qkv + (size_t)B * s->Q;
    s->act = s->att + (size_t)B * H * hd;
    s->upb = s->act + (size_t)B * F;
    s->branch = s->upb + (size_t)B * F;
    s->cs = s->branch + (size_t)B * D;
    s->sn = s->cs + (size_t)B * hd / 2;
    float *local_angles = s->sn + (size_t)B * hd / 2; /* the local view's cos and sin, where there is one */
    s->partial = s->cs + (size_t)views * B * hd;
    s->first = (int *)(s->partial + (size_t)MAX_PARTS * B * H * (hd + 2));
    s->range = s->first + B, s->nparts = s->range + B;
    row_ranges(s);
    rope_angles(m, m->inv_freq, B, hd, pos, s->cs, s->sn);
    if (m->local) {
        *loc = *s;
        loc->window = m->local_window;
        loc->first = s->nparts + B, loc->range = loc->first + B, loc->nparts = loc->range + B;
        row_ranges(loc);
        if (m->local_inv_freq) { /* its own angles (Gemma 3's base) */
            loc->cs = local_angles, loc->sn = loc->cs + (size_t)B * hd / 2;
            rope_angles(m, m->local_inv_freq, B, hd, pos, loc->cs, loc->sn);
        }
    }
    return 0;
}

/* x += norm(y) gain for the branch output y (B, D) (Gemma's post-attention and post-feed-forward
 * norms): every thread normalises all of y into its own h (the same bits in each), then adds its
 * share of the elements. */
static void add_normed(const Step *s, const float *gain, float *h, int t, int nt) {
    int lo, hi;
    share(s->D, t, nt, &lo, &hi);
    norm(s->branch, gain, NULL, h, s->B, s->D, s->m->eps, 0);
    for (int b = 0; b < s->B; b++)
        for (int i = lo; i < hi; i++)
            s->x[(int64_t)b * s->D + i] += h[(int64_t)b * s->D + i];
}

/*
 * x (B, D) float32: the embeddings of the B new tokens; overwritten with the final residual
 * stream. pos (B,): each row's position (for RoPE). kv: the cache buffer (m->kv_type elements);
 * max_len its slot count; the new keys/values go to slot `slot`, and row b attends to slots
 * j <= slot with mask[b * mask_stride + j] (mask NULL: all) and, with a window, slot - j < window,
 * in ranges counted from its first such slot (row_ranges: the same bits as the row alone).
 * logits (B, V) float32 out. Returns 0, or -1 when scratch memory could not be allocated.
 */
int tk_decode_step(const Model *m, int B, float *x, const int64_t *pos, void *kv, int max_len, int slot,
                   const uint8_t *mask, int64_t mask_stride, float *logits, int n_threads) {
    Step s, loc; /* loc: the local layers' (m->local) */
    if (step_setup(&s, &loc, m, B, x, pos, kv, max_len, slot, mask, mask_stride, n_threads) != 0)
        return -1;
    const int D = s.D;
    int failed = 0;

#pragma omp parallel num_threads(n_threads)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        /* Private scratch: the normalised input (B, D), a range's attention scores for every row's
         * heads of a group (B group, range) and the quantized input of a product (for
         * quantized weights). */
        const int widest = D > s.F ? (D > s.H * s.hd ? D : s.H * s.hd) : (s.F > s.H * s.hd ? s.F : s.H * s.hd);
        int range = range_slots(s.S - window_start(&s)); /* the longest any row's can be */
        if (m->local && range_slots(s.S - window_start(&loc)) > range)
            range = range_slots(s.S - window_start(&loc));
        float *h = malloc(sizeof(float) * ((size_t)B * D + (size_t)B * s.group * range) + act_bytes(B, widest));
        if (!h) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp barrier
        if (!failed) {
            float *scores = h + (size_t)B * D;
            Act a;
            act_init(&a, scores + (size_t)B * s.group * range, B, widest);
            for (int l = 0; l < m->n_layers; l++) {
                const Step *sl = m->local && m->local[l] ? &loc : &s; /* this layer's window and angles */
                /* Gemma's norms on the branch outputs: the product into sl->branch, normalised, added */
                const float *post_attn = m->post_attn_norm ? m->post_attn_norm[l] : NULL;
                const float *post_ffn = m->post_ffn_norm ? m->post_ffn_norm[l] : NULL;
                /* Each stage reads what the one before wrote for other threads: a barrier between.
                 * Norm gains (and GPT-2's biases) are folded into wqkv and w13 unless given. */
                norm(x, m->attn_norm ? m->attn_norm[l] : NULL, m->attn_norm_bias ? m->attn_norm_bias[l] : NULL, h, B, D, m->eps,
                     m->gpt2);
                a.kind = 0; /* a new input: quantize it again */
                qkv_in(sl, l, h, &a, t, nt);
#pragma omp barrier
                rope_and_cache(sl, l, t, nt);
#pragma omp barrier
                attention_share(sl, l, t, nt, scores);
#pragma omp barrier
                merge_attention(sl, t, nt);
#pragma omp barrier
                a.kind = 0;
                matvec_any(m->wo[l], wtype(sl, l, 3), m->bo ? m->bo[l] : NULL, sl->att, &a, post_attn ? sl->branch : x,
                           B, D, s.H * s.hd, D, !post_attn, t, nt, NULL); /* x += attn */
#pragma omp barrier
                if (post_attn) { /* uniform across threads: every thread meets the barrier or none */
                    add_normed(sl, post_attn, h, t, nt);
#pragma omp barrier
                }
                norm(x, m->ffn_norm ? m->ffn_norm[l] : NULL, m->ffn_norm_bias ? m->ffn_norm_bias[l] : NULL, h, B, D, m->eps,
                     m->gpt2);
                a.kind = 0;
                feed_forward_in(sl, l, h, &a, t, nt);
#pragma omp barrier
                a.kind = 0;
                matvec_any(m->w2[l], wtype(sl, l, 6), m->b2 ? m->b2[l] : NULL, sl->act, &a, post_ffn ? sl->branch : x,
                           B, D, s.F, D, !post_ffn, t, nt, NULL); /* x += MLP out */
#pragma omp barrier
                if (post_ffn) {
                    add_normed(sl, post_ffn, h, t, nt);
#pragma omp barrier
                }
            }
            norm(x, m->norm, m->norm_bias, h, B, D, m->eps, m->gpt2);
            a.kind = 0;
            matvec_any(m->out, m->out_type, NULL, h, &a, logits, B, m->vocab, D, m->vocab, 0, t, nt, NULL);
        }
        free(h);
    }
    free(s.qkv);
    return failed ? -1 : 0;
}

/* y (B, O) = W x for one weight W (O, I) of `type` and x (B, I) float32, on n_threads: the
 * step's own product, for tests and bench/quant.py. Returns 0, or -1 without memory. */
int tk_matvec(int type, const void *W, int O, int I, const float *x, int B, float *y, int n_threads) {
    int failed = 0;
#pragma omp parallel num_threads(n_threads)
    {
        void *mem = malloc(act_bytes(B, I));
        if (!mem) {
#pragma omp atomic write
            failed = 1;
        } else {
            Act a;
            act_init(&a, mem, B, I);
            matvec_any(W, type, NULL, x, &a, y, B, O, I, O, 0, omp_get_thread_num(), omp_get_num_threads(), NULL);
        }
        free(mem);
    }
    return failed ? -1 : 0;
}

/* h = x rounded to IEEE half as the cache stores it (cache_write), y = h widened as attention reads it
 * (load16_f16 in 16s, f16_to_f32 for the rest), n elements; portable: the plain C conversions
 * instead, which builds without F16C use. For tests (against torch's .half()). */
void tk_f16_roundtrip(const float *x, uint16_t *h, float *y, int n, int portable) {
    if (portable) {
        for (int i = 0; i < n; i++)
            h[i] = f32_to_f16_portable(x[i]), y[i] = f16_to_f32_portable(h[i]);
        return;
    }
    cache_write(h, KV_F16, x, n);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        store16(y + i, load16_f16(h + i));
    for (; i < n; i++)
        y[i] = f16_to_f32(h[i]);
}

/* Weight rows per tile of tk_matmul: a tile (at most 32 x 6 KB of q8_0 rows 5632 wide) stays in L2
 * while every group of four input rows passes over it; a multiple of 8 (repacked row groups). */
#ifndef MATMUL_TILE
#define MATMUL_TILE 32
#endif
/* Input rows per block of tk_matmul: each (token block, row tile) is one item of work, so a long
 * prompt's quantized rows (T x I bytes) are not all streamed past every tile; 64 rows of 5632
 * (360 KB) sit in L2 beside a tile. A prompt of up to 64 tokens reads every weight once. */
#ifndef MATMUL_TOKENS
#define MATMUL_TOKENS 64
#endif

/* Tile j of a weight of parts: its part k, that part's rows [r0, r1), the part's first output
 * column `at` and first byte `w`. Tiles never straddle parts (each part has its own type). */
typedef struct {
    int k, r0, r1, at;
    const char *w;
} Tile;

static Tile find_tile(int j, const int *types, const int *rows, const void *W, int I) {
    Tile t = {.w = W};
    while (j >= (rows[t.k] + MATMUL_TILE - 1) / MATMUL_TILE) {
        j -= (rows[t.k] + MATMUL_TILE - 1) / MATMUL_TILE;
        t.w += rows[t.k] * row_bytes(types[t.k], I);
        t.at += rows[t.k++];
    }
    t.r0 = j * MATMUL_TILE;
    t.r1 = t.r0 + MATMUL_TILE < rows[t.k] ? t.r0 + MATMUL_TILE : rows[t.k];
    return t;
}

/* y (T, O) = x W^T for T input rows x (T, I) float32 and a weight W of n_parts row blocks back to
 * back (quant.pack_rows: a fused q/k/v or gate/up whose parts differ in type), part k of rows[k]
 * rows of types[k] (quantized, float32, bfloat16 or float16), parts[2 k] = types[k], parts[2 k + 1] =
 * rows[k], O = the rows' sum: a prompt's T tokens through one weight at once, where the decode
 * step takes one token through all of them. Each quantized input row is made once (the threads
 * split the rows), then the threads take (token block, row tile) items in turn (dynamic: a thread
 * the shared machine delays takes fewer), each tile meeting the block's input rows in groups of
 * four (qrows_tile) while it sits in cache: a prompt of up to MATMUL_TOKENS tokens reads the
 * weights from memory once instead of once per token. Returns 0, or -1 without memory. */
int tk_matmul(int n_parts, const int32_t *parts, const void *W, int I, const float *x, int T, float *y,
              int n_threads) {
    int types[n_parts], rows[n_parts];
    int O = 0, kinds = 0, n_tiles = 0; /* kinds: bit 0 some part reads 32-blocks, bit 1 256-blocks */
    for (int k = 0; k < n_parts; k++) {
        types[k] = parts[2 * k], rows[k] = parts[2 * k + 1], O += rows[k];
        kinds |= !is_quant(types[k]) ? 0 : block_elems(types[k]) == 256 ? 2 : 1;
        n_tiles += (rows[k] + MATMUL_TILE - 1) / MATMUL_TILE;
    }
    const int n_items = (T + MATMUL_TOKENS - 1) / MATMUL_TOKENS * n_tiles;
    Act acts[2]; /* the input in blocks of 32 and of 256, where some part needs it */
    void *mem = malloc(((kinds & 1) + (kinds >> 1)) * act_bytes(T, I) + 1); /* only the kinds used */
    if (!mem)
        return -1;
    for (int k = 0, at = 0; k < 2; at += kinds >> k & 1, k++) {
        act_init(&acts[k], (char *)mem + (kinds >> k & 1 ? at : 0) * act_bytes(T, I), T, I); /* unused: unread */
        acts[k].B = T, acts[k].n = I, acts[k].kind = k ? 256 : 32;
    }
#pragma omp parallel num_threads(n_threads)
    {
        for (int k = 0; k < 2; k++)
            if (kinds >> k & 1) {
#pragma omp for schedule(static)
                for (int b = 0; b < T; b++)
                    act_quantize_rows(&acts[k], x, b, b + 1);
            } /* each omp for ends in a barrier: every row is made before any tile reads it */
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < n_items; item++) {
            const Tile tl = find_tile(item % n_tiles, types, rows, W, I);
            const int type = types[tl.k], t0 = item / n_tiles * MATMUL_TOKENS;
            const int t1 = t0 + MATMUL_TOKENS < T ? t0 + MATMUL_TOKENS : T;
            if (is_quant(type))
                for (int b0 = t0; b0 < t1; b0 += 4)
                    qrows_tile(type, (const uint8_t *)tl.w, tl.r0, tl.r1, &acts[block_elems(type) == 256], b0,
                               t1 - b0 < 4 ? t1 - b0 : 4, y + tl.at, O);
            else /* the float rows [r0, r1) as one small matvec on this thread */
                matvec(advance(tl.w, type, (int64_t)tl.r0 * I), type, NULL, x + (int64_t)t0 * I,
                       y + (int64_t)t0 * O + tl.at + tl.r0, t1 - t0, tl.r1 - tl.r0, I, O, 0, 0, 1);
        }
    }
    free(mem);
    return 0;
}

#include "sample.h"
