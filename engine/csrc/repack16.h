/* Quantized weight rows repacked sixteen at a time (repack.py's repack_rows with wide), included
 * by quant.h after repack.h, whose eight-row groups it pairs.
 *
 * Why: at four input rows the eight-row kernel (x8_group) takes ~26 cycles a block of 8 rows on
 * Zen 4, above its ~20 cycles of dot products, because the vector unit takes two loads a cycle and
 * every dot product's input broadcast is a load: ~41 loads a block. With two groups' blocks side by
 * side, one 512-bit register holds 4 bytes of each of 16 rows, so one broadcast of the input's 4
 * bytes feeds 16 rows: half the loads per row, ~20.5 cycles per 8 rows (bench/README, "Four rows:
 * the vector unit's two loads a cycle"). Two groups read from two places (pairing x8 groups as they
 * lie) made the 1B four-row step 1.6x slower: here the pair is one stream.
 *
 * Layout of a weight of O rows of type `ggml | T_X16`: rows 16 p .. 16 p + 15 (p < O / 16) as pair
 * p, then, where O % 16 >= 8, one eight-row group as repack.h lays it out, then the last O % 8 rows
 * plain; each takes the bytes of its plain rows, so a part starts where it would plain. Pair p,
 * block i, is the eight-row blocks A (rows 16 p..) and B (rows 16 p + 8..) area by area
 * (x16_areas): each area of A and B cut in units, A's unit k then B's unit k. The units are what
 * the kernel loads as one half of a register: the fp16 scales in 16 bytes (so 32 bytes are the 16
 * rows' scales in order), quants in 32 bytes (a 64-byte register: A's 8 rows in its low half, B's
 * in its high), q4_k's packed sub-block scales in 8 bytes (16 bytes are one sub-block's 16 rows).
 *
 * Built only with AVX-512 (F, BW, VL, VNNI: x16_kernels() says so at run time), and loading lays a
 * weight out this way only then (repack.py asks tk_x16); q6_k keeps eight rows (its kernel is
 * not repacked at load either). Callers give row ranges starting at a multiple of 16 (else the
 * pair is computed and part kept) and ending at one or at the weight's last row.
 */

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
#define X16_KERNELS 1
#else
#define X16_KERNELS 0
#endif

/* An eight-row block's areas (bytes, unit): in order, covering x8_block_bytes(type). Returns how many. */
static int x16_areas(int type, int len[5], int unit[5]) {
    static const int q8[] = {16, 16, 256, 32}, q4[] = {16, 16, 128, 32}, q5[] = {16, 16, 32, 32, 128, 32};
    static const int k4[] = {16, 16, 16, 16, 64, 8, 32, 8, 1024, 32};
    const int *t = type == T_Q8_0 ? q8 : type == T_Q4_0 ? q4 : type == T_Q5_0 ? q5 : k4;
    const int n = type == T_Q8_0 || type == T_Q4_0 ? 2 : type == T_Q5_0 ? 3 : 5;
    for (int k = 0; k < n; k++)
        len[k] = t[2 * k], unit[k] = t[2 * k + 1];
    return n;
}

/* Two eight-row blocks a (rows 0-7) and b (rows 8-15) -> one sixteen-row block dst (2 x8_block_bytes). */
static void x16_pack_block(int type, const uint8_t *a, const uint8_t *b, uint8_t *dst) {
    int len[5], unit[5];
    const int n = x16_areas(type, len, unit);
    for (int k = 0, at = 0; k < n; at += len[k], k++)
        for (int u = 0; u < len[k]; u += unit[k]) {
            memcpy(dst + 2 * at + 2 * u, a + at + u, unit[k]);
            memcpy(dst + 2 * at + 2 * u + unit[k], b + at + u, unit[k]);
        }
}

#if X16_KERNELS
/* s + dpbusd(u, the 4 input bytes at x in all 16 lanes): the broadcast folded in ({1to16}), as x8_dpbusd. */
static inline __m512i x16_dpbusd(__m512i s, __m512i u, const int8_t *x) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(s) : "v"(u), "m"(*(const int32_t *)x));
    return s;
}

/* The 16 rows' fp16 scales at w as floats. */
static inline __m512 x16_scales(const uint8_t *w) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w)); }

static inline __m512i load64(const void *p) { return _mm512_loadu_si512(p); }

/* s + the 16 rows' dot products with input bytes x[0..31]: x8_dot's two chains, 16 lanes wide. */
static inline __attribute__((always_inline)) __m512i x16_dot(__m512i s, const __m512i *q, const int8_t *x) {
    __m512i t = _mm512_setzero_si512();
    for (int c = 0; c < 8; c += 2) {
        s = x16_dpbusd(s, q[c], x + 4 * c);
        t = x16_dpbusd(t, q[c + 1], x + 4 * c + 4);
    }
    return _mm512_add_epi32(s, t);
}

/* y[ld b + r] for the 16 rows r, as x8_put. */
static inline __attribute__((always_inline)) void x16_put(const X8Out o, const int nb, const __m512 *acc) {
    for (int b = 0; b < nb; b++) {
        __m512 v = o.bias ? _mm512_add_ps(acc[b], _mm512_loadu_ps(o.bias)) : acc[b];
        if (o.accumulate)
            v = _mm512_add_ps(_mm512_loadu_ps(o.y + o.ld * b), v);
        _mm512_storeu_ps(o.y + o.ld * b, v);
    }
}

/* x8_group for a pair (q8_0, q4_0, q5_0): the offsets of the areas are twice x8's. */
static inline __attribute__((always_inline)) void x16_group(const int type, const uint8_t *w, const Act *a,
                                                            const int nb, const X8Out o) {
    const int nblk = (int)(a->n / 32), size = 2 * x8_block_bytes(type);
    const int offset = type == T_Q8_0 ? 128 : type == T_Q4_0 ? 8 : 16;
    const __m512i low4 = _mm512_set1_epi8(0x0F), b4 = _mm512_set1_epi8(16);
    __m512 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += size) {
        x8_prefetch(w, size, nb);
        __m512i q[8];
        if (type == T_Q8_0)
            for (int c = 0; c < 8; c++)
                q[c] = load64(w + 32 + 64 * c);
        else {
            const uint8_t *qs = w + (type == T_Q5_0 ? 96 : 32);
            const __m512i hv = type == T_Q5_0 ? load64(w + 32) : _mm512_setzero_si512();
            for (int c = 0; c < 4; c++) {
                const __m512i raw = load64(qs + 64 * c);
                q[c] = _mm512_and_si512(raw, low4);
                q[c + 4] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
                if (type == T_Q5_0) { /* as x8_unpack */
                    q[c] = _mm512_or_si512(q[c], _mm512_and_si512(_mm512_slli_epi16(hv, 4 - c), b4));
                    q[c + 4] = _mm512_or_si512(q[c + 4], _mm512_and_si512(_mm512_srli_epi16(hv, c), b4));
                }
            }
        }
        const __m512 dw = x16_scales(w);
        for (int b = 0; b < nb; b++) {
            const int64_t blk = b * nblk + i;
            const __m512i s = x16_dot(_mm512_set1_epi32(-offset * a->isum[blk]), q, a->q + 32 * blk);
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(a->d[blk])), acc[b]);
        }
    }
    x16_put(o, nb, acc);
}

/* x8_q4_k_group for a pair: d (32 bytes), dmin (32), sub-block s's low scale bytes at 64 + 16 s,
 * the high bits for s % 4 at 192 + 16 (s % 4) (nibble s / 4), register 8 j + c at 256 + 64 (8 j + c). */
static inline __attribute__((always_inline)) void x16_q4_k_group(const uint8_t *w, const Act *a, const int nb,
                                                                 const X8Out o) {
    const int64_t n = a->n;
    const int nblk = (int)(n / 256);
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    __m512 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += 2304) {
        x8_prefetch(w, 2304, nb);
        const __m512 d = x16_scales(w), dmin = x16_scales(w + 32);
        /* the 16 rows' 6-bit scale (int32 lanes, per sub-block) and min pairs (int16, per pair of
         * sub-blocks), decoded as x8_q4_k_group does */
        __m512i sc[8], mnp[4];
        {
            const __m128i l4 = _mm_set1_epi8(0x0F), three = _mm_set1_epi8(3);
            __m128i mn8[8];
            for (int sb = 0; sb < 8; sb++) {
                const __m128i lo = _mm_loadu_si128((const __m128i *)(w + 64 + 16 * sb));
                __m128i hi = _mm_loadu_si128((const __m128i *)(w + 192 + 16 * (sb % 4)));
                hi = _mm_and_si128(sb < 4 ? hi : _mm_srli_epi16(hi, 4), l4);
                const __m128i s8 = _mm_or_si128(_mm_and_si128(lo, l4), _mm_slli_epi16(_mm_and_si128(hi, three), 4));
                mn8[sb] = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(lo, 4), l4),
                                       _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(hi, 2), three), 4));
                sc[sb] = _mm512_cvtepu8_epi32(s8);
            }
            for (int j = 0; j < 4; j++)
                mnp[j] = _mm512_cvtepu8_epi16(_mm256_set_m128i(_mm_unpackhi_epi8(mn8[2 * j], mn8[2 * j + 1]),
                                                               _mm_unpacklo_epi8(mn8[2 * j], mn8[2 * j + 1])));
        }
        __m512i isum[4] = {0};
        for (int j = 0; j < 4; j++) {
            __m512i lo[8], hi[8];
            for (int c = 0; c < 8; c++) {
                const __m512i raw = load64(w + 256 + 64 * (8 * j + c));
                lo[c] = _mm512_and_si512(raw, low4);
                hi[c] = _mm512_and_si512(_mm512_srli_epi16(raw, 4), low4);
            }
            for (int b = 0; b < nb; b++) {
                const int8_t *x = a->q + b * n + 256 * i + 64 * j;
                const __m512i s0 = x16_dot(_mm512_setzero_si512(), lo, x), s1 = x16_dot(_mm512_setzero_si512(), hi, x + 32);
                isum[b] = _mm512_add_epi32(isum[b], _mm512_add_epi32(_mm512_mullo_epi32(s0, sc[2 * j]),
                                                                     _mm512_mullo_epi32(s1, sc[2 * j + 1])));
            }
        }
        for (int b = 0; b < nb; b++) {
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
#endif

/* o: rows 0..15 of the pair at w . input rows 0..nb-1 of a; type: the base type. Without the
 * kernels (never laid out so by loading; tests may) each half is unpacked into an eight-row block
 * and taken by x8_group_any: correct, not fast. */
static void x16_group_any(int type, const uint8_t *w, const Act *a, int nb, const X8Out o) {
#if X16_KERNELS
#define X16_NB(F, ...)                                 \
    switch (nb) {                                      \
    case 1: F(__VA_ARGS__, 1, o); break;               \
    case 2: F(__VA_ARGS__, 2, o); break;               \
    case 3: F(__VA_ARGS__, 3, o); break;               \
    default: F(__VA_ARGS__, 4, o);                     \
    }
    switch (type) {
    case T_Q8_0: X16_NB(x16_group, T_Q8_0, w, a) break;
    case T_Q4_0: X16_NB(x16_group, T_Q4_0, w, a) break;
    case T_Q5_0: X16_NB(x16_group, T_Q5_0, w, a) break;
    default: X16_NB(x16_q4_k_group, w, a)
    }
#undef X16_NB
#else
    int len[5], unit[5];
    const int n_areas = x16_areas(type, len, unit), size = x8_block_bytes(type);
    const int nblk = (int)(a->n / block_elems(type));
    uint8_t *half = malloc((size_t)nblk * size);
    if (!half) { /* no memory for the copy: NaN sums say so rather than garbage */
        for (int b = 0; b < nb; b++)
            for (int r = 0; r < 16; r++)
                o.y[o.ld * b + r] = NAN;
        return;
    }
    for (int h = 0; h < 2; h++) {
        for (int i = 0; i < nblk; i++)
            for (int k = 0, at = 0; k < n_areas; at += len[k], k++)
                for (int u = 0; u < len[k]; u += unit[k])
                    memcpy(half + (int64_t)size * i + at + u, w + (int64_t)2 * size * i + 2 * at + 2 * u + h * unit[k], unit[k]);
        x8_group_any(type, half, a, nb, (X8Out){o.y + 8 * h, o.ld, o.bias ? o.bias + 8 * h : NULL, o.accumulate});
    }
    free(half);
#endif
}

/* qrows_tile for type | T_X16, as x8_rows: pairs, then the eight-row group and the plain tail of
 * the weight's last rows (r1 is a multiple of 16 or the last row, so what lies past the last pair
 * before r1 is that tail). */
static void x16_rows(int type, const uint8_t *W, int r0, int r1, const Act *sub, int b0, int nb, float *y,
                     int64_t ldy) {
    const int base = type & ~T_LAYOUT;
    const int64_t rb = row_bytes(base, sub->n);
    float out[64];
    int r = r0;
    while (r < r1) {
        const int p = r - r % 16; /* the pair holding row r */
        if (p + 16 > r1) { /* the last rows: an eight-row group and the plain tail */
            x8_rows(base | T_X8, W + (int64_t)p * rb, r - p, r1 - p, sub, b0, nb, y + p, ldy);
            return;
        }
        if (r == p) /* the whole pair: straight into y */
            x16_group_any(base, W + p * rb, sub, nb, (X8Out){y + (int64_t)b0 * ldy + p, ldy, NULL, 0});
        else {
            x16_group_any(base, W + p * rb, sub, nb, (X8Out){out, 16, NULL, 0});
            for (int b = 0; b < nb; b++)
                for (int j = r - p; j < 16; j++)
                    y[(int64_t)(b0 + b) * ldy + p + j] = out[16 * b + j];
        }
        r = p + 16;
    }
}

/* ---- the layouts made at load: tk_repack (repack.py's reference implementation, in one pass) ---- */

/* 1 where this build has the sixteen-row kernels (then loading lays weights out so: repack.py). */
int tk_x16(void) { return X16_KERNELS; }

/* dst = the O rows of src (type, n wide) laid out for the step: with wide, pairs of 16 rows
 * (T_X16: q8_0, q4_0, q5_0, q4_k), then a group of 8 where 8 rows or more remain, else every
 * full group of 8 interleaved (T_X8: those and q6_k); the tail copied as it is; on n_threads. dst
 * may be src (each pair or group goes through a thread's scratch copy first: one pass over the
 * weights and no second buffer). Returns 0; -1 for another type or without scratch memory (then
 * nothing is written). */
int tk_repack(int type, const uint8_t *src, uint8_t *dst, int64_t O, int n, int wide, int n_threads) {
    if (type != T_Q8_0 && type != T_Q4_0 && type != T_Q5_0 && type != T_Q4_K && (type != T_Q6_K || wide))
        return -1;
    const int64_t rb = row_bytes(type, n), pairs = wide ? O / 16 : 0, groups = (O - 16 * pairs) / 8;
    const int size = (int)row_bytes(type, block_elems(type)), nblk = n / block_elems(type), xs = 8 * size;
    /* per thread: 16 plain rows (in place) and two eight-row blocks */
    const size_t own_bytes = (size_t)(src == dst ? 16 * rb : 0) + 2 * (size_t)xs;
    uint8_t *scratch = malloc((size_t)n_threads * own_bytes);
    if (!scratch)
        return -1;
#pragma omp parallel num_threads(n_threads)
    {
        uint8_t *own = scratch + (size_t)omp_get_thread_num() * own_bytes, *blocks = own + own_bytes - 2 * xs;
#pragma omp for schedule(static)
        for (int64_t u = 0; u < pairs + groups; u++) { /* a pair (u < pairs) or a group of 8 after them */
            const int64_t r0 = u < pairs ? 16 * u : 16 * pairs + 8 * (u - pairs);
            const int rows = u < pairs ? 16 : 8;
            const uint8_t *from = src + r0 * rb;
            if (src == dst) { /* in place: the plain rows first */
                memcpy(own, from, (size_t)(rows * rb));
                from = own;
            }
            for (int i = 0; i < nblk; i++) {
                const uint8_t *plain[16];
                for (int r = 0; r < rows; r++)
                    plain[r] = from + r * rb + (int64_t)size * i;
                uint8_t *to = dst + r0 * rb + (int64_t)rows * size * i;
                if (rows == 8)
                    x8_pack_block(type, plain, to);
                else {
                    x8_pack_block(type, plain, blocks);
                    x8_pack_block(type, plain + 8, blocks + xs);
                    x16_pack_block(type, blocks, blocks + xs, to);
                }
            }
        }
    }
    free(scratch);
    const int64_t done = 16 * pairs + 8 * groups;
    if (src != dst)
        memcpy(dst + done * rb, src + done * rb, (size_t)((O - done) * rb));
    return 0;
}
