/* A decode step's attention, included by decode.c after its Step, KV cache access and vector helpers:
 * scores, partial softmaxes over ranges of slots, their merge. */

/* Attention splits each row's visible cache slots into ranges of 16 (at most MAX_PARTS), each
 * with its own partial softmax, merged in order; the threads take consecutive ranges. A row's
 * ranges start at its own first visible slot and depend on its own context alone: not on the
 * thread count, so a step gives the same bits on any number of threads (native.py runs one thread
 * while another program holds a core), and not on the rows beside it, so a left-padded row sums
 * exactly as it does alone (its padding would otherwise shift which slots share a range, and so
 * the order of its sums). */
#define MAX_PARTS 16

static int window_start(const Step *s) {
    const int window = s->window; /* the layer's: a local layer's (Gemma) or the model's */
    return window > 0 && s->slot - window + 1 > 0 ? s->slot - window + 1 : 0;
}

/* Slots per range for n visible slots: a multiple of 16, since score_keys scores 16 slots at a
 * time (ranges of 13 would take its one-by-one path); 16 unless that makes more than MAX_PARTS
 * ranges. */
static int range_slots(int n) {
    const int n16 = (n + 15) / 16;
    return 16 * ((n16 + MAX_PARTS - 1) / MAX_PARTS);
}

/* Each row's first visible slot (the window's first, or past its left padding: the mask's first
 * visible slot) and its ranges; s->parts the most of any row. The mask hides a row's padding
 * and nothing after it (kv_cache.build_mask), so a row's visible slots are first..S-1. */
static void row_ranges(Step *s) {
    s->parts = 1;
    for (int b = 0; b < s->B; b++) {
        int j = window_start(s);
        const uint8_t *vis = s->mask ? s->mask + b * s->mask_stride : NULL;
        while (vis && j < s->S - 1 && !vis[j])
            j++;
        const int n = s->S - j;
        s->first[b] = j, s->range[b] = range_slots(n), s->nparts[b] = (n + s->range[b] - 1) / s->range[b];
        s->parts = s->nparts[b] > s->parts ? s->nparts[b] : s->parts;
    }
}

/* Range p of row b's visible slots: [*ja, *ja + *n) (the last range may be shorter; *n <= 0 past it). */
static void attention_slots(const Step *s, int b, int p, int *ja, int *n) {
    const int j0 = s->first[b], len = s->range[b], lo = p * len;
    *ja = j0 + lo, *n = lo + len < s->S - j0 ? len : s->S - j0 - lo;
}

/* The row whose copy of its range p row b reads: a range inside the slots b shares with an
 * earlier row (the same prompt, prefilled once: the same bits, and the same first slot) reads the
 * first such row's copy, once for all of them; otherwise b itself. */
static int reads_row(const Step *s, int b, int p) {
    const int32_t *same = s->m->same_row;
    int ja, n;
    attention_slots(s, b, p, &ja, &n);
    return same && same[b] != b && s->first[same[b]] == s->first[b] && ja + n <= s->m->same_len ? same[b] : b;
}

/* This thread's ranges [p0, p1) of attention's: consecutive ranges holding about 1 / nt of the
 * whole cost (a range goes to the thread whose share holds its middle). A range's cost, per row
 * and slot: 1 for scoring the row's queries, 2 more for reading its keys and values where the row
 * reads its own copy (a prompt shared by several rows is read once for them; measured at four
 * rows on 135M, the cost mostly the memory). An equal count of ranges gave the first thread the
 * shared prompt and the last one every row's own newest slots: at four rows the first waited
 * ~40 % of the stage for the last. Which thread scores a range does not change its bits (ranges
 * depend on each row's own context alone). */
static void range_share(const Step *s, int t, int nt, int *p0, int *p1) {
    int64_t cost[MAX_PARTS], total = 0;
    for (int p = 0; p < s->parts; p++) {
        cost[p] = 0;
        for (int b = 0; b < s->B; b++) {
            int ja, n;
            attention_slots(s, b, p, &ja, &n);
            cost[p] += n > 0 ? (reads_row(s, b, p) == b ? 3 : 1) * n : 0;
        }
        total += cost[p];
    }
    *p0 = *p1 = s->parts;
    int64_t before = 0;
    for (int p = 0; p < s->parts; before += cost[p], p++) {
        const int64_t mid2 = 2 * before + cost[p]; /* twice the range's middle */
        if (*p0 == s->parts && mid2 * nt >= 2 * total * t)
            *p0 = p;
        if (*p1 == s->parts && mid2 * nt >= 2 * total * (t + 1))
            *p1 = p;
    }
    if (t == nt - 1)
        *p1 = s->parts;
    if (*p0 > *p1)
        *p0 = *p1;
}

/* The cached keys and values attention_share will read in layer l on this thread: for every row
 * and kv head (the B 2 Hkv heads of a layer lie head_stride apart: keys, then values, row by row),
 * the slots of its ranges (hd elements each), less those a row reads from another row's copy
 * (KVCache.share_prompt). qkv_in asks for them while it computes: at four rows the step reads
 * 4x the cache (135M, 65 slots: 12 MB a step) in products that are compute-bound, where the
 * memory would otherwise wait; read by attention itself they cost 1 ms of a 5 ms step.
 * lo, hi: (B,) scratch of the thread's. */
static Prefetch kv_prefetch(const Step *s, int l, int t, int nt, int64_t *lo, int64_t *hi) {
    int p0, p1;
    range_share(s, t, nt, &p0, &p1);
    const int64_t esize = s->kvt == KV_F32 ? 4 : 2, slot = (int64_t)s->hd * esize;
    int64_t total = 0;
    for (int b = 0; b < s->B; b++) {
        int64_t a = s->first[b] + (int64_t)p0 * s->range[b], e = s->first[b] + (int64_t)p1 * s->range[b];
        e = e < s->S ? e : s->S;
        if (s->m->same_row && s->m->same_row[b] != b && a < s->m->same_len)
            a = s->m->same_len; /* read from the first such row's copy */
        lo[b] = a * slot, hi[b] = (e > a ? e : a) * slot; /* from the row's own region start */
        total += 2 * s->Hkv * (hi[b] - lo[b]);
    }
    Prefetch pf = {.base = kv_at(s->kv, s->kvt, l * s->layer_stride), .stride = s->head_stride * esize,
                   .n = p1 > p0 ? s->B * 2 * s->Hkv : 0, .per_row = 2 * s->Hkv, .lo = lo, .hi = hi,
                   .total = total};
    prefetch_region(&pf, 0);
    return pf;
}

/* acc_k (hd) = sum_j p_k[j] val_j for nh heads k (p_k = p + k n, acc_k = acc + k astride) over n
 * value rows val_j (stride elements apart, of type kvt: float32 or float16): axpy's arithmetic for
 * each head, in the same order, with the sums kept in registers (hd, kvt and nh are constants where
 * this is inlined). A group's query heads weigh the same values (GQA), so each value row is read
 * and converted once for nh of them, which also gives the FMAs nh times the independent sums: one
 * head's hd / 16 chains waited on the FMA's latency (8 cycles a slot and head at hd 64; 5 with
 * three heads, measured). A slot is skipped where every head weighs it 0: a masked slot, whose
 * values may be stale (even NaN); a visible slot weighed 0 by one head adds exactly 0 there (its
 * values are finite, and a sum that starts at +0 is never -0). (axpy_f32 per slot and head stored
 * and reloaded the sums every time, and the store-to-load latency made weighing 20 cycles a slot
 * and head.) */
static inline __attribute__((always_inline)) void weigh_values(const void *val, int64_t stride, const float *p, int n,
                                                               const int hd, const int kvt, const int nh, float *acc,
                                                               int64_t astride) {
    v16 sum[3][16] = {{{0}}}; /* nh <= 3, hd <= 256; nh hd / 16 <= 16 sums (registers) */
    for (int j = 0; j < n; j++) {
        int weighed = 0;
        for (int k = 0; k < nh; k++)
            weighed |= p[k * n + j] != 0.f;
        if (!weighed)
            continue;
        for (int i = 0; i < hd / 16; i++) {
            const v16 v = load16_kv(val, j * stride + 16 * i, kvt);
            for (int k = 0; k < nh; k++)
                sum[k][i] += splat(p[k * n + j]) * v;
        }
    }
    for (int k = 0; k < nh; k++)
        for (int i = 0; i < hd / 16; i++)
            store16(acc + k * astride + 16 * i, sum[k][i]);
}

/* Query vectors scored per pass over a range's keys (score_keys's sums of 16 slots each). */
#define MAX_Q 12

#if defined(__AVX512F__)
/* out[j] = the full sum of v[j]'s 16 lanes for j < 16, adding them in hsum's pairs (i + 8, i + 4,
 * i + 2, i + 1) with 4 rounds of shuffles across the 16 vectors instead of 16 separate hsums
 * (which made a score cost 17 cycles at hd 64). */
static inline __attribute__((always_inline)) void hsum16x16(const __m512 *v, float *out) {
    __m512 w[8], z[4], u[2];
    for (int m = 0; m < 8; m++) /* w[m]: lanes i + (i + 8) of v[2m] (lanes 0-7), v[2m + 1] (8-15) */
        w[m] = _mm512_add_ps(_mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_f32x4(v[2 * m], v[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int m = 0; m < 4; m++) /* z[m]: + lanes 4 apart, 128-bit lane L for v[4m + L] */
        z[m] = _mm512_add_ps(_mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                             _mm512_shuffle_f32x4(w[2 * m], w[2 * m + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    for (int m = 0; m < 2; m++) /* + 2 apart */
        u[m] = _mm512_add_ps(_mm512_shuffle_ps(z[2 * m], z[2 * m + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                             _mm512_shuffle_ps(z[2 * m], z[2 * m + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    /* + 1 apart: element e of 128-bit lane L is dot 4 e + L; put dot j at j */
    const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(u[0], u[1], _MM_SHUFFLE(3, 1, 3, 1)));
    _mm512_storeu_ps(out, _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15),
                                                r));
}

/* sc[h ldsc + j] = dot_f32(key_j, qs[h], hd) for nq <= MAX_Q query vectors and n key rows key_j
 * (hd apart; float32, or float16 as dot_f16 reads them), the same bits: each dot's two sums of 16
 * lanes as dot_f32 makes them, then hsum16x16 over 16 slots at once. Each key is loaded and widened
 * once for all nq queries: on Zen 4 a float16 -> float32 conversion of 16 takes 1.3 cycles, more
 * than the FMA it feeds, and a group of three heads converting every key three times spent more
 * on that than on its dot products. */
static inline __attribute__((always_inline)) void score_keys(const void *key, const float *const *qs, int nq, int n,
                                                             const int hd, const int kvt, float *sc, int64_t ldsc) {
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 v[MAX_Q][16];
        for (int k = 0; k < 16; k++) {
            const int64_t a = (int64_t)(j + k) * hd;
            v16 kv[16]; /* hd <= 256 */
            for (int i = 0; i < hd; i += 16)
                kv[i / 16] = load16_kv(key, a + i, kvt);
            for (int h = 0; h < nq; h++) {
                v16 s0 = {0}, s1 = {0};
                for (int i = 0; i < hd; i += 32) {
                    s0 += kv[i / 16] * load16(qs[h] + i);
                    s1 += kv[i / 16 + 1] * load16(qs[h] + i + 16);
                }
                v[h][k] = (__m512)(s0 + s1);
            }
        }
        for (int h = 0; h < nq; h++)
            hsum16x16(v[h], sc + h * ldsc + j);
    }
    for (; j < n; j++)
        for (int h = 0; h < nq; h++)
            sc[h * ldsc + j] = kvt == KV_F16 ? dot_f16((const uint16_t *)key + (int64_t)j * hd, qs[h], hd)
                                             : dot_f32((const float *)key + (int64_t)j * hd, qs[h], hd);
}
#endif

/* scores (nq, n) = the nq query vectors qs[h] (hd each) . the n keys from key0 (hd apart, elements
 * of type kvt); nq <= MAX_Q. */
static void keys_scores(const void *key0, int kvt, const float *const *qs, int nq, int n, int hd, float *scores) {
#if defined(__AVX512F__)
    if (kvt != KV_BF16 && (hd == 64 || hd == 128 || hd == 256)) { /* hd and kvt as constants in score_keys */
#define SCORE(HD) \
    (kvt == KV_F16 ? score_keys(key0, qs, nq, n, HD, KV_F16, scores, n) : score_keys(key0, qs, nq, n, HD, KV_F32, scores, n))
        hd == 64 ? SCORE(64) : hd == 128 ? SCORE(128) : SCORE(256);
#undef SCORE
        return;
    }
#endif
    for (int j = 0; j < n; j++) {
        const void *key = kv_at(key0, kvt, (int64_t)j * hd);
        for (int h = 0; h < nq; h++)
            scores[(int64_t)h * n + j] = kvt == KV_BF16  ? dot_bf16(key, qs[h], hd)
                                         : kvt == KV_F16 ? dot_f16(key, qs[h], hd)
                                                         : dot_f32(key, qs[h], hd);
    }
}

/* Each head's scores (n) in place -> e^(score - max), its part (hd + 2 floats, parts) <- max and
 * sum (group_values writes the values). */
static void group_softmax(float *scores, int group, int n, int hd, float *parts) {
    for (int k = 0; k < group; k++) {
        float *sc = scores + (int64_t)k * n, *part = parts + (int64_t)k * (hd + 2);
        const float mx = scan_max(sc, n, NULL); /* a scalar loop here was ~0.6 % of a four-row step */
        part[0] = mx;
        /* Masked slots hold -inf and come out of the exponential as exactly 0; a share
         * with no visible slot (or none at all) weighs nothing. */
        if (mx == -INFINITY) {
            memset(sc, 0, sizeof(float) * n);
            part[1] = 0.f;
        } else {
            part[1] = exp_shifted(sc, n, mx);
        }
    }
}

/* Each head's part values = its weights (scores (group, n)) times the n values from val0
 * (elements of type kvt), summed. */
static void group_values(const void *val0, int kvt, const float *scores, int group, int n, int hd, float *parts) {
    if (kvt != KV_BF16 && (hd == 64 || hd == 128 || hd == 256)) {
        /* Three heads at a time at hd 64 (12 sums), two at 128 (16), one at 256 (Gemma's, 16): hd,
         * kvt and nh as constants. */
        const int chunk = hd == 64 ? 3 : hd == 128 ? 2 : 1, as = hd + 2;
        for (int k = 0; k < group; k += chunk) {
            const int nh = group - k < chunk ? group - k : chunk;
            const float *p = scores + (int64_t)k * n;
            float *acc = parts + (int64_t)k * as + 2;
#define WEIGH(HD, KVT) \
    (nh == 3   ? weigh_values(val0, HD, p, n, HD, KVT, 3, acc, as) \
     : nh == 2 ? weigh_values(val0, HD, p, n, HD, KVT, 2, acc, as) \
               : weigh_values(val0, HD, p, n, HD, KVT, 1, acc, as))
            if (hd == 256) /* one head at a time: only nh 1 is made */
                kvt == KV_F16 ? weigh_values(val0, 256, p, n, 256, KV_F16, 1, acc, as)
                              : weigh_values(val0, 256, p, n, 256, KV_F32, 1, acc, as);
            else if (kvt == KV_F16)
                hd == 64 ? WEIGH(64, KV_F16) : WEIGH(128, KV_F16);
            else
                hd == 64 ? WEIGH(64, KV_F32) : WEIGH(128, KV_F32);
#undef WEIGH
        }
        return;
    }
    for (int k = 0; k < group; k++) /* the sums by axpy start at 0 (weigh_values stores its own) */
        memset(parts + (int64_t)k * (hd + 2) + 2, 0, sizeof(float) * hd);
    for (int j = 0; j < n; j++) {
        const void *val = kv_at(val0, kvt, (int64_t)j * hd);
        for (int k = 0; k < group; k++) {
            float p = scores[(int64_t)k * n + j], *acc = parts + (int64_t)k * (hd + 2) + 2;
            if (p == 0.f)
                continue;
            if (kvt == KV_BF16)
                axpy_bf16(acc, p, val, hd);
            else if (kvt == KV_F16)
                axpy_f16(acc, p, val, hd);
            else
                axpy_f32(acc, p, val, hd);
        }
    }
}

/* Range p's partial softmaxes (attention_share), for every row that has a range p. scores:
 * (B group, n) scratch. */
static void attention_range(const Step *s, int l, int p, float *scores) {
    const int hd = s->hd, group = s->group, kvt = s->kvt;
    for (int b = 0; b < s->B; b++) {
        int ja, n;
        attention_slots(s, b, p, &ja, &n);
        if (n <= 0 || reads_row(s, b, p) != b)
            continue; /* no range p (a row with fewer slots), or scored with the row whose copy it reads */
        /* The rows reading row b's slots here: their queries are scored in one pass over its keys. */
        int rows[s->B], nr = 0;
        for (int r = b; r < s->B; r++)
            if (r == b || reads_row(s, r, p) == b)
                rows[nr++] = r;
        for (int g = 0; g < s->Hkv; g++) {
            const int64_t keys = l * s->layer_stride + b * s->row_stride + g * s->head_stride + (int64_t)ja * hd;
            const int64_t vals = keys + s->Hkv * s->head_stride;
            /* scores (nr group, n): row rows[i]'s query heads of this group, at i group */
            const float *qs[MAX_Q];
            for (int q0 = 0; q0 < nr * group; q0 += MAX_Q) {
                const int nq = nr * group - q0 < MAX_Q ? nr * group - q0 : MAX_Q;
                for (int h = 0; h < nq; h++)
                    qs[h] = s->qkv + (int64_t)rows[(q0 + h) / group] * s->Q + ((int64_t)g * group + (q0 + h) % group) * hd;
                keys_scores(kv_at(s->kv, kvt, keys), kvt, qs, nq, n, hd, scores + (int64_t)q0 * n);
            }
            for (int i = 0; i < nr; i++) {
                const int r = rows[i];
                float *sc = scores + (int64_t)i * group * n;
                const float cap = s->m->attn_softcap;
                for (int j = 0; cap != 0.f && j < group * n; j++) /* Gemma 2: each score soft-capped */
                    sc[j] = cap * tanhf(sc[j] / cap);
                const uint8_t *vis = s->mask ? s->mask + r * s->mask_stride + ja : NULL;
                for (int j = 0; vis && j < n; j++)
                    for (int k = 0; k < group && !vis[j]; k++)
                        sc[(int64_t)k * n + j] = -INFINITY;
                /* The range's parts for the group's heads, hd + 2 floats apart: max, sum, values. */
                float *parts = s->partial + ((int64_t)p * s->B * s->H + (int64_t)r * s->H + (int64_t)g * group) * (hd + 2);
                group_softmax(sc, group, n, hd, parts);
                group_values(kv_at(s->kv, kvt, vals), kvt, sc, group, n, hd, parts);
            }
        }
    }
}

/* Attention over this thread's ranges of the visible cache slots, for every (row, query head):
 * each range leaves a partial softmax (its max, sum and weighted values) for merge_attention.
 * Splitting by slots rather than heads keeps every thread busy at any head count, and each key
 * and value is read once for its whole group of query heads (GQA). `scores` is (B group, range)
 * scratch. */
static void attention_share(const Step *s, int l, int t, int nt, float *scores) {
    int p0, p1;
    range_share(s, t, nt, &p0, &p1);
    for (int p = p0; p < p1; p++)
        attention_range(s, l, p, scores);
}

/* att[row, head] = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p over the row's ranges' parts,
 * in order. */
static void merge_attention(const Step *s, int t, int nt) {
    const int hd = s->hd, BH = s->B * s->H;
    int lo, hi;
    share(BH, t, nt, &lo, &hi);
    for (int it = lo; it < hi; it++) {
        const int n_parts = s->nparts[it / s->H];
        float M = -INFINITY, den = 0.f, *y = s->att + (int64_t)it * hd;
        for (int u = 0; u < n_parts; u++) {
            const float mu = s->partial[((int64_t)u * BH + it) * (hd + 2)];
            M = mu > M ? mu : M;
        }
        float w[MAX_PARTS]; /* each part's weight, 0 for a part that saw no visible slot */
        for (int u = 0; u < n_parts; u++) {
            const float *part = s->partial + ((int64_t)u * BH + it) * (hd + 2);
            w[u] = part[0] == -INFINITY ? 0.f : expf(part[0] - M);
            den += part[0] == -INFINITY ? 0.f : w[u] * part[1];
        }
        const float *vals = s->partial + (int64_t)it * (hd + 2) + 2; /* part u's values: u BH (hd + 2) on */
        if (hd == 64 || hd == 128 || hd == 256) /* the sums in registers, as attention's own (weigh_values) */
            if (hd == 64)
                weigh_values(vals, (int64_t)BH * (hd + 2), w, n_parts, 64, KV_F32, 1, y, 0);
            else if (hd == 128)
                weigh_values(vals, (int64_t)BH * (hd + 2), w, n_parts, 128, KV_F32, 1, y, 0);
            else
                weigh_values(vals, (int64_t)BH * (hd + 2), w, n_parts, 256, KV_F32, 1, y, 0);
        else {
            memset(y, 0, sizeof(float) * hd);
            for (int u = 0; u < n_parts; u++)
                if (w[u] != 0.f)
                    axpy_f32(y, w[u], vals + (int64_t)u * BH * (hd + 2), hd);
        }
        for (int i = 0; i < hd; i++)
            y[i] /= den;
    }
}
