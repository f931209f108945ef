/* Two neighbouring groups of 8 interleaved rows (repack.h) as one group of 16 in 512-bit registers,
 * for q8_0, q4_0, q5_0, q4_k and q6_k, where the compiler targets AVX-512 (F, BW and VNNI). Included by
 * repack.h.
 *
 * Why: at four input rows an 8-row block of 32 columns takes 32 dot products, and each takes its 4
 * input bytes by a broadcast load; with the block's own loads that is ~41 loads a block, and Zen 4
 * feeds its vector unit at most two loads a cycle: ~20.5 cycles, on top of which the dot products,
 * multiplies and FMAs need their own 20 on the two pipes they share (bench/pipes.py). Measured, the
 * 256-bit kernel took 26-27 cycles a block in cache. A 512-bit dot product with one broadcast load
 * serves 16 rows, which halves the broadcasts; 512-bit dot products run at half the rate of 256-bit
 * ones, so the pipes' 20 cycles stay, and those are what is left: ~21-22 cycles a block.
 *
 * The weights keep repack.h's layout: a register's low half is group A's 32 bytes, its high half the
 * same bytes of group B, which starts `gap` bytes further on (8 rows). So lane r < 8 is A's row r,
 * lane 8 + r is B's, and every lane does x8_group's operations in x8_group's order: the products are
 * the same floats, bit for bit, as two calls of x8_group.
 *
 * The callers take this path at two input rows or more. One input row is bound by memory, and there
 * two streams (A's and B's) read 7-20 % slower than x8_group's one (a 16384 x 5632 product, two
 * threads): the hardware prefetcher follows one stream best.
 */

/* TK_NO_X16: the tests' build of the 8-row kernels alone on a CPU that has AVX-512 */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && !defined(TK_NO_X16)
#define X16 1

/* Whether x16_group takes this (plain) type. */
static inline int x16_type(const int type) {
    return type == T_Q8_0 || type == T_Q4_0 || type == T_Q5_0 || type == T_Q4_K || type == T_Q6_K;
}

/* Two groups' 256-bit registers as one (A's the low half). */
static inline __m512i x16_join(const __m256i a, const __m256i b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

/* 32 bytes at w (group A) and at w + gap (group B) as one register. */
static inline __m512i x16_load(const uint8_t *w, const int64_t gap) {
    return x16_join(load32(w), load32(w + gap));
}

/* The 16 rows' fp16 scales of a block as one float vector. */
static inline __m512 x16_scales(const uint8_t *w, const int64_t gap) {
    const __m128i a = _mm_loadu_si128((const __m128i *)w), b = _mm_loadu_si128((const __m128i *)(w + gap));
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1));
}

/* s + dpbusd(u, the 4 input bytes at x in every lane), the broadcast folded into the instruction. */
static inline __m512i x16_dpbusd(__m512i s, __m512i u, const int8_t *x) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(u), "m"(*(const int32_t *)x));
    return s;
}

/* x8_dot for 16 rows (VNNI): s + the rows' dot products with input bytes x[0..31], in two chains. */
static inline __attribute__((always_inline)) __m512i x16_dot(__m512i s, const __m512i *q, const int8_t *x) {
    __m512i t = _mm512_setzero_si512();
    for (int c = 0; c < 8; c += 2) {
        s = x16_dpbusd(s, q[c], x + 4 * c);
        t = x16_dpbusd(t, q[c + 1], x + 4 * c + 4);
    }
    return _mm512_add_epi32(s, t);
}

/* x8_unpack for 16 rows (VNNI: q8_0's stored bytes are used as they are). */
static inline __attribute__((always_inline)) void x16_unpack(const int type, const uint8_t *w, const int64_t gap,
                                                             __m512i *q) {
    if (type == T_Q8_0) {
        for (int c = 0; c < 8; c++)
            q[c] = x16_load(w + 16 + 32 * c, gap);
        return;
    }
    const uint8_t *qs = w + (type == T_Q5_0 ? 48 : 16);
    const __m512i low4 = _mm512_set1_epi8(0x0F), b4 = _mm512_set1_epi8(16);
    const __m512i hv = type == T_Q5_0 ? x16_load(w + 16, gap) : _mm512_setzero_si512();
    for (int c = 0; c < 4; c++) {
        const __m512i raw = x16_load(qs + 32 * c, gap);
        q[c] = _mm512_and_si512(raw, low4);
        q[c + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
        if (type == T_Q5_0) {
            q[c] = _mm512_or_si512(q[c], _mm512_and_si512(_mm512_slli_epi16(hv, 4 - c), b4));
            q[c + 4] = _mm512_or_si512(q[c + 4], _mm512_and_si512(_mm512_srli_epi16(hv, c), b4));
        }
    }
}

/* x8_put for 16 rows. */
static inline __attribute__((always_inline)) void x16_put(const X8Out o, const int nb, const __m512 *acc) {
    for (int b = 0; b < nb; b++) {
        __m512 v = o.bias ? _mm512_add_ps(acc[b], _mm512_loadu_ps(o.bias)) : acc[b];
        if (o.accumulate)
            v = _mm512_add_ps(_mm512_loadu_ps(o.y + o.ld * b), v);
        _mm512_storeu_ps(o.y + o.ld * b, v);
    }
}

/* o: row r of the 16 (group A at w, B at w + gap) . input row b of a, for b < nb (1..4). */
static inline __attribute__((always_inline)) void x16_group(const int type, const uint8_t *w, const int64_t gap,
                                                            const Act *a, const int nb, const X8Out o) {
    const int nblk = (int)(a->n / 32), size = x8_block_bytes(type);
    const int offset = type == T_Q8_0 ? 128 : type == T_Q4_0 ? 8 : 16; /* as in x8_group */
    __m512 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += size) {
        x8_prefetch(w, size, nb);
        x8_prefetch(w + gap, size, nb);
        __m512i q[8];
        x16_unpack(type, w, gap, q);
        const __m512 dw = x16_scales(w, gap);
        for (int b = 0; b < nb; b++) {
            const int64_t blk = b * nblk + i;
            const int8_t *x = a->q + 32 * blk;
            const __m512i s = x16_dot(_mm512_set1_epi32(-offset * a->isum[blk]), q, x);
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(a->d[blk])), acc[b]);
        }
    }
    x16_put(o, nb, acc);
}

/* x8_q4_k_group for 16 rows: each group's scales and mins decoded as x8_q4_k_scales does, then the
 * quants and sums of both groups in one register. */
static inline __attribute__((always_inline)) void x16_q4_k_group(const uint8_t *w, const int64_t gap, const Act *a,
                                                                 const int nb, const X8Out o) {
    const int64_t n = a->n;
    const int nblk = (int)(n / 256);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    __m512 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += 1152) {
        x8_prefetch(w, 1152, nb);
        x8_prefetch(w + gap, 1152, nb);
        const __m512 d = x16_scales(w, gap), dmin = x16_scales(w + 16, gap);
        __m512i sc[8], mnp[4];
        {
            __m256i sa[8], ma[4], sb[8], mb[4];
            x8_q4_k_scales(w, sa, ma);
            x8_q4_k_scales(w + gap, sb, mb);
            for (int k = 0; k < 8; k++)
                sc[k] = x16_join(sa[k], sb[k]);
            for (int j = 0; j < 4; j++)
                mnp[j] = x16_join(ma[j], mb[j]);
        }
        __m512i isum[4] = {0};
        for (int j = 0; j < 4; j++) {
            __m512i lo[8], hi[8];
            for (int c = 0; c < 8; c++) {
                const __m512i raw = x16_load(w + 128 + 32 * (8 * j + c), gap);
                lo[c] = _mm512_and_si512(raw, low4);
                hi[c] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
            }
            for (int b = 0; b < nb; b++) {
                const int8_t *x = a->q + b * n + 256 * i + 64 * j;
                const __m512i s0 = x16_dot(_mm512_setzero_si512(), lo, x);
                const __m512i s1 = x16_dot(_mm512_setzero_si512(), hi, x + 32);
                isum[b] = _mm512_add_epi32(isum[b], _mm512_add_epi32(_mm512_mullo_epi32(s0, sc[2 * j]),
                                                                     _mm512_mullo_epi32(s1, sc[2 * j + 1])));
            }
        }
        for (int b = 0; b < nb; b++) { /* the mins' term as x8_q4_k_group computes it */
            const int64_t blk = b * nblk + i;
            const __m128i s32 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(a->bsums + blk * 16)),
                                               _mm_loadu_si128((const __m128i *)(a->bsums + blk * 16 + 8)));
            const __m512i sums = _mm512_broadcast_i32x4(s32);
            __m512i msum = _mm512_madd_epi16(mnp[0], _mm512_shuffle_epi32(sums, 0x00));
            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(mnp[1], _mm512_shuffle_epi32(sums, 0x55)));
            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(mnp[2], _mm512_shuffle_epi32(sums, 0xaa)));
            msum = _mm512_add_epi32(msum, _mm512_madd_epi16(mnp[3], _mm512_shuffle_epi32(sums, 0xff)));
            const __m512 dx = _mm512_set1_ps(a->d[blk]);
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[b]), _mm512_mul_ps(d, dx), acc[b]);
            acc[b] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmin, dx), acc[b]);
        }
    }
    x16_put(o, nb, acc);
}

/* x8_q6_k_group for 16 rows (the layout: repack.h's X8_Q6_QL / X8_Q6_QH). */
static inline __attribute__((always_inline)) void x16_q6_k_group(const uint8_t *w, const int64_t gap, const Act *a,
                                                                 const int nb, const X8Out o) {
    const int64_t n = a->n;
    const int nblk = (int)(n / 256);
    const __m512i m30 = _mm512_set1_epi8(0x30), low4 = _mm512_set1_epi8(0x0F);
    __m512 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += 1680) {
        x8_prefetch_block(w, 1680); /* at one input row too, as x8_q6_k_group asks */
        x8_prefetch_block(w + gap, 1680);
        const __m512 d = x16_scales(w, gap);
        __m512i isum[4]; /* the offsets' part, -32 sum_sb sc_sb bsum_sb, as x8_q6_k_group makes it */
        {
            __m512i scp[8];
            for (int p = 0; p < 8; p++) {
                const __m128i va = _mm_loadu_si128((const __m128i *)(w + 16 + 16 * p));
                const __m128i vb = _mm_loadu_si128((const __m128i *)(w + gap + 16 + 16 * p));
                scp[p] = x16_join(_mm256_cvtepi8_epi16(_mm_unpacklo_epi8(va, _mm_srli_si128(va, 8))),
                                  _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(vb, _mm_srli_si128(vb, 8))));
            }
            for (int b = 0; b < nb; b++) {
                const int16_t *bs = a->bsums + (b * nblk + i) * 16;
                __m512i m = _mm512_setzero_si512();
                for (int p = 0; p < 8; p++) {
                    int32_t pair;
                    memcpy(&pair, bs + 2 * p, 4);
                    m = _mm512_add_epi32(m, _mm512_madd_epi16(scp[p], _mm512_set1_epi32(pair)));
                }
                isum[b] = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_setzero_si512(), m), 5);
            }
        }
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++) {
                __m512i q[8];
                for (int c = 0; c < 8; c++) {
                    const __m512i ql = x16_load(w + X8_Q6_QL(h, j % 2, c), gap), qh = x16_load(w + X8_Q6_QH(h, c), gap);
                    const __m512i lo = j < 2 ? _mm512_and_si512(ql, low4) : _mm512_and_si512(_mm512_srli_epi16(ql, 4), low4);
                    const __m512i hi = j == 0 ? _mm512_slli_epi16(qh, 4)
                                       : j == 1 ? _mm512_slli_epi16(qh, 2)
                                       : j == 2 ? qh
                                                : _mm512_srli_epi16(qh, 2);
                    q[c] = _mm512_or_si512(lo, _mm512_and_si512(hi, m30));
                }
                for (int half = 0; half < 2; half++) {
                    const int sb = 8 * h + 2 * j + half;
                    const __m128i sab = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(w + 16 + 8 * sb)),
                                                           _mm_loadl_epi64((const __m128i *)(w + gap + 16 + 8 * sb)));
                    const __m512i sc = _mm512_cvtepi8_epi32(sab);
                    for (int b = 0; b < nb; b++) {
                        const int8_t *x = a->q + b * n + 256 * i + 16 * sb;
                        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
                        s0 = x16_dpbusd(s0, q[4 * half], x);
                        s1 = x16_dpbusd(s1, q[4 * half + 1], x + 4);
                        s0 = x16_dpbusd(s0, q[4 * half + 2], x + 8);
                        s1 = x16_dpbusd(s1, q[4 * half + 3], x + 12);
                        isum[b] = _mm512_add_epi32(isum[b], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc));
                    }
                }
            }
        for (int b = 0; b < nb; b++)
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[b]), _mm512_mul_ps(d, _mm512_set1_ps(a->d[b * nblk + i])),
                                     acc[b]);
    }
    x16_put(o, nb, acc);
}

/* x16_group with the type and nb as constants. */
static inline void x16_group_any(int type, const uint8_t *w, const int64_t gap, const Act *a, int nb,
                                 const X8Out o) {
#define X16_NB(T)                                    \
    switch (nb) {                                    \
    case 1: x16_group(T, w, gap, a, 1, o); break;    \
    case 2: x16_group(T, w, gap, a, 2, o); break;    \
    case 3: x16_group(T, w, gap, a, 3, o); break;    \
    default: x16_group(T, w, gap, a, 4, o);          \
    }
    switch (type) {
    case T_Q8_0: X16_NB(T_Q8_0) break;
    case T_Q4_0: X16_NB(T_Q4_0) break;
    case T_Q4_K:
        switch (nb) {
        case 1: x16_q4_k_group(w, gap, a, 1, o); break;
        case 2: x16_q4_k_group(w, gap, a, 2, o); break;
        case 3: x16_q4_k_group(w, gap, a, 3, o); break;
        default: x16_q4_k_group(w, gap, a, 4, o);
        }
        break;
    case T_Q6_K:
        switch (nb) {
        case 1: x16_q6_k_group(w, gap, a, 1, o); break;
        case 2: x16_q6_k_group(w, gap, a, 2, o); break;
        case 3: x16_q6_k_group(w, gap, a, 3, o); break;
        default: x16_q6_k_group(w, gap, a, 4, o);
        }
        break;
    default: X16_NB(T_Q5_0)
    }
#undef X16_NB
}
#else
#define X16 0
static inline int x16_type(const int type) { return (void)type, 0; }
static inline void x16_group_any(int type, const uint8_t *w, const int64_t gap, const Act *a, int nb,
                                 const X8Out o) {
    (void)type, (void)w, (void)gap, (void)a, (void)nb, (void)o;
}
#endif
