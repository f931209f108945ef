/* Matrix-vector products over GGUF-quantized weight rows (engine/quant.py has the block layouts),
 * included by decode.c.
 *
 * As llama.cpp does, the float32 input vector is quantized once per product to 8 bits: blocks of
 * 32 with one float scale (and the block's sum) for the 32-element types q8_0, q4_0, q4_1; blocks
 * of 256 with one scale and the sums of every 16 for the K-types q4_k, q5_k, q6_k. A weight block
 * times an input block is then an integer dot product times the two scales. The unsigned-times-
 * signed byte products are AVX-512 VNNI's dpbusd (256-bit, AVX512VL) where the compiler targets
 * it, AVX2's maddubs + madd otherwise, and plain C without AVX2 (chosen by the compiler's own
 * macros, so -march=native picks the best the machine has). The 4-bit and 6-bit weights are
 * unsigned (0..15, 0..63) with an offset (-8, -32) or a min, which the block sums of the input
 * settle exactly; q8_0's signed weights go through abs(w) and sign(x, w).
 *
 * The error this adds to a product is the input's rounding: each input element moves by at most
 * half its block's scale, amax(block) / 254 (tests/test_quant.py checks that bound).
 *
 * Each kernel computes one weight row against nb (1..4) input rows, unpacking each weight block
 * once for all of them.
 */
#if defined(__AVX2__)
#include <immintrin.h>
#endif

/* ggml's type numbers (what quant.py's QTYPES and the step's type fields hold). */
enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30 };
/* Added to a type: its rows are interleaved eight at a time (T_X8, repack.h) or sixteen at a time
 * (T_X16, repack16.h), same bytes in all; T_LAYOUT masks either. */
enum { T_X8 = 256, T_X16 = 512, T_LAYOUT = T_X8 | T_X16 };

static inline int is_quant(int type) { return type != T_F32 && type != T_BF16 && type != T_F16; }
static inline int block_elems(int type) {
    type &= ~T_LAYOUT;
    return type >= T_Q4_K && type <= T_Q6_K ? 256 : type >= T_Q4_0 ? 32 : 1;
}

/* Bytes of one row of n elements (n a multiple of the block). */
static inline int64_t row_bytes(int type, int64_t n) {
    switch (type & ~T_LAYOUT) {
    case T_F32: return 4 * n;
    case T_BF16: case T_F16: return 2 * n;
    case T_Q8_0: return n / 32 * 34;
    case T_Q4_0: return n / 32 * 18;
    case T_Q4_1: return n / 32 * 20;
    case T_Q5_0: return n / 32 * 22;
    case T_Q5_1: return n / 32 * 24;
    case T_Q4_K: return n / 256 * 144;
    case T_Q5_K: return n / 256 * 176;
    case T_Q6_K: return n / 256 * 210;
    default: return -1;
    }
}

static inline float fp16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t bits;
    if (e == 0x1f)
        bits = sign | 0x7f800000u | (man << 13);
    else if (e == 0) { /* zero or subnormal: man * 2^-24 */
        float f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    } else
        bits = sign | ((e + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

/* The quantized input: B rows of n elements, for one block size (32 or 256; 0 = not yet made). */
typedef struct {
    int B, n, kind;
    int8_t *q;      /* (B, n) */
    float *d;       /* (B, n / kind) scales */
    float *s;       /* (B, n / 32) scale * sum of the block's q (kind 32) */
    int32_t *isum;  /* (B, n / 32) sum of the block's q (kind 32; repack.h's offsets) */
    int16_t *bsums; /* (B, n / 16) sums of q per 16 (kind 256) */
} Act;

/* Bytes of scratch an Act of B rows of up to n elements needs. */
static inline size_t act_bytes(int B, int n) {
    return (size_t)B * n + 3 * sizeof(float) * ((size_t)B * n / 32) + sizeof(int16_t) * ((size_t)B * n / 16) + 64;
}

static void act_init(Act *a, void *mem, int B, int n) {
    a->kind = 0;
    a->q = mem;
    a->d = (float *)(a->q + (size_t)B * n);
    a->s = a->d + (size_t)B * n / 32;
    a->isum = (int32_t *)(a->s + (size_t)B * n / 32);
    a->bsums = (int16_t *)(a->isum + (size_t)B * n / 32);
}

/* The largest |x[i]| of n (a multiple of 8) floats. */
static inline float absmax(const float *x, int n) {
#if defined(__AVX2__)
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8)
        m = _mm256_max_ps(m, _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_loadu_ps(x + i)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
#else
    float amax = 0.f;
    for (int i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    return amax;
#endif
}

/* q[i] = round(x[i] id) for 32 floats, to nearest with ties to even (lrintf's rounding, and
 * cvtps_epi32's); sums[h] = the sum of q over half h (16 each). */
static inline void round32(const float *x, float id, int8_t *q, int sums[2]) {
#if defined(__AVX2__)
    const __m256 m = _mm256_set1_ps(id);
    __m256i i[4];
    for (int k = 0; k < 4; k++)
        i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), m));
    /* the packs interleave the 128-bit lanes: dword k of b is i[k % 4] elements 4 (k / 4).. */
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    _mm256_storeu_si256((__m256i *)q, _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    for (int h = 0; h < 2; h++) {
        const __m256i v = _mm256_add_epi32(i[2 * h], i[2 * h + 1]);
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        sums[h] = _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1)));
    }
#else
    for (int h = 0; h < 2; h++) {
        sums[h] = 0;
        for (int k = 16 * h; k < 16 * h + 16; k++)
            sums[h] += q[k] = (int8_t)lrintf(x[k] * id);
    }
#endif
}

#if defined(__AVX512F__)
/* Lane k of the result: OP over the 16 lanes of m[4 (k % 4) + k / 4] (the callers store block k's
 * vector there). Four rounds of shuffles pair the vectors up, halving the lanes each keeps, so 16
 * reductions cost 30 shuffles and 15 OPs rather than 16 x (4 shuffles, 4 OPs), one after another. */
#define TK_TREE16(NAME, OP)                                                                                 \
    static inline __m512 NAME(const __m512 *m) {                                                          \
        __m512 t[8], u[4], w[2];                                                                          \
        for (int k = 0; k < 8; k++) /* 256-bit halves: m[2k]'s 8 partials low, m[2k+1]'s high */           \
            t[k] = OP(_mm512_shuffle_f32x4(m[2 * k], m[2 * k + 1], 0x44),                                  \
                      _mm512_shuffle_f32x4(m[2 * k], m[2 * k + 1], 0xEE));                                 \
        for (int k = 0; k < 4; k++) /* 128-bit lanes: one vector's 4 partials each */                     \
            u[k] = OP(_mm512_shuffle_f32x4(t[2 * k], t[2 * k + 1], 0x88),                                  \
                      _mm512_shuffle_f32x4(t[2 * k], t[2 * k + 1], 0xDD));                                 \
        for (int k = 0; k < 2; k++)                                                                       \
            w[k] = OP(_mm512_shuffle_ps(u[2 * k], u[2 * k + 1], 0x44), _mm512_shuffle_ps(u[2 * k], u[2 * k + 1], 0xEE)); \
        return OP(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));              \
    }
#define TK_ADDI(a, b) _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(a), _mm512_castps_si512(b)))
TK_TREE16(max16, _mm512_max_ps)
TK_TREE16(sum16i, TK_ADDI)

/* q = round(x id) for 32 floats (as round32: to nearest even, saturated like its packs); the sum
 * of q as 16 int32 lanes. */
static inline __m512i round32x(const float *x, __m512 id, int8_t *q) {
    const __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), id));
    const __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 16), id));
    _mm_storeu_si128((__m128i *)q, _mm512_cvtsepi32_epi8(i0));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtsepi32_epi8(i1));
    return _mm512_add_epi32(i0, i1);
}

/* act_quantize_blocks for blocks of 32, sixteen at a time: the same bits (scale amax / 127, its
 * reciprocal where > 0, the same rounding). Why: one block at a time waited on two horizontal
 * reductions and two divisions in a row, ~50 cycles a block; at four input rows each thread
 * quantizes ~12,000 blocks a 135M step, 3-7 % of it. Sixteen blocks share one division and
 * their reductions (TK_TREE16): 11.5 -> 4.7 ns a block. Returns the first block not done. */
static int64_t act_quantize_32x16(Act *a, const float *x, int64_t blk, int64_t blk1) {
    const __m512 sign = _mm512_set1_ps(-0.f);
    for (; blk + 16 <= blk1; blk += 16) {
        __m512 m[16], sv[16];
        for (int k = 0; k < 16; k++) {
            const float *xb = x + (blk + k) * 32;
            m[4 * (k % 4) + k / 4] = _mm512_max_ps(_mm512_andnot_ps(sign, _mm512_loadu_ps(xb)),
                                                   _mm512_andnot_ps(sign, _mm512_loadu_ps(xb + 16)));
        }
        const __m512 d = _mm512_div_ps(max16(m), _mm512_set1_ps(127.f));
        float id[16];
        _mm512_storeu_ps(id, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_GT_OQ),
                                                 _mm512_set1_ps(1.f), d));
        for (int k = 0; k < 16; k++)
            sv[4 * (k % 4) + k / 4] =
                _mm512_castsi512_ps(round32x(x + (blk + k) * 32, _mm512_set1_ps(id[k]), a->q + (blk + k) * 32));
        const __m512i sums = _mm512_castps_si512(sum16i(sv));
        _mm512_storeu_ps(a->d + blk, d);
        _mm512_storeu_ps(a->s + blk, _mm512_mul_ps(d, _mm512_cvtepi32_ps(sums)));
        _mm512_storeu_si512(a->isum + blk, sums);
    }
    return blk;
}

/* act_quantize_blocks for one block of 256 (the k-quants' inputs): the same bits, the 16 sums of
 * 16 (bsums) through one TK_TREE16 rather than 32 horizontal reductions. */
static void act_quantize_256(Act *a, const float *x, int64_t blk) {
    const float *xb = x + blk * 256;
    const __m512 sign = _mm512_set1_ps(-0.f);
    __m512 m = _mm512_setzero_ps(), sv[16];
    for (int k = 0; k < 16; k++)
        m = _mm512_max_ps(m, _mm512_andnot_ps(sign, _mm512_loadu_ps(xb + 16 * k)));
    const float d = _mm512_reduce_max_ps(m) / 127.f;
    const __m512 id = _mm512_set1_ps(d > 0.f ? 1.f / d : 0.f);
    for (int k = 0; k < 16; k++) {
        const __m512i i = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * k), id));
        _mm_storeu_si128((__m128i *)(a->q + blk * 256 + 16 * k), _mm512_cvtsepi32_epi8(i));
        sv[4 * (k % 4) + k / 4] = _mm512_castsi512_ps(i);
    }
    _mm256_storeu_si256((__m256i *)(a->bsums + blk * 16), _mm512_cvtepi32_epi16(_mm512_castps_si512(sum16i(sv))));
    a->d[blk] = d;
}
#endif

/* Blocks [blk0, blk1) of x (a->B, a->n) float32 into a (a->kind set), each `kind` elements:
 * scale amax / 127, q = round(x / scale). */
static void act_quantize_blocks(Act *a, const float *x, int64_t blk0, int64_t blk1) {
    const int kind = a->kind;
#if defined(__AVX512F__)
    if (kind == 32)
        blk0 = act_quantize_32x16(a, x, blk0, blk1);
    else
        for (; blk0 < blk1; blk0++)
            act_quantize_256(a, x, blk0);
#endif
    for (int64_t blk = blk0; blk < blk1; blk++) {
        const float *xb = x + blk * kind;
        const float d = absmax(xb, kind) / 127.f, id = d > 0.f ? 1.f / d : 0.f;
        int sum = 0, sums[2];
        for (int i = 0; i < kind; i += 32) {
            round32(xb + i, id, a->q + blk * kind + i, sums);
            sum += sums[0] + sums[1];
            if (kind == 256) /* sums per 16 */
                a->bsums[blk * 16 + i / 16] = (int16_t)sums[0], a->bsums[blk * 16 + i / 16 + 1] = (int16_t)sums[1];
        }
        a->d[blk] = d;
        if (kind == 32) {
            a->s[blk] = d * (float)sum;
            a->isum[blk] = sum;
        }
    }
}

/* x (B, n) float32 -> a, in blocks of `kind` (a no-op when a already holds it). */
static void act_quantize(Act *a, const float *x, int B, int n, int kind) {
    if (a->kind == kind && a->B == B && a->n == n)
        return;
    a->B = B, a->n = n, a->kind = kind;
    act_quantize_blocks(a, x, 0, (int64_t)B * n / kind);
}

/* Rows [b0, b1) of x (a->B, a->n) into a, whose B, n and kind the caller has set: threads that
 * share one Act each quantize their own rows (then a barrier). */
static void act_quantize_rows(Act *a, const float *x, int b0, int b1) {
    act_quantize_blocks(a, x, (int64_t)b0 * a->n / a->kind, (int64_t)b1 * a->n / a->kind);
}

/* q4_k / q5_k: the 8 six-bit scales and mins of a block's 12 scale bytes. */
static inline void scale_min_k4(const uint8_t *s, uint8_t *sc, uint8_t *mn) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        mn[j] = s[j + 4] & 63;
        sc[j + 4] = (s[j + 8] & 0xF) | ((s[j] >> 6) << 4);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4);
    }
}

#if defined(__AVX2__)
static inline float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(a, _mm_movehdup_ps(a)));
}

/* 8 int32 lanes, each the sum of 4 products of unsigned bytes u and signed bytes s (u . s over
 * the 32 bytes when summed). maddubs' int16 pairs cannot saturate here: u <= 128, |s| <= 127. */
static inline __m256i dot_us(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}

/* acc + the int16 pairs of u . s, each multiplied by its lane's int16 scale (K-type sub-blocks). */
static inline __m256i dot_us_scaled(__m256i acc, __m256i u, __m256i s, __m256i scale) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, s), scale);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), scale));
#endif
}

static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 32 bytes, byte i 0xFF where bit i of x is set: byte i/8 of x into byte i (shuffle), every bit
 * but i % 8 set (or), all-ones compare. */
static inline __m256i bits_to_bytes(uint32_t x) {
    const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    const __m256i v = _mm256_or_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)x), spread), others);
    return _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
}
#define LOW4 _mm256_set1_epi8(0x0F)
#endif

/* How far ahead (bytes) the quantized row loops prefetch (as PREFETCH for float rows). */
#define QPREFETCH 2048

/* ---- 32-element types: out[b] = sum over blocks of dw dx (w . x), with w's offset or min ---- */

static inline __attribute__((always_inline)) void q8_0_rows(const uint8_t *w, const Act *a, int nblk, const int nb,
                                                            float *out) {
    const int64_t n = a->n;
#if defined(__AVX2__)
    __m256 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += 34) {
        __builtin_prefetch(w + QPREFETCH);
        const float dw = fp16(w);
        const __m256i wv = load32(w + 2), aw = _mm256_sign_epi8(wv, wv);
        for (int b = 0; b < nb; b++) {
            const __m256i xv = load32(a->q + b * n + 32 * i);
            const __m256i p = dot_us(aw, _mm256_sign_epi8(xv, wv));
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a->d[b * n / 32 + i]), acc[b]);
        }
    }
    for (int b = 0; b < nb; b++)
        out[b] = hsum8(acc[b]);
#else
    for (int b = 0; b < nb; b++) {
        float sum = 0.f;
        for (int i = 0; i < nblk; i++) {
            const int8_t *wq = (const int8_t *)(w + 34 * i + 2), *xq = a->q + b * n + 32 * i;
            int dot = 0;
            for (int k = 0; k < 32; k++)
                dot += wq[k] * xq[k];
            sum += fp16(w + 34 * i) * a->d[b * n / 32 + i] * (float)dot;
        }
        out[b] = sum;
    }
#endif
}

/* q4_0 (offset 8, min 0), q4_1 (offset 0, min m), and with `five` q5_0 (offset 16) and q5_1 (min
 * m): q4's nibbles with a fifth bit, bit i of the 32-bit qh for element i (llama.cpp falls back to
 * q5 for rows that are not a multiple of 256 in K-quant files). A block is dw (fp16), m (fp16,
 * affine types), qh (five), then 16 bytes of nibbles: elements 0..15 the low ones, 16..31 the high.
 * dw dx (u . x) - offset dw s + m s, s = dx sum(x q). `affine` and `five` are constants at every
 * call, so each type gets its own straight-line loop. */
static inline __attribute__((always_inline)) void q45_rows(const uint8_t *w, const Act *a, int nblk, const int nb,
                                                           float *out, const int affine, const int five) {
    const int64_t n = a->n;
    const int at = affine ? 4 : 2, qs_at = at + (five ? 4 : 0), size = qs_at + 16;
    const float offset = five ? -16.f : -8.f;
    float corr[4] = {0};
#if defined(__AVX2__)
    __m256 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += size) {
        __builtin_prefetch(w + QPREFETCH);
        const float dw = fp16(w), c = affine ? fp16(w + 2) : offset * dw;
        const __m128i raw = _mm_loadu_si128((const __m128i *)(w + qs_at));
        __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), LOW4);
        if (five) {
            uint32_t qh;
            memcpy(&qh, w + at, 4);
            u = _mm256_or_si256(u, _mm256_and_si256(bits_to_bytes(qh), _mm256_set1_epi8(16)));
        }
        for (int b = 0; b < nb; b++) {
            const __m256i p = dot_us(u, load32(a->q + b * n + 32 * i));
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a->d[b * n / 32 + i]), acc[b]);
            corr[b] += c * a->s[b * n / 32 + i];
        }
    }
    for (int b = 0; b < nb; b++)
        out[b] = hsum8(acc[b]) + corr[b];
#else
    for (int b = 0; b < nb; b++) {
        float sum = 0.f;
        for (int i = 0; i < nblk; i++) {
            const uint8_t *blk = w + (int64_t)size * i, *qs = blk + qs_at;
            uint32_t qh = 0;
            if (five)
                memcpy(&qh, blk + at, 4);
            const int8_t *xq = a->q + b * n + 32 * i;
            int dot = 0;
            for (int k = 0; k < 16; k++)
                dot += ((qs[k] & 0xF) | ((qh >> k) & 1) << 4) * xq[k] +
                       ((qs[k] >> 4) | ((qh >> (k + 16)) & 1) << 4) * xq[k + 16];
            const float dw = fp16(blk), c = affine ? fp16(blk + 2) : offset * dw;
            sum += dw * a->d[b * n / 32 + i] * (float)dot;
            corr[b] += c * a->s[b * n / 32 + i];
        }
        out[b] = sum + corr[b];
    }
#endif
}

/* ---- K-types: per 256 block, dw dx sum_j sc_j (q_j . x_j) - (offset or min terms) ---- */

/* q4_k (qh NULL) and q5_k: 4 chunks of 64 elements; chunk j's 32 qs bytes hold sub-block 2j in
 * their low nibbles and 2j + 1 in their high ones; q5_k's fifth bit of element i of sub-block k
 * is bit k of qh[i]. Value d sc q - dmin mn. */
static inline __attribute__((always_inline)) void k4_rows(const uint8_t *w, const Act *a, int nblk, const int nb,
                                                          float *out, const int q5) {
    const int64_t n = a->n;
    const int size = q5 ? 176 : 144;
    float corr[4] = {0};
#if defined(__AVX2__)
    __m256 acc[4] = {0};
#else
    float acc[4] = {0};
#endif
    for (int i = 0; i < nblk; i++, w += size) {
        __builtin_prefetch(w + QPREFETCH);
        __builtin_prefetch(w + QPREFETCH + 64);
        const float d = fp16(w), dmin = fp16(w + 2);
        uint8_t sc[8], mn[8];
        scale_min_k4(w + 4, sc, mn);
        const uint8_t *qh = w + 16, *qs = w + (q5 ? 48 : 16);
#if defined(__AVX2__)
        /* The mins' term, - dmin dx sum_j mn_j (bsum_2j + bsum_2j+1), as one madd of the input's 16
         * sums per 16 with mn_j in lanes 2j, 2j + 1, straight into acc (scalar, it cost as much as
         * the block's dot products at four input rows). */
        const __m256i mn16 = _mm256_cvtepu8_epi16(
            _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)mn), _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
        for (int b = 0; b < nb; b++) {
            const __m256i m = _mm256_madd_epi16(load32(a->bsums + (b * n / 256 + i) * 16), mn16);
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m), _mm256_set1_ps(-dmin * a->d[b * n / 256 + i]), acc[b]);
        }
#else
        for (int b = 0; b < nb; b++) {
            const int16_t *bs = a->bsums + (b * n / 256 + i) * 16;
            int m = 0;
            for (int j = 0; j < 8; j++)
                m += mn[j] * (bs[2 * j] + bs[2 * j + 1]);
            corr[b] -= dmin * a->d[b * n / 256 + i] * (float)m;
        }
#endif
#if defined(__AVX2__)
        __m256i isum[4] = {0};
        const __m256i hv = q5 ? load32(qh) : _mm256_setzero_si256();
        for (int j = 0; j < 4; j++) {
            const __m256i raw = load32(qs + 32 * j);
            __m256i lo = _mm256_and_si256(raw, LOW4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), LOW4);
            if (q5) { /* bit 2j (2j + 1) of qh becomes the low (high) nibble's bit 4 */
                const __m256i bl = _mm256_set1_epi8((char)(1 << (2 * j))), bh = _mm256_set1_epi8((char)(2 << (2 * j)));
                const __m256i sixteen = _mm256_set1_epi8(16);
                lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hv, bl), bl), sixteen));
                hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(hv, bh), bh), sixteen));
            }
            const __m256i sl = _mm256_set1_epi16(sc[2 * j]), sh = _mm256_set1_epi16(sc[2 * j + 1]);
            for (int b = 0; b < nb; b++) {
                const int8_t *x = a->q + b * n + 256 * i + 64 * j;
                isum[b] = dot_us_scaled(isum[b], lo, load32(x), sl);
                isum[b] = dot_us_scaled(isum[b], hi, load32(x + 32), sh);
            }
        }
        for (int b = 0; b < nb; b++)
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[b]), _mm256_set1_ps(d * a->d[b * n / 256 + i]), acc[b]);
#else
        for (int b = 0; b < nb; b++) {
            const int8_t *x = a->q + b * n + 256 * i;
            int isum = 0;
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 32; k++) {
                    int lo = qs[32 * j + k] & 0xF, hi = qs[32 * j + k] >> 4;
                    if (q5) {
                        lo |= ((qh[k] >> (2 * j)) & 1) << 4;
                        hi |= ((qh[k] >> (2 * j + 1)) & 1) << 4;
                    }
                    isum += sc[2 * j] * lo * x[64 * j + k] + sc[2 * j + 1] * hi * x[64 * j + 32 + k];
                }
            acc[b] += d * a->d[b * n / 256 + i] * (float)isum;
        }
#endif
    }
    for (int b = 0; b < nb; b++)
#if defined(__AVX2__)
        out[b] = hsum8(acc[b]) + corr[b];
#else
        out[b] = acc[b] + corr[b];
#endif
}

/* q6_k: two halves of 128 elements, each from 64 ql bytes and 32 qh bytes: element l + 32 k of a
 * half (k = 0..3) is ql[l + 32 (k % 2)]'s low (k < 2) or high nibble with bits 2k, 2k + 1 of qh[l]
 * above; 16 sub-blocks of 16 with int8 scales. Value d sc (q - 32). */
static inline __attribute__((always_inline)) void q6_k_rows(const uint8_t *w, const Act *a, int nblk, const int nb,
                                                            float *out) {
    const int64_t n = a->n;
#if defined(__AVX2__)
    __m256 acc[4] = {0};
#else
    float acc[4] = {0};
#endif
    for (int i = 0; i < nblk; i++, w += 210) {
        __builtin_prefetch(w + QPREFETCH);
        __builtin_prefetch(w + QPREFETCH + 64);
        const int8_t *sc = (const int8_t *)(w + 192);
        const float d = fp16(w + 208);
#if defined(__AVX2__)
        __m256i isum[4];
        /* the offset: 32 sum_j sc_j bsum_j, subtracted from the start */
        const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        for (int b = 0; b < nb; b++)
            isum[b] = _mm256_slli_epi32(
                _mm256_madd_epi16(load32(a->bsums + (b * n / 256 + i) * 16), _mm256_sub_epi16(_mm256_setzero_si256(), sc16)),
                5);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
            const __m256i la = load32(ql), lb = load32(ql + 32), hv = load32(qh), m = _mm256_set1_epi8(0x30);
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(la, LOW4), _mm256_and_si256(_mm256_slli_epi16(hv, 4), m)),
                _mm256_or_si256(_mm256_and_si256(lb, LOW4), _mm256_and_si256(_mm256_slli_epi16(hv, 2), m)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), LOW4), _mm256_and_si256(hv, m)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), LOW4),
                                _mm256_and_si256(_mm256_srli_epi16(hv, 2), m)),
            };
            for (int k = 0; k < 4; k++) {
                const int8_t *s2 = sc + 8 * h + 2 * k; /* the two sub-blocks of 16 */
                const __m256i scale = _mm256_set_m128i(_mm_set1_epi16(s2[1]), _mm_set1_epi16(s2[0]));
                for (int b = 0; b < nb; b++)
                    isum[b] = dot_us_scaled(isum[b], q[k], load32(a->q + b * n + 256 * i + 128 * h + 32 * k), scale);
            }
        }
        for (int b = 0; b < nb; b++)
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[b]), _mm256_set1_ps(d * a->d[b * n / 256 + i]), acc[b]);
#else
        for (int b = 0; b < nb; b++) {
            const int8_t *x = a->q + b * n + 256 * i;
            int isum = 0;
            for (int h = 0; h < 2; h++)
                for (int l = 0; l < 32; l++) {
                    const uint8_t *ql = w + 64 * h, *qh = w + 128 + 32 * h;
                    const int q[4] = {
                        (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                        (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                        (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                        (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                    };
                    for (int k = 0; k < 4; k++)
                        isum += sc[8 * h + 2 * k + l / 16] * (q[k] - 32) * x[128 * h + 32 * k + l];
                }
            acc[b] += d * a->d[b * n / 256 + i] * (float)isum;
        }
#endif
    }
    for (int b = 0; b < nb; b++)
#if defined(__AVX2__)
        out[b] = hsum8(acc[b]);
#else
        out[b] = acc[b];
#endif
}

/* One weight row of `type` against nb (1..4) quantized input rows: out[b]. */
static inline __attribute__((always_inline)) void qrow_nb(int type, const uint8_t *w, const Act *a, const int nb,
                                                          float *out) {
    const int nblk = a->n / block_elems(type);
    switch (type) {
    case T_Q8_0: q8_0_rows(w, a, nblk, nb, out); break;
    case T_Q4_0: q45_rows(w, a, nblk, nb, out, 0, 0); break;
    case T_Q4_1: q45_rows(w, a, nblk, nb, out, 1, 0); break;
    case T_Q5_0: q45_rows(w, a, nblk, nb, out, 0, 1); break;
    case T_Q5_1: q45_rows(w, a, nblk, nb, out, 1, 1); break;
    case T_Q4_K: k4_rows(w, a, nblk, nb, out, 0); break;
    case T_Q5_K: k4_rows(w, a, nblk, nb, out, 1); break;
    default: q6_k_rows(w, a, nblk, nb, out);
    }
}

/* q8_0, q4_0, q5_0, q4_k, q6_k rows interleaved eight at a time (type | T_X8): x8_rows; q8_0,
 * q4_0, q5_0 and q4_k sixteen at a time (type | T_X16): x16_rows. */
#include "repack.h"
#include "repack16.h"

/* y[b * ldy + r] = W row r . input row b, for weight rows r in [r0, r1) and input rows b in
 * [b0, b0 + nb) of a (nb 1..4). W is the weight's first row, rows row_bytes(type, a->n) apart.
 * The one call a matrix-matrix product (tk_matmul) makes per tile of weight rows and group of
 * input rows: the tile's rows stay in L1/L2 across the groups, the group's rows in L1 across the
 * tile's rows. A repacked weight (type | T_X8) needs r0 a multiple of 8 and r1 a multiple of 8 or
 * its last row (its groups of 8 rows are read whole); type | T_X16 the same with 16. */
static void qrows_tile(int type, const uint8_t *W, int r0, int r1, const Act *a, int b0, int nb, float *y,
                       int64_t ldy) {
    Act sub = *a; /* input rows b0.. */
    sub.q += (int64_t)b0 * a->n;
    sub.d += (int64_t)b0 * a->n / a->kind;
    sub.s += (int64_t)b0 * a->n / 32;
    sub.isum += (int64_t)b0 * a->n / 32;
    sub.bsums += (int64_t)b0 * a->n / 16;
    if (type & T_X8) {
        x8_rows(type, W, r0, r1, &sub, b0, nb, y, ldy);
        return;
    }
    if (type & T_X16) {
        x16_rows(type, W, r0, r1, &sub, b0, nb, y, ldy);
        return;
    }
    const int64_t rb = row_bytes(type, a->n);
    float out[4];
    for (int r = r0; r < r1; r++) {
        switch (nb) { /* a constant nb for each inlined kernel */
        case 1: qrow_nb(type, W + r * rb, &sub, 1, out); break;
        case 2: qrow_nb(type, W + r * rb, &sub, 2, out); break;
        case 3: qrow_nb(type, W + r * rb, &sub, 3, out); break;
        default: qrow_nb(type, W + r * rb, &sub, 4, out);
        }
        for (int b = 0; b < nb; b++)
            y[(int64_t)(b0 + b) * ldy + r] = out[b];
    }
}
