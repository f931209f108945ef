/* Quantized weight rows repacked eight at a time (quant.py's repack_rows), included by quant.h.
 *
 * Why: quant.h's row kernels take one weight row at a time, so every row pays, per block of 32
 * and per input row, its own integer dot product, int -> float conversion and scale FMA, then a
 * horizontal sum: four input rows cost ~2.5x one (compute-bound at ~17 G weights/s per core).
 * Here eight rows' blocks are interleaved so that one 256-bit register holds 4 bytes of each of
 * the 8 rows; a dot product against the input's 4 matching bytes broadcast gives the 8 rows'
 * partial sums in the 8 int32 lanes, summed over the block's 8 chunks in int32, then ONE
 * conversion and ONE FMA by the 8 rows' scales (a vector) per block and input row, and no
 * horizontal sums at all. (ggml-cpu's "repack" does the same for its q4_0 / q4_k; the layout and
 * code here are this project's own.)
 *
 * Layout of a weight of O rows of type `ggml | T_X8`: rows in groups of 8, the last O % 8 rows
 * plain (so row r of the tail starts where it would in the plain layout: a group takes exactly
 * the bytes of its 8 plain rows). q4_k and q6_k: see x8_q4_k_group and x8_q6_k_group. The
 * 32-element types, group g, block i (32 elements, 8 row_bytes(type, 32) bytes):
 *   16 bytes   the 8 rows' fp16 scales d, row 0 first
 *   q5_0 only: 32 bytes of fifth bits, row r byte k (4 r + k): bit c = element 4c + k's fifth bit,
 *              bit 4 + c = element 16 + 4c + k's (c = 0..3)
 *   the quants, chunk c, row r, byte k at 32 c + 4 r + k = the plain block's quant byte 4 c + k:
 *     q8_0: 8 chunks, element 4 c + k, stored as w + 128 (w ^ 0x80: unsigned, exact)
 *     q4_0, q5_0: 4 chunks, low nibble element 4 c + k, high nibble element 16 + 4 c + k.
 * The stored values are unsigned (u8, 0..15, 0..31): their offset (128, 8, 16) times the input
 * block's integer sum (Act.isum) starts the accumulator, so dpbusd's u8 x s8 works as it is.
 *
 * Callers (qrows_tile) give row ranges starting at a multiple of 8 and ending at a multiple of 8
 * or at the weight's last row: the rows past the last multiple of 8 are then the plain tail.
 */

/* Bytes of one repacked block of 8 rows (8 plain blocks). */
static inline int x8_block_bytes(int type) {
    return type == T_Q8_0 ? 272 : type == T_Q4_0 ? 144 : type == T_Q4_K ? 1152 : type == T_Q6_K ? 1680 : 176;
}

#if defined(__AVX2__)
/* The 8 rows' fp16 scales of a repacked block as one float vector. */
static inline __m256 x8_scales(const uint8_t *w) {
#if defined(__F16C__)
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w));
#else
    float f[8];
    for (int r = 0; r < 8; r++)
        f[r] = fp16(w + 2 * r);
    return _mm256_loadu_ps(f);
#endif
}

/* With VNNI the stored offsets start the int32 sums; AVX2's maddubs would saturate on q8_0's u8
 * (255 * 127 * 2 > 32767), so there q8_0 goes back to signed bytes with the abs / sign trick. */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define X8_VNNI 1
#else
#define X8_VNNI 0
#endif

/* The block's quants as 8 registers, q[c] = elements 4c..4c+3 of each of the 8 rows (u8, or for
 * q8_0 without VNNI: |w|, with the signs of w kept in sgn). */
static inline __attribute__((always_inline)) void x8_unpack(const int type, const uint8_t *w, __m256i *q,
                                                            __m256i *sgn) {
    if (type == T_Q8_0) {
        for (int c = 0; c < 8; c++) {
            q[c] = load32(w + 16 + 32 * c);
            if (!X8_VNNI) {
                sgn[c] = _mm256_xor_si256(q[c], _mm256_set1_epi8((char)0x80));
                q[c] = _mm256_sign_epi8(sgn[c], sgn[c]);
            }
        }
        return;
    }
    const uint8_t *qs = w + (type == T_Q5_0 ? 48 : 16);
    const __m256i hv = type == T_Q5_0 ? load32(w + 16) : _mm256_setzero_si256(), b4 = _mm256_set1_epi8(16);
    for (int c = 0; c < 4; c++) {
        const __m256i raw = load32(qs + 32 * c);
        q[c] = _mm256_and_si256(raw, LOW4);
        q[c + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), LOW4);
        if (type == T_Q5_0) { /* bit c (4 + c) of each byte to bit 4: 16-bit shifts of at most 4 stay in the byte */
            q[c] = _mm256_or_si256(q[c], _mm256_and_si256(_mm256_slli_epi16(hv, 4 - c), b4));
            q[c + 4] = _mm256_or_si256(q[c + 4], _mm256_and_si256(_mm256_srli_epi16(hv, c), b4));
        }
    }
}

/* The 4 input bytes at p in every 32-bit lane (one broadcast load). */
static inline __m256i x8_bcast(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

#if X8_VNNI
/* s + dpbusd(u, the 4 input bytes at x in every lane). GCC does not fold the broadcast into the
 * instruction's memory operand ({1to8}), and a separate vpbroadcastd takes a vector slot as the dot
 * product does (on Zen 4: 4 input rows through an 8-row q4_0 block of 32, 33 -> 27 cycles). */
static inline __m256i x8_dpbusd(__m256i s, __m256i u, const int8_t *x) {
    __asm__("vpdpbusd %2%{1to8%}, %1, %0" : "+v"(s) : "v"(u), "m"(*(const int32_t *)x));
    return s;
}
#endif

/* s + the 8 rows' dot products of the block with input bytes x[0..31] (int32 lanes). Two chains
 * of sums (even and odd chunks), so that one input row does not wait on each dot product's latency. */
static inline __attribute__((always_inline)) __m256i x8_dot(const int type, __m256i s, const __m256i *q,
                                                            const __m256i *sgn, const int8_t *x) {
    __m256i t = _mm256_setzero_si256();
#if X8_VNNI
    (void)type, (void)sgn;
    for (int c = 0; c < 8; c += 2) {
        s = x8_dpbusd(s, q[c], x + 4 * c);
        t = x8_dpbusd(t, q[c + 1], x + 4 * c + 4);
    }
#else
    const __m256i ones = _mm256_set1_epi16(1);
    if (type == T_Q8_0)
        for (int c = 0; c < 8; c += 2) {
            const __m256i p = _mm256_maddubs_epi16(q[c], _mm256_sign_epi8(x8_bcast(x + 4 * c), sgn[c]));
            const __m256i p1 = _mm256_maddubs_epi16(q[c + 1], _mm256_sign_epi8(x8_bcast(x + 4 * c + 4), sgn[c + 1]));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
            t = _mm256_add_epi32(t, _mm256_madd_epi16(p1, ones));
        }
    else /* two chunks' int16 pairs summed before widening: 2 * 2 * 31 * 127 < 32768 */
        for (int c = 0; c < 8; c += 2) {
            const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(q[c], x8_bcast(x + 4 * c)),
                                               _mm256_maddubs_epi16(q[c + 1], x8_bcast(x + 4 * c + 4)));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
        }
#endif
    return _mm256_add_epi32(s, t);
}
#endif

/* Ask for the block QPREFETCH bytes ahead (x8_prefetch_block); x8_prefetch: at two input rows or
 * more (q6_k's kernel asks at one row too: its comment says why). A product of one input row
 * is bound by memory, and the hardware prefetcher streams the weights best alone: a 38 MB q4_0
 * product (2 threads) took 2.69 ns a block with these requests, 2.18 without; the 135M step
 * 2.16 ms against 1.98-2.01. At four input rows the requests keep memory busy while the products
 * compute (the 1B step: 21.8 ms with them, 24.5 without); 3072 bytes ahead instead of 2048 was
 * mixed (1B q4_0 1% faster, 135M q8_0 5% slower). */
static inline __attribute__((always_inline)) void x8_prefetch_block(const uint8_t *w, const int size) {
    for (int p = 0; p < size; p += 64)
        __builtin_prefetch(w + QPREFETCH + p);
}
static inline __attribute__((always_inline)) void x8_prefetch(const uint8_t *w, const int size, const int nb) {
    if (nb > 1)
        x8_prefetch_block(w, size);
}

/* Where a group's sums go: y[ld b + r] = (y[ld b + r] +) sum (+ bias[r]) for its 8 rows r and
 * input rows b, as qmatvec's general path computes it (the same additions in the same order).
 * Stored straight into the product rather than copied out of scratch a float at a time: at 576
 * columns that copy, and the scratch, cost a four-row product a fifth of its time. */
typedef struct {
    float *y;
    int64_t ld;
    const float *bias; /* (8), or NULL */
    int accumulate;
} X8Out;

#if defined(__AVX2__)
static inline __attribute__((always_inline)) void x8_put(const X8Out o, const int nb, const __m256 *acc) {
    for (int b = 0; b < nb; b++) {
        __m256 v = o.bias ? _mm256_add_ps(acc[b], _mm256_loadu_ps(o.bias)) : acc[b];
        if (o.accumulate)
            v = _mm256_add_ps(_mm256_loadu_ps(o.y + o.ld * b), v);
        _mm256_storeu_ps(o.y + o.ld * b, v);
    }
}
#endif

/* o for rows 0..nr-1 from scratch sums res (nb, ld): the plain C kernels', and qmatvec's for the
 * products that do not go straight into y. */
static inline void put_sums(const X8Out o, const int nb, const int nr, const int ld, const float *res) {
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < nr; r++) {
            const float v = o.bias ? res[ld * b + r] + o.bias[r] : res[ld * b + r];
            o.y[o.ld * b + r] = o.accumulate ? o.y[o.ld * b + r] + v : v;
        }
}

/* o: row r of the group at w . input row b of a, for b < nb (1..4). */
static inline __attribute__((always_inline)) void x8_group(const int type, const uint8_t *w, const Act *a,
                                                           const int nb, const X8Out o) {
    const int64_t n = a->n;
    const int nblk = (int)(n / 32), size = x8_block_bytes(type);
#if defined(__AVX2__)
    /* what the stored values exceed the real ones by (q8_0 without VNNI is signed again) */
    const int offset = type == T_Q8_0 ? (X8_VNNI ? 128 : 0) : type == T_Q4_0 ? 8 : 16;
    __m256 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += size) {
        x8_prefetch(w, size, nb);
        __m256i q[8], sgn[8];
        x8_unpack(type, w, q, sgn);
        const __m256 dw = x8_scales(w);
        for (int b = 0; b < nb; b++) {
            const int64_t blk = b * nblk + i;
            const __m256i s = x8_dot(type, _mm256_set1_epi32(-offset * a->isum[blk]), q, sgn, a->q + 32 * blk);
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(a->d[blk])), acc[b]);
        }
    }
    x8_put(o, nb, acc);
#else
    float res[32] = {0}; /* (nb, 8) */
    for (int i = 0; i < nblk; i++, w += size)
        for (int r = 0; r < 8; r++) {
            int v[32]; /* row r's weights in this block, offset removed */
            for (int e = 0; e < 32; e++) {
                const int c = e % 16 / 4, k = e % 4, hi = e >= 16;
                if (type == T_Q8_0)
                    v[e] = w[16 + 32 * (e / 4) + 4 * r + k] - 128;
                else {
                    const uint8_t byte = w[(type == T_Q5_0 ? 48 : 16) + 32 * c + 4 * r + k];
                    v[e] = hi ? byte >> 4 : byte & 0xF;
                    if (type == T_Q5_0)
                        v[e] |= ((w[16 + 4 * r + k] >> (c + 4 * hi)) & 1) << 4;
                    v[e] -= type == T_Q5_0 ? 16 : 8;
                }
            }
            for (int b = 0; b < nb; b++) {
                const int8_t *x = a->q + b * n + 32 * i;
                int dot = 0;
                for (int e = 0; e < 32; e++)
                    dot += v[e] * x[e];
                res[8 * b + r] += fp16(w + 2 * r) * a->d[b * nblk + i] * (float)dot;
            }
        }
    put_sums(o, nb, 8, 8, res);
#endif
}

/* q4_k, 8 rows a block of 256 (1152 bytes, 8 x 144): 8 fp16 d, 8 fp16 dmin, 96 bytes of the
 * 6-bit sub-block scales and mins regrouped by sub-block (byte 8 s + r: sub-block s of row r, scale
 * low 4 bits | min low 4 bits << 4; byte 64 + 8 (s % 4) + r: nibble s / 4 = scale high 2 bits |
 * min high 2 bits << 2), then 32 registers of quants: register 8 j + c, row r, byte k = the plain
 * qs byte 32 j + 4 c + k (low nibble: sub-block 2 j, element 4 c + k; high: sub-block 2 j + 1). */
static inline __attribute__((always_inline)) void x8_q4_k_group(const uint8_t *w, const Act *a, const int nb,
                                                                const X8Out o) {
    const int64_t n = a->n;
    const int nblk = (int)(n / 256);
#if defined(__AVX2__)
    __m256 acc[4] = {0};
    for (int i = 0; i < nblk; i++, w += 1152) {
        x8_prefetch(w, 1152, nb);
        const __m256 d = x8_scales(w), dmin = x8_scales(w + 16);
        /* The 8 rows' 6-bit scales and mins of all 8 sub-blocks decoded as bytes at once (sub-block
         * s row r at byte 8 s + r of sc8[s / 4] and mn8[s / 4]: 16-bit shifts of at most 4, masked,
         * stay within their byte); then the scales as int32 lanes per sub-block and the mins as
         * int16 pairs (sub-blocks 2j, 2j + 1) per row, so that one madd per pair gives their term. */
        __m256i sc[8], mnp[4];
        {
            const __m256i three = _mm256_set1_epi8(3), h = load32(w + 96);
            const __m256i hs[2] = {_mm256_and_si256(h, LOW4), _mm256_and_si256(_mm256_srli_epi16(h, 4), LOW4)};
            __m256i sc8[2], mn8[2];
            for (int k = 0; k < 2; k++) { /* sub-blocks 4k..4k+3 */
                const __m256i lo = load32(w + 32 + 32 * k);
                sc8[k] = _mm256_or_si256(_mm256_and_si256(lo, LOW4), _mm256_slli_epi16(_mm256_and_si256(hs[k], three), 4));
                mn8[k] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo, 4), LOW4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hs[k], 2), three), 4));
            }
            for (int sb = 0; sb < 8; sb++) {
                const __m128i half = sb % 4 < 2 ? _mm256_castsi256_si128(sc8[sb / 4]) : _mm256_extracti128_si256(sc8[sb / 4], 1);
                sc[sb] = _mm256_cvtepu8_epi32(sb % 2 ? _mm_unpackhi_epi64(half, half) : half);
            }
            for (int j = 0; j < 4; j++) { /* bytes 16 j.. of sub-blocks 2j, 2j + 1: one 128-bit half */
                const __m128i m = j % 2 ? _mm256_extracti128_si256(mn8[j / 2], 1) : _mm256_castsi256_si128(mn8[j / 2]);
                mnp[j] = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, _mm_unpackhi_epi64(m, m)));
            }
        }
        __m256i isum[4] = {0};
        for (int j = 0; j < 4; j++) {
            __m256i lo[8], hi[8];
            for (int c = 0; c < 8; c++) {
                const __m256i raw = load32(w + 128 + 32 * (8 * j + c));
                lo[c] = _mm256_and_si256(raw, LOW4);
                hi[c] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), LOW4);
            }
            for (int b = 0; b < nb; b++) {
                const int8_t *x = a->q + b * n + 256 * i + 64 * j;
                const __m256i s0 = x8_dot(T_Q4_0, _mm256_setzero_si256(), lo, NULL, x);
                const __m256i s1 = x8_dot(T_Q4_0, _mm256_setzero_si256(), hi, NULL, x + 32);
                isum[b] = _mm256_add_epi32(isum[b], _mm256_add_epi32(_mm256_mullo_epi32(s0, sc[2 * j]),
                                                                     _mm256_mullo_epi32(s1, sc[2 * j + 1])));
            }
        }
        for (int b = 0; b < nb; b++) {
            const int64_t blk = b * nblk + i;
            /* sum over sub-blocks of min x the input's sum there: the input's 8 sums of 32 as int16
             * (at most 32 x 127), pair j in every lane against mnp[j] */
            const __m128i s32 = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)(a->bsums + blk * 16)),
                                               _mm_loadu_si128((const __m128i *)(a->bsums + blk * 16 + 8)));
            const __m256i sums = _mm256_broadcastsi128_si256(s32);
            __m256i msum = _mm256_madd_epi16(mnp[0], _mm256_shuffle_epi32(sums, 0x00));
            msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mnp[1], _mm256_shuffle_epi32(sums, 0x55)));
            msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mnp[2], _mm256_shuffle_epi32(sums, 0xaa)));
            msum = _mm256_add_epi32(msum, _mm256_madd_epi16(mnp[3], _mm256_shuffle_epi32(sums, 0xff)));
            const __m256 dx = _mm256_set1_ps(a->d[blk]);
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[b]), _mm256_mul_ps(d, dx), acc[b]);
            acc[b] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(dmin, dx), acc[b]);
        }
    }
    x8_put(o, nb, acc);
#else
    float res[32] = {0}; /* (nb, 8) */
    for (int i = 0; i < nblk; i++, w += 1152)
        for (int r = 0; r < 8; r++) {
            int sc[8], mn[8], v[256];
            for (int sb = 0; sb < 8; sb++) {
                const int lo = w[32 + 8 * sb + r], hi = w[96 + 8 * (sb % 4) + r] >> (4 * (sb / 4));
                sc[sb] = (lo & 15) | (hi & 3) << 4;
                mn[sb] = lo >> 4 | ((hi >> 2) & 3) << 4;
            }
            for (int e = 0; e < 256; e++) { /* sub-block e / 32: chunk j = e / 64, high nibble if e % 64 >= 32 */
                const int l = e % 32, byte = w[128 + 32 * (8 * (e / 64) + l / 4) + 4 * r + l % 4];
                v[e] = e % 64 >= 32 ? byte >> 4 : byte & 15;
            }
            for (int b = 0; b < nb; b++) {
                const int64_t blk = b * nblk + i;
                const int8_t *x = a->q + b * n + 256 * i;
                int isum = 0, msum = 0;
                for (int e = 0; e < 256; e++)
                    isum += sc[e / 32] * v[e] * x[e];
                for (int sb = 0; sb < 8; sb++)
                    msum += mn[sb] * (a->bsums[blk * 16 + 2 * sb] + a->bsums[blk * 16 + 2 * sb + 1]);
                res[8 * b + r] += a->d[blk] * (fp16(w + 2 * r) * (float)isum - fp16(w + 16 + 2 * r) * (float)msum);
            }
        }
    put_sums(o, nb, 8, 8, res);
#endif
}

/* q6_k, 8 rows a block of 256 (1680 bytes, 8 x 210): 8 fp16 d; the int8 sub-block scales (byte
 * 8 s + r: sub-block s of 16 elements, row r); then per half h of the block (768 bytes each) its 16
 * registers of low 4 bits, register (h, m, c) row r byte k = the plain ql byte 64 h + 32 m + 4 c + k
 * (low nibble: element 128 h + 32 m + 4 c + k of the row, high nibble: that + 64), and its 8
 * registers of high 2 bits, register (h, c) row r byte k = the plain qh byte 32 h + 4 c + k (bits
 * 2 j, 2 j + 1: element 128 h + 32 j + 4 c + k). A half's bits lie together so that the kernel
 * reads them about in order: with all the low bits first and all the high bits after (1 KB
 * apart), one row streamed at 14-22 GB/s against the plain rows' 40. (Loading still keeps q6_k
 * plain: repack.py's REPACKED.) */
#define X8_Q6_QL(h, m, c) (144 + 768 * (h) + 256 * (m) + 32 * (c))
#define X8_Q6_QH(h, c) (144 + 768 * (h) + 512 + 32 * (c))
static inline __attribute__((always_inline)) void x8_q6_k_group(const uint8_t *w, const Act *a, const int nb,
                                                                const X8Out o) {
    const int64_t n = a->n;
    const int nblk = (int)(n / 256);
#if defined(__AVX2__)
    __m256 acc[4] = {0};
    const __m256i m30 = _mm256_set1_epi8(0x30);
    for (int i = 0; i < nblk; i++, w += 1680) {
        /* asked for at one input row too: without, one row streamed at 25-29 GB/s, with 33-50 (the
         * plain rows' kernel 37-42; 32000 x 2048 and 16384 x 5632, 2 threads) */
        x8_prefetch_block(w, 1680);
        const __m256 d = x8_scales(w);
        /* sum_sb sc_sb (q_sb . x_sb - 32 bsum_sb): the offsets' part, -32 sum_sb sc_sb bsum_sb, for
         * the 8 rows at once, one madd per pair of sub-blocks (a lane: its row's two scales as int16
         * against the input's two sums of 16); the same integer as applying it per sub-block */
        __m256i isum[4];
        {
            __m256i scp[8];
            for (int p = 0; p < 8; p++) { /* sub-blocks 2p, 2p + 1: scale bytes 16 p.. */
                const __m128i v = _mm_loadu_si128((const __m128i *)(w + 16 + 16 * p));
                scp[p] = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(v, _mm_srli_si128(v, 8)));
            }
            for (int b = 0; b < nb; b++) {
                const int16_t *bs = a->bsums + (b * nblk + i) * 16;
                __m256i m = _mm256_setzero_si256();
                for (int p = 0; p < 8; p++) {
                    int32_t pair;
                    memcpy(&pair, bs + 2 * p, 4);
                    m = _mm256_add_epi32(m, _mm256_madd_epi16(scp[p], _mm256_set1_epi32(pair)));
                }
                isum[b] = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_setzero_si256(), m), 5);
            }
        }
        for (int h = 0; h < 2; h++)
            for (int j = 0; j < 4; j++) { /* elements 128 h + 32 j ..: sub-blocks 8 h + 2 j, + 1 */
                __m256i q[8];
                for (int c = 0; c < 8; c++) {
                    const __m256i ql = load32(w + X8_Q6_QL(h, j % 2, c)), qh = load32(w + X8_Q6_QH(h, c));
                    const __m256i lo = j < 2 ? _mm256_and_si256(ql, LOW4) : _mm256_and_si256(_mm256_srli_epi16(ql, 4), LOW4);
                    const __m256i hi = j == 0 ? _mm256_slli_epi16(qh, 4)
                                       : j == 1 ? _mm256_slli_epi16(qh, 2)
                                       : j == 2 ? qh
                                                : _mm256_srli_epi16(qh, 2);
                    q[c] = _mm256_or_si256(lo, _mm256_and_si256(hi, m30));
                }
                for (int half = 0; half < 2; half++) {
                    const int sb = 8 * h + 2 * j + half;
                    const __m256i sc = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + 16 + 8 * sb)));
                    for (int b = 0; b < nb; b++) {
                        const int8_t *x = a->q + b * n + 256 * i + 16 * sb;
                        __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
#if X8_VNNI
                        s0 = x8_dpbusd(s0, q[4 * half], x);
                        s1 = x8_dpbusd(s1, q[4 * half + 1], x + 4);
                        s0 = x8_dpbusd(s0, q[4 * half + 2], x + 8);
                        s1 = x8_dpbusd(s1, q[4 * half + 3], x + 12);
#else /* two chunks' int16 pairs summed before widening: 2 * 2 * 63 * 127 < 32768 */
                        const __m256i ones = _mm256_set1_epi16(1);
                        const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(q[4 * half], x8_bcast(x)),
                                                            _mm256_maddubs_epi16(q[4 * half + 1], x8_bcast(x + 4)));
                        const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(q[4 * half + 2], x8_bcast(x + 8)),
                                                            _mm256_maddubs_epi16(q[4 * half + 3], x8_bcast(x + 12)));
                        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, ones));
                        s1 = _mm256_madd_epi16(p1, ones);
#endif
                        isum[b] = _mm256_add_epi32(isum[b], _mm256_mullo_epi32(_mm256_add_epi32(s0, s1), sc));
                    }
                }
            }
        for (int b = 0; b < nb; b++)
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[b]), _mm256_mul_ps(d, _mm256_set1_ps(a->d[b * nblk + i])),
                                     acc[b]);
    }
    x8_put(o, nb, acc);
#else
    float res[32] = {0}; /* (nb, 8) */
    for (int i = 0; i < nblk; i++, w += 1680)
        for (int r = 0; r < 8; r++) {
            int v[256];
            for (int e = 0; e < 256; e++) { /* half h, quarter j, l = 4 c + k */
                const int h = e / 128, j = e % 128 / 32, l = e % 32;
                const int ql = w[X8_Q6_QL(h, j % 2, l / 4) + 4 * r + l % 4];
                const int qh = w[X8_Q6_QH(h, l / 4) + 4 * r + l % 4];
                v[e] = ((j < 2 ? ql & 15 : ql >> 4) | ((qh >> (2 * j)) & 3) << 4) - 32;
            }
            for (int b = 0; b < nb; b++) {
                const int8_t *x = a->q + b * n + 256 * i;
                int isum = 0;
                for (int e = 0; e < 256; e++)
                    isum += (int8_t)w[16 + 8 * (e / 16) + r] * v[e] * x[e];
                res[8 * b + r] += a->d[b * nblk + i] * fp16(w + 2 * r) * (float)isum;
            }
        }
    put_sums(o, nb, 8, 8, res);
#endif
}

/* x8_group with the type and nb as constants (each combination its own inlined kernel). */
static inline void x8_group_any(int type, const uint8_t *w, const Act *a, int nb, const X8Out o) {
#define X8_NB(T)                                       \
    switch (nb) {                                      \
    case 1: x8_group(T, w, a, 1, o); break;            \
    case 2: x8_group(T, w, a, 2, o); break;            \
    case 3: x8_group(T, w, a, 3, o); break;            \
    default: x8_group(T, w, a, 4, o);                  \
    }
    switch (type) {
    case T_Q8_0: X8_NB(T_Q8_0) break;
    case T_Q4_0: X8_NB(T_Q4_0) break;
    case T_Q4_K:
        switch (nb) {
        case 1: x8_q4_k_group(w, a, 1, o); break;
        case 2: x8_q4_k_group(w, a, 2, o); break;
        case 3: x8_q4_k_group(w, a, 3, o); break;
        default: x8_q4_k_group(w, a, 4, o);
        }
        break;
    case T_Q6_K:
        switch (nb) {
        case 1: x8_q6_k_group(w, a, 1, o); break;
        case 2: x8_q6_k_group(w, a, 2, o); break;
        case 3: x8_q6_k_group(w, a, 3, o); break;
        default: x8_q6_k_group(w, a, 4, o);
        }
        break;
    default: X8_NB(T_Q5_0)
    }
#undef X8_NB
}

/* qrows_tile for a repacked weight (type & T_X8): y[b * ldy + r] = W row r . input row b for r in
 * [r0, r1), b in [b0, b0 + nb); sub is a from input row b0 on. Full groups through x8_group, the
 * plain tail row by row; a range that starts inside a group computes the group and keeps its rows. */
static void x8_rows(int type, const uint8_t *W, int r0, int r1, const Act *sub, int b0, int nb, float *y,
                    int64_t ldy) {
    const int base = type & ~T_X8;
    const int64_t rb = row_bytes(base, sub->n);
    float out[32];
    int r = r0;
    while (r < r1) {
        const int g = r - r % 8; /* the group holding row r */
        if (g + 8 <= r1) {
            if (r == g) /* the whole group: straight into y */
                x8_group_any(base, W + g * rb, sub, nb, (X8Out){y + (int64_t)b0 * ldy + g, ldy, NULL, 0});
            else {
                x8_group_any(base, W + g * rb, sub, nb, (X8Out){out, 8, NULL, 0});
                for (int b = 0; b < nb; b++)
                    for (int j = r - g; j < 8; j++)
                        y[(int64_t)(b0 + b) * ldy + g + j] = out[8 * b + j];
            }
            r = g + 8;
        } else { /* the plain tail */
            qrow_nb(base, W + r * rb, sub, nb, out);
            for (int b = 0; b < nb; b++)
                y[(int64_t)(b0 + b) * ldy + r] = out[b];
            r++;
        }
    }
}

/* ---- the layout made at load (repack16.h's tk_repack) ---- */

/* Group block (8 plain blocks, row r's at src[r], `size` bytes each) -> dst (8 size bytes). */
static void x8_pack_block(int type, const uint8_t *const src[8], uint8_t *dst) {
    const int scale_at = type == T_Q6_K ? 208 : 0;
    for (int r = 0; r < 8; r++)
        memcpy(dst + 2 * r, src[r] + scale_at, 2);
    if (type == T_Q8_0 || type == T_Q4_0 || type == T_Q5_0) {
        const int nc = type == T_Q8_0 ? 8 : 4, qs = type == T_Q5_0 ? 6 : 2, at = type == T_Q5_0 ? 48 : 16;
        const uint32_t flip = type == T_Q8_0 ? 0x80808080u : 0; /* q8_0: w + 128 */
        for (int c = 0; c < nc; c++)
            for (int r = 0; r < 8; r++) {
                uint32_t v;
                memcpy(&v, src[r] + qs + 4 * c, 4);
                v ^= flip;
                memcpy(dst + at + 32 * c + 4 * r, &v, 4);
            }
        if (type == T_Q5_0)
            for (int r = 0; r < 8; r++) {
                uint32_t qh;
                memcpy(&qh, src[r] + 2, 4);
                for (int k = 0; k < 4; k++) {
                    uint8_t v = 0;
                    for (int c = 0; c < 4; c++)
                        v |= ((qh >> (4 * c + k)) & 1) << c | ((qh >> (16 + 4 * c + k)) & 1) << (4 + c);
                    dst[16 + 4 * r + k] = v;
                }
            }
    } else if (type == T_Q4_K) {
        memset(dst + 96, 0, 32);
        for (int r = 0; r < 8; r++) {
            memcpy(dst + 16 + 2 * r, src[r] + 2, 2);
            uint8_t sc[8], mn[8];
            scale_min_k4(src[r] + 4, sc, mn);
            for (int sb = 0; sb < 8; sb++) {
                dst[32 + 8 * sb + r] = (sc[sb] & 15) | (mn[sb] & 15) << 4;
                dst[96 + 8 * (sb % 4) + r] |= ((sc[sb] >> 4) | (mn[sb] >> 4) << 2) << (4 * (sb / 4));
            }
            for (int reg = 0; reg < 32; reg++)
                memcpy(dst + 128 + 32 * reg + 4 * r, src[r] + 16 + 4 * reg, 4);
        }
    } else { /* q6_k */
        for (int r = 0; r < 8; r++) {
            for (int sb = 0; sb < 16; sb++)
                dst[16 + 8 * sb + r] = src[r][192 + sb];
            for (int reg = 0; reg < 32; reg++) /* ql byte 64 h + 32 m + 4 c = 4 reg, reg = 16 h + 8 m + c */
                memcpy(dst + X8_Q6_QL(reg / 16, reg / 8 % 2, reg % 8) + 4 * r, src[r] + 4 * reg, 4);
            for (int reg = 0; reg < 16; reg++) /* qh byte 32 h + 4 c = 4 reg, reg = 8 h + c */
                memcpy(dst + X8_Q6_QH(reg / 8, reg % 8) + 4 * r, src[r] + 128 + 4 * reg, 4);
        }
    }
}
