/* One token drawn per row, with what generate reports about it, in a few vector passes over each
 * row's logits (included by decode.c; tk_sample is the entry).
 *
 * Why: sampling.py's chain on (B, V) tensors costs ~40 torch calls a step, and top-p's sort of a
 * flat row (a random or high-temperature model: the mass p lies thousands of tokens down) ~1 ms
 * more; four presets took ~3-4 ms a step at a 49k vocabulary, as much as the 135M model's step.
 * Here a row is ~20 passes over V floats (tens of microseconds) and rows run on the threads.
 *
 * The rules are sampling.py's (its BatchSampler.process / sample are the reference the tests hold
 * this to): temperature divides, top-k keeps the k largest values and their ties, top-p keeps the
 * largest values until the mass above the next one reaches p (less float32's epsilon of slack),
 * min-p keeps values >= max + log(min_p), each filter keeps at least one token; then one float64
 * uniform u per row picks the first token whose running mass, in vocabulary order, exceeds u times
 * the total. Greedy rows (temperature 0) take the first largest value. The kept set is the values
 * >= one cut, the largest of the filters' cuts, so top-k, top-p and min-p are one threshold each.
 *
 * No sort: a cut is "the largest value v whose elements >= v weigh at least t" (weight 1 for top-k
 * and for the candidates, e^(y - max) for top-p), found by bisecting the value range with one
 * vector pass per halving until at most SELECT_SORT values remain, which are then sorted. The
 * masses are summed in float64 in another order than a sorted cumulative sum; float32 terms that
 * matter (> 2^-29 of the total) add exactly in float64, so the cut is the same.
 *
 * Penalties (repetition, presence, frequency) are applied here too, from the sampler's seen/counts
 * state, which each draw then updates with its token. A top-k row with k <= TOPK_KEPT (and a row's
 * candidates) takes its kept set in one pass instead: values under the running k-th largest are
 * skipped, and everything after works on the few kept values (top_k_kept); so does a min-p row
 * without top-k whose min-p set is small (min_p_kept, in the pass that weighs the row).
 */

typedef double v8d __attribute__((vector_size(64)));

/* At most this many values left in the bisected range are sorted (by insertion: n^2 / 4 moves). */
#define SELECT_SORT 64

/* A v16's low and high 8 floats as float64 (exact). With AVX-512 one conversion each: GCC lowers the
 * generic vectors' conversion to four 4-lane ones and three inserts. */
static inline v8d lo8d(v16 v) {
#if defined(__AVX512F__)
    return (v8d)_mm512_cvtps_pd(_mm512_castps512_ps256((__m512)v));
#else
    return __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), v8d);
#endif
}
static inline v8d hi8d(v16 v) {
#if defined(__AVX512F__)
    return (v8d)_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)v), 1)));
#else
    return __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), v8d);
#endif
}
static inline double hsum8d(v8d v) { return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7])); }

/* How many of y[0..n) lie in [a, b], and their weight (w NULL: 1 each). */
typedef struct {
    int64_t n;
    double w;
} Mass;

static Mass mass_in(const float *y, const float *w, int n, float a, float b) {
    v16i cnt = {0};
    v8d acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const v16 v = load16(y + i);
        const v16i in = (v >= splat(a)) & (v <= splat(b));
        cnt -= in;
        if (w) {
            const v16 x = (v16)((v16i)load16(w + i) & in);
            acc += lo8d(x) + hi8d(x);
        }
    }
    Mass m = {0, hsum8d(acc)};
    for (int j = 0; j < 16; j++)
        m.n += cnt[j];
    for (; i < n; i++)
        if (y[i] >= a && y[i] <= b)
            m.n++, m.w += w ? w[i] : 0.0;
    if (!w)
        m.w = (double)m.n;
    return m;
}

/* Floats in order as signed integers (for bisecting between two floats of very different sizes). */
static inline int32_t float_key(float f) {
    int32_t i;
    memcpy(&i, &f, 4);
    return i < 0 ? (int32_t)(i ^ 0x7fffffff) : i;
}
static inline float key_float(int32_t k) {
    int32_t i = k < 0 ? (int32_t)(k ^ 0x7fffffff) : k;
    float f;
    memcpy(&f, &i, 4);
    return f;
}

typedef struct {
    float y, w;
} Pair;

/* Descending by value (insertion sort: at most SELECT_SORT elements). */
static void sort_pairs(Pair *p, int n) {
    for (int i = 1; i < n; i++) {
        Pair v = p[i];
        int j = i;
        for (; j > 0 && p[j - 1].y < v.y; j--)
            p[j] = p[j - 1];
        p[j] = v;
    }
}

/* Copy the y[i] in [a, b] (and their w[i], unless w is NULL) to cy (cw) in order; returns how
 * many. Works in place (y == cy): a write never passes the read position. */
static int compact(const float *y, const float *w, int n, float a, float b, float *cy, float *cw) {
    int m = 0, i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(y + i);
        const __mmask16 k = _mm512_cmp_ps_mask(v, _mm512_set1_ps(a), _CMP_GE_OQ) &
                            _mm512_cmp_ps_mask(v, _mm512_set1_ps(b), _CMP_LE_OQ);
        if (!k)
            continue;
        _mm512_storeu_ps(cy + m, _mm512_maskz_compress_ps(k, v));
        if (w)
            _mm512_storeu_ps(cw + m, _mm512_maskz_compress_ps(k, _mm512_loadu_ps(w + i)));
        m += __builtin_popcount(k);
    }
#endif
    for (; i < n; i++)
        if (y[i] >= a && y[i] <= b) {
            cy[m] = y[i];
            if (w)
                cw[m] = w[i];
            m++;
        }
    return m;
}

/* The largest value v of the finite y[i] >= floor such that the elements >= v weigh at least t (w
 * NULL: weight 1, so t = k gives the k-th largest value with ties counted); -inf when the finite
 * ones never reach t (keep them all). Scratch: cy, cw (n floats each) and buf (SELECT_SORT pairs).
 * Invariant of the loop: the answer lies in [a, b], and `above` is the weight of the values > b;
 * once at most an eighth of the values are in [a, b], the search goes on over a copy of only those. */
static float select_cut(const float *y, const float *w, int n, float floor, double t, float *cy, float *cw,
                        Pair *buf) {
    float a = INFINITY, b = -INFINITY; /* the finite candidates' range */
    v16 va = splat(INFINITY), vb = splat(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const v16 v = load16(y + i);
        const v16i ok = (v >= splat(floor)) & (v < splat(INFINITY));
        va = select16(ok & (v < va), v, va), vb = select16(ok & (v > vb), v, vb);
    }
    for (int j = 0; j < 16; j++)
        a = va[j] < a ? va[j] : a, b = vb[j] > b ? vb[j] : b;
    for (; i < n; i++)
        if (y[i] >= floor && y[i] < INFINITY)
            a = y[i] < a ? y[i] : a, b = y[i] > b ? y[i] : b;
    if (a > b)
        return -INFINITY;
    Mass in = mass_in(y, w, n, a, b);
    if (in.w < t)
        return -INFINITY;
    double above = 0.0;
    for (int iter = 0; in.n > SELECT_SORT && a < b; iter++) {
        if (in.n * 8 <= n) {
            n = compact(y, w, n, a, b, cy, cw);
            y = cy, w = w ? cw : NULL;
        }
        /* Halve the values while that works (24 times takes a float range to its last bits), then
         * the floats themselves (at most 32 more), so the loop ends even for clustered values. */
        float mid = iter < 24 ? a * 0.5f + b * 0.5f : key_float((int32_t)(((int64_t)float_key(a) + float_key(b) + 1) / 2));
        if (!(mid > a))
            mid = nextafterf(a, INFINITY);
        if (mid > b)
            mid = b;
        const Mass hi = mass_in(y, w, n, mid, b);
        if (above + hi.w >= t) {
            a = mid, in = hi;
        } else {
            above += hi.w, in.n -= hi.n;
            b = nextafterf(mid, -INFINITY);
        }
    }
    if (a == b)
        return a;
    int m = 0;
    for (i = 0; i < n; i += 16) { /* blocks without a value in [a, b] (nearly all) cost one test */
        const int end = i + 16 <= n ? i + 16 : n;
        if (end - i == 16) {
            const v16 v = load16(y + i);
            const v16i in_ab = (v >= splat(a)) & (v <= splat(b));
            int any = 0;
            for (int j = 0; j < 16; j++)
                any |= in_ab[j];
            if (!any)
                continue;
        }
        for (int j = i; j < end; j++)
            if (y[j] >= a && y[j] <= b && m < SELECT_SORT)
                buf[m++] = (Pair){y[j], w ? w[j] : 1.0f};
    }
    sort_pairs(buf, m);
    for (int i = 0; i < m; i++) {
        above += buf[i].w;
        if (above >= t)
            return buf[i].y;
    }
    return m ? buf[m - 1].y : a; /* rounding kept the sum a hair below t: keep the whole range */
}

static float max_of(const float *x, int n) { return scan_max(x, n, NULL); }

/* The largest of a row's sampling logits z: the stats' max mx where z is the row's logits x. */
static inline float max_of_z(const float *x, const float *z, int V, float mx) {
    return z == x ? mx : max_of(z, V);
}

/* The 16 values at x into a row's float64 sums: *s += e, *sd += e (x - m) with e = e^(x - m)
 * (kept at keep, or NULL); an e of 0 (a -inf logit) adds nothing to either. */
static inline __attribute__((always_inline)) void stats16(const float *x, float m, v8d *s, v8d *sd, float *keep) {
    const v16 d = load16(x) - splat(m);
    const v16 e = exp16(d);
    const v16 ed = (v16)((v16i)(e * d) & (e > splat(0.f)));
    *s += lo8d(e) + hi8d(e), *sd += lo8d(ed) + hi8d(ed);
    if (keep)
        store16(keep, e);
}

/* The model's own distribution of a row: its log-normaliser (max + log sum e^(x - max)) and
 * entropy (nats), or NaN for both when the row holds NaN or +inf or nothing finite; returns the
 * largest value. keep_e: where to leave e^(x - max) too (or NULL), *sum their sum. */
static float row_stats(const float *x, int n, float *lse, float *entropy, float *keep_e, double *sum) {
    int nonfinite;
    const float m = scan_max(x, n, &nonfinite);
    if (nonfinite || m == -INFINITY) {
        *lse = *entropy = NAN, *sum = 0.0;
        return m;
    }
    /* two pairs of sums, blocks of 16 taking turns: one pair waited on the exponentials' latency */
    v8d s[2] = {{0}}, sd[2] = {{0}}; /* sum e, sum e (x - max); -inf logits give e = 0 and add nothing */
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 2; k++)
            stats16(x + i + 16 * k, m, &s[k], &sd[k], keep_e ? keep_e + i + 16 * k : NULL);
    for (; i + 16 <= n; i += 16)
        stats16(x + i, m, &s[0], &sd[0], keep_e ? keep_e + i : NULL);
    double S = hsum8d(s[0] + s[1]), SD = hsum8d(sd[0] + sd[1]);
    for (; i < n; i++) {
        const float d = x[i] - m, e = expf(d);
        S += e, SD += e > 0.f ? (double)e * d : 0.0;
        if (keep_e)
            keep_e[i] = e;
    }
    *sum = S;
    *lse = m + (float)log(S);
    *entropy = (float)(log(S) - SD / S); /* -sum p log p with p = e / S and log p = d - log S */
    return m;
}

/* The first index of the row's largest value m. */
static int argmax_first(const float *x, int n, float m) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const v16i hit = load16(x + i) == splat(m);
        for (int j = 0; j < 16; j++)
            if (hit[j])
                return i + j;
    }
    for (; i < n; i++)
        if (x[i] == m)
            return i;
    return 0; /* NaN rows: generate ends them */
}

/* v / T, the temperature's division (T > 0); at temperature 1 none (x / 1 is x, bit for bit), which
 * spares the divider (~10 cycles a vector of 16 here) a pass over the row. */
static inline v16 over_t(v16 v, float T) { return T == 1.f ? v : v / splat(T); }

/* y[i] = z[i] / T (a row's logits at its temperature) and e[i] = e^(y[i] - m), m the largest y;
 * returns the sum of e (float64). The row's one pass of exponentials: the filters then only mask. */
static inline __attribute__((always_inline)) v8d scale16(const float *z, float T, float m, float *y, float *e) {
    const v16 v = over_t(load16(z), T), x = exp16(v - splat(m));
    store16(y, v), store16(e, x);
    return lo8d(x) + hi8d(x);
}

static double scale_and_weigh(const float *z, float T, float m, float *y, float *e, int n) {
    v8d s[2] = {{0}}; /* two sums, blocks of 16 taking turns: one waited on the exponentials' latency */
    int i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 2; k++)
            s[k] += scale16(z + i + 16 * k, T, m, y + i + 16 * k, e + i + 16 * k);
    for (; i + 16 <= n; i += 16)
        s[0] += scale16(z + i, T, m, y + i, e + i);
    double S = hsum8d(s[0] + s[1]);
    for (; i < n; i++) {
        y[i] = z[i] / T, e[i] = expf(y[i] - m);
        S += e[i];
    }
    return S;
}

/* e[i] = 0 where y[i] < cut (weights made for a lower cut); returns their new sum (float64). */
static double drop_below_cut(const float *y, float *e, int n, float cut) {
    v8d s = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const v16 x = (v16)((v16i)load16(e + i) & (load16(y + i) >= splat(cut)));
        store16(e + i, x);
        s += lo8d(x) + hi8d(x);
    }
    double S = hsum8d(s);
    for (; i < n; i++) {
        e[i] = y[i] >= cut ? e[i] : 0.f;
        S += e[i];
    }
    return S;
}

/* The first index whose running weight (vocabulary order) exceeds target < the total: blocks of 16
 * first, then within the block; a zero-weight index is never returned. */
static int inverse_cdf(const float *e, int n, double target) {
    double acc = 0.0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const v16 x = load16(e + i);
        const double blk = hsum8d(lo8d(x) + hi8d(x));
        if (acc + blk > target)
            break;
        acc += blk;
    }
    int last = -1;
    for (; i < n; i++)
        if (e[i] > 0.f) {
            last = i;
            acc += e[i];
            if (acc > target)
                return i;
        }
    if (last >= 0)
        return last; /* the block sum rounded past target: its last kept token */
    for (i = n - 1; i > 0 && !(e[i] > 0.f); i--)
        ;
    return i;
}

/* Per-row settings, as BatchSampler holds them; seen and counts: the row's penalty state (V each)
 * or NULL where the row's penalty is off. */
typedef struct {
    float temperature, top_p, min_p;
    int64_t top_k;
    double u;
    float repetition, presence, frequency;
    const uint8_t *seen;
    const float *counts;
} RowParams;

/* Scratch of one thread: z, y, e, cy and cw (V floats each), kept (a top-k row's kept ids, V),
 * the candidates (V each, as indices and as (logit, id)) and the sort buffer. */
typedef struct Cand Cand;
typedef struct {
    float *z, *y, *e, *cy, *cw;
    int *kept, *idx;
    Cand *cand;
    Pair *buf;
} Scratch;

/* The sampling cut of a non-greedy row, the largest of top-k's, top-p's and min-p's thresholds
 * (-inf: keep all), given n scaled logits y (largest m) and their weights s->e (sum mass): the
 * whole row (top-k's cut found here), or its top-k kept set (cut: top-k's, already applied). */
static float row_cut(const RowParams *p, const float *y, int n, int whole, float cut, float m, double mass,
                     Scratch *s) {
    if (whole && p->top_k > 0 && p->top_k < n)
        cut = select_cut(y, NULL, n, -INFINITY, (double)p->top_k, s->cy, s->cw, s->buf);
    /* min-p's cut first: top-p's only matters where it lies above it, so the search starts there
     * (select_cut's floor; -inf back means top-p's cut lies below: the floor stands). */
    const float floor = p->min_p > 0.f && m + logf(p->min_p) > cut ? m + logf(p->min_p) : cut;
    if (p->top_p < 1.f) {
        if (cut > -INFINITY)
            mass = drop_below_cut(y, s->e, n, cut); /* top-p weighs what top-k kept */
        /* float32's epsilon of slack: [0.5, 0.3] sums to a hair under 0.8 and must stop there */
        const double t = ((double)p->top_p - 1.1920928955078125e-07) * mass;
        const float c = select_cut(y, s->e, n, floor, t, s->cy, s->cw, s->buf);
        cut = c > cut ? c : cut;
    }
    return floor > cut ? floor : cut;
}

/* Candidates by the model: its logit and token id, ordered largest first, ties by lower id. */
struct Cand {
    float x;
    int id;
};

static int cand_order(const void *pa, const void *pb) {
    const Cand *a = pa, *b = pb;
    return a->x > b->x ? -1 : a->x < b->x ? 1 : (a->id > b->id) - (a->id < b->id);
}

/* Top-k rows with k at most this sample from their top-k kept set, found in one pass, instead of
 * the whole row: a 49k row's bisection, exponentials and weight passes cost ~100 us, and three of
 * the four bundled presets use top-k (20 or 40). */
#define TOPK_KEPT 256
/* Room for the kept values while the pass runs (thinned to the running k-th largest when full). */
#define TOPK_ROOM 1024

/* 16 floats from p, of which the n < 16 past the end are -inf. */
static inline v16 load16_tail(const float *p, int n) {
    v16 v = splat(-INFINITY);
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}

/* Bit j set where v[j] >= thr and v[j] > -inf. */
static inline uint32_t at_least(v16 v, float thr) {
#if defined(__AVX512F__)
    __m512 w;
    memcpy(&w, &v, sizeof w);
    return _mm512_cmp_ps_mask(w, _mm512_set1_ps(thr), _CMP_GE_OQ) &
           _mm512_cmp_ps_mask(w, _mm512_set1_ps(-INFINITY), _CMP_GT_OQ);
#else
    const v16i ok = (v >= splat(thr)) & (v > splat(-INFINITY));
    uint32_t bits = 0;
    for (int j = 0; j < 16; j++)
        bits |= (uint32_t)(ok[j] & 1) << j;
    return bits;
#endif
}

/* Keep the (id, y) pairs with y >= thr, in order; returns how many. */
static int keep_at_least(int *id, float *y, int n, float thr) {
    int m = 0;
    for (int j = 0; j < n; j++)
        if (y[j] >= thr)
            id[m] = id[j], y[m] = y[j], m++;
    return m;
}

/* A z below which z / T (T > 0, rounded) stays under thr: thr T less a 2^-20 share of itself
 * (division rounds by 2^-24 at most) and a sliver for subnormal quotients; -inf for thr -inf. So a
 * block of z without a value at or above it is skipped before dividing, and the same values are
 * kept as dividing every block would keep. */
static inline float z_floor(float thr, float T) {
    if (thr == -INFINITY)
        return -INFINITY;
    const double b = (double)thr * T; /* exact: two 24-bit significands */
    return (float)(b - fabs(b) * 0x1p-20 - (double)T * 0x1p-120);
}

/* Top-k's kept set in one pass over z: the ids (ascending) and scaled logits z[i] / T (the same
 * division as scale_and_weigh) of the finite values >= the k-th largest (ties counted; all of them
 * when fewer than k are finite), into id and y; *cut = the k-th largest, or -inf. Values below a
 * running threshold, the k-th largest seen so far, are skipped: it only rises, so none of them
 * could be kept. Returns how many, or -1 when ties leave no room (the caller takes the whole row). */
static int top_k_kept(const float *z, int V, float T, int k, int *id, float *y, float *cut, Scratch *s) {
    float thr = -INFINITY, below = -INFINITY; /* below: no z under it can reach thr (z_floor) */
    int n = 0;
    for (int i = 0; i < V; i += 16) {
        const v16 zv = i + 16 <= V ? load16(z + i) : load16_tail(z + i, V - i);
        if (!at_least(zv, below))
            continue; /* nearly every block once the room has filled: no division */
        const v16 v = over_t(zv, T);
        uint32_t bits = at_least(v, thr);
        if (!bits)
            continue;
        if (n + 16 > TOPK_ROOM) {
            thr = select_cut(y, NULL, n, -INFINITY, (double)k, s->cy, s->cw, s->buf);
            below = z_floor(thr, T);
            n = keep_at_least(id, y, n, thr);
            if (n + 16 > TOPK_ROOM / 2)
                return -1;
            bits = at_least(v, thr);
        }
        for (; bits; bits &= bits - 1) {
            const int j = __builtin_ctz(bits);
            id[n] = i + j, y[n] = v[j], n++;
        }
    }
    *cut = select_cut(y, NULL, n, -INFINITY, (double)k, s->cy, s->cw, s->buf);
    return keep_at_least(id, y, n, *cut);
}

/* A min-p row's kept set in one pass: y = z / T and e = e^(y - m) as scale_and_weigh makes them,
 * their float64 total over the whole row in *total (the same sum: top-p weighs against it), and
 * the ids (ascending), y and e of the values >= cut (min-p's) into id, y and e. Returns how many,
 * or -1 as soon as they pass TOPK_ROOM (a flat row: the caller goes through the whole row). */
static int min_p_kept(const float *z, int V, float T, float m, float cut, int *id, float *y, float *e,
                      double *total) {
    v8d s = {0};
    int n = 0, i = 0;
    for (; i + 16 <= V; i += 16) {
        const v16 v = over_t(load16(z + i), T), x = exp16(v - splat(m));
        s += lo8d(x) + hi8d(x);
        uint32_t bits = at_least(v, cut);
        if (bits && n + 16 > TOPK_ROOM)
            return -1;
        for (; bits; bits &= bits - 1) {
            const int j = __builtin_ctz(bits);
            id[n] = i + j, y[n] = v[j], e[n] = x[j], n++;
        }
    }
    double S = hsum8d(s);
    for (; i < V; i++) {
        const float v = z[i] / T, x = expf(v - m);
        S += x;
        if (v >= cut && v > -INFINITY) {
            if (n == TOPK_ROOM)
                return -1;
            id[n] = i, y[n] = v, e[n] = x, n++;
        }
    }
    *total = S;
    return n;
}

/* Where id lies in the ascending ids[0..n), or -1. */
static int find_id(const int *ids, int n, int id) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        if (ids[mid] == id)
            return mid;
        if (ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* The n_top largest x (model logits) as indices in s->idx, largest first (ties: lower index
 * first). The values >= the n_top-th (n_top plus its ties) are sorted: O(m log m) even when a
 * caller asks for the whole vocabulary. For n_top up to TOPK_KEPT they are found in one pass (as a
 * top-k row's kept set, into s->idx and s->z: sampling is done with both), else by bisection. */
static int top_candidates(const float *x, int V, int n_top, Scratch *s) {
    float v;
    int m = n_top <= TOPK_KEPT ? top_k_kept(x, V, 1.f, n_top, s->idx, s->z, &v, s) : -1;
    if (m >= n_top) { /* (fewer: the row has -inf or NaN entries, which the bisection orders too) */
        for (int j = 0; j < m; j++)
            s->cand[j] = (Cand){s->z[j], s->idx[j]};
    } else {
        v = select_cut(x, NULL, V, -INFINITY, (double)n_top, s->cy, s->cw, s->buf);
        m = 0;
        for (int i = 0; i < V; i++)
            if (x[i] >= v)
                s->cand[m++] = (Cand){x[i], i};
    }
    qsort(s->cand, (size_t)m, sizeof(Cand), cand_order);
    const int got = m < n_top ? m : n_top;
    for (int j = 0; j < got; j++)
        s->idx[j] = s->cand[j].id;
    return got;
}

typedef uint8_t v16b __attribute__((vector_size(16)));

/* z = x with the row's penalties, as apply_penalties (sampling_stages.py) computes them, op by op: a seen
 * token's logit divided by the repetition penalty when positive, multiplied when negative; then
 * minus frequency * count, minus presence where the count is positive. Contracting a product and a
 * difference into one fused op would round once where torch rounds twice, so it is off here. */
__attribute__((optimize("fp-contract=off"))) static void penalise(const float *x, const RowParams *p, float *z,
                                                                  int n) {
    const v16 rep = splat(p->repetition), pres = splat(p->presence), freq = splat(p->frequency);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 v = load16(x + i);
        v16b b = {0};
        if (p->seen)
            memcpy(&b, p->seen + i, sizeof b);
        uint64_t any[2]; /* the few tokens seen: most blocks of 16 have none (and skip the division) */
        memcpy(any, &b, sizeof any);
        if (any[0] | any[1]) {
            const v16i on = __builtin_convertvector(b, v16i) != 0;
            v = select16(on, select16(v < splat(0.f), v * rep, v / rep), v);
        }
        if (p->counts) {
            const v16 c = load16(p->counts + i);
            v = v - freq * c;
            v = v - select16(c > splat(0.f), pres, splat(0.f));
        }
        store16(z + i, v);
    }
    for (; i < n; i++) {
        float v = x[i];
        if (p->seen && p->seen[i])
            v = v < 0.f ? v * p->repetition : v / p->repetition;
        if (p->counts) {
            v = v - p->frequency * p->counts[i];
            v = v - (p->counts[i] > 0.f ? p->presence : 0.f);
        }
        z[i] = v;
    }
}

/* A non-greedy row's scaled logits s->y (or x itself when same) and their weights s->e, before
 * the cuts: a top-k row's kept set, a min-p row's when small (a trained model's peaked row: top-p's
 * cut, if any, lies within it), or the whole row. Returns how many (n); *kept: their ascending
 * ids (NULL: the whole row, position = id); *m: the largest; *mass: the weights' float64 sum over
 * the whole row; *cut: top-k's where it was applied (else left). */
static int row_weights(const float *x, const float *z, int V, const RowParams *p, int same, float mx,
                       const int **kept, float *m, double *mass, float *cut, Scratch *s) {
    const float T = p->temperature;
    const int top_k_on = p->top_k > 0 && p->top_k < V;
    if (top_k_on && p->top_k <= TOPK_KEPT) {
        const int n = top_k_kept(z, V, T, (int)p->top_k, s->kept, s->y, cut, s);
        if (n >= 0) {
            *kept = s->kept, *m = max_of(s->y, n);
            *mass = scale_and_weigh(s->y, 1.f, *m, s->y, s->e, n); /* y / 1 is y: only the weights */
            return n;
        }
    }
    /* Division rounds monotonically, so the largest z / T is the largest z divided by T. */
    *m = max_of_z(x, z, V, mx) / T;
    if (same) /* row_stats left the weights */
        return V;
    if (p->min_p > 0.f && !top_k_on) {
        const int n = min_p_kept(z, V, T, *m, *m + logf(p->min_p), s->kept, s->y, s->e, mass);
        if (n >= 0) {
            *kept = s->kept;
            return n;
        }
    }
    *mass = scale_and_weigh(z, T, *m, s->y, s->e, V);
    return V;
}

/* One row: x the model's logits; z the logits sampling starts from: x, or x with the row's
 * penalties (made in s->z). Sampling reads n scaled logits y and weights s->e: the whole row
 * (kept NULL, position = token id), or a kept set (kept: their ascending ids; row_weights). */
static void sample_row(const float *x, int V, const RowParams *p, int n_top, int64_t *chosen,
                       float *stats, int64_t *top_id, float *top_lp, float *top_ps, Scratch *s) {
    const float *z = x;
    if (p->seen || p->counts) {
        penalise(x, p, s->z, V);
        z = s->z;
    }
    const int greedy = p->temperature == 0.f;
    const int by_kept = !greedy && p->top_k > 0 && p->top_k <= TOPK_KEPT && p->top_k < V;
    float lse, entropy;
    /* At temperature 1 the sampling weights are the model's own: the stats' pass leaves them. */
    const int same = z == x && p->temperature == 1.f && !by_kept;
    double mass;
    const float mx = row_stats(x, V, &lse, &entropy, same ? s->e : NULL, &mass);
    const float *y = same ? x : s->y; /* the scaled logits */
    const int *kept = NULL;
    int n = V, c, at = 0; /* at: the chosen token's position in y */
    float cut = -INFINITY;
    if (lse != lse) {
        c = 0; /* a NaN log-prob ends the row */
    } else if (greedy) {
        c = argmax_first(z, V, max_of_z(x, z, V, mx));
    } else {
        float m;
        n = row_weights(x, z, V, p, same, mx, &kept, &m, &mass, &cut, s);
        cut = row_cut(p, y, n, !kept, cut, m, mass, s);
        if (cut > -INFINITY)
            mass = drop_below_cut(y, s->e, n, cut);
        double target = p->u * mass;
        if (target >= mass)
            target = nextafter(mass, 0.0); /* u * total may round up to the total */
        at = inverse_cdf(s->e, n, target);
        c = kept ? kept[at] : at;
    }
    *chosen = c;
    stats[0] = x[c] - lse;
    stats[1] = lse != lse ? NAN : greedy ? 1.f : (float)(s->e[at] / mass);
    stats[2] = entropy;
    if (!n_top)
        return;
    const int got = top_candidates(x, V, n_top, s);
    for (int j = 0; j < n_top; j++) {
        const int i = j < got ? s->idx[j] : 0, k = kept ? find_id(kept, n, i) : i;
        top_id[j] = i;
        top_lp[j] = x[i] - lse;
        top_ps[j] = greedy ? (float)(i == c) : k >= 0 && y[k] >= cut ? (float)(s->e[k] / mass) : 0.f;
    }
}

/* This thread's scratch for rows of V, kept between calls (a new buffer each step would be fresh
 * pages to fault in every time); NULL without memory. */
static __thread Scratch scratch_of_thread;
static __thread int scratch_cap;

static Scratch *scratch(int V) {
    Scratch *s = &scratch_of_thread;
    if (scratch_cap < V) {
        free(s->z), free(s->y), free(s->e), free(s->cy), free(s->cw), free(s->kept), free(s->idx), free(s->cand);
        free(s->buf);
        s->z = malloc((size_t)V * sizeof(float));
        s->y = malloc((size_t)V * sizeof(float));
        s->e = malloc((size_t)V * sizeof(float));
        s->cy = malloc((size_t)V * sizeof(float));
        s->cw = malloc((size_t)V * sizeof(float));
        s->kept = malloc((size_t)V * sizeof(int));
        s->idx = malloc((size_t)V * sizeof(int));
        s->cand = malloc((size_t)V * sizeof(Cand));
        s->buf = malloc(SELECT_SORT * sizeof(Pair));
        scratch_cap = s->z && s->y && s->e && s->cy && s->cw && s->kept && s->idx && s->cand && s->buf ? V : 0;
    }
    return scratch_cap ? s : NULL;
}

/* Draw one token for each of B rows of logits (B, V) float32. Per row: temperature (0 = greedy),
 * top_k (0 = off), top_p (>= 1 = off), min_p (0 = off), u one float64 uniform in [0, 1) (unused by
 * greedy rows), and the penalties: repetition (1 = off) on the tokens of seen (B, V) bool bytes,
 * presence and frequency (0 = off) on counts (B, V) float32 (seen, counts: NULL where no row
 * keeps that state). Sampling starts from the penalised logits; the model's own distribution
 * (log-probs, entropy, candidates) is the raw logits'. The drawn tokens are then recorded in that
 * state (seen set, count + 1: sampling.py's update) for the next draw. Out, per row b:
 * ids[b] (1 + n_top) int64: the token, then the n_top most likely tokens by the model; vals[b]
 * (3 + 2 n_top) float32: the token's log-prob under the model, its probability under the
 * sampling distribution, the model distribution's entropy (nats), then the candidates' log-probs,
 * then their sampling probabilities. A row holding NaN or +inf gets NaN stats. Rows are shared
 * between the threads. Returns 0, or -1 without memory. */
int tk_sample(int B, int V, const float *logits, const float *temperature, const int64_t *top_k, const float *top_p,
              const float *min_p, const double *u, const float *repetition, const float *presence,
              const float *frequency, uint8_t *seen, float *counts, int n_top, int64_t *ids, float *vals,
              int n_threads) {
    int failed = 0;
#pragma omp parallel for num_threads(B < n_threads ? B : n_threads) schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        Scratch *s = scratch(V);
        if (!s) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        const size_t off = (size_t)b * V;
        const int rep = seen && repetition[b] != 1.f, freq = counts && (presence[b] != 0.f || frequency[b] != 0.f);
        const RowParams p = {temperature[b],          top_p[b],           min_p[b],
                             top_k[b],                u[b],               rep ? repetition[b] : 1.f,
                             freq ? presence[b] : 0.f, freq ? frequency[b] : 0.f, rep ? seen + off : NULL,
                             freq ? counts + off : NULL};
        int64_t *id = ids + (size_t)b * (1 + n_top);
        float *val = vals + (size_t)b * (3 + 2 * n_top);
        sample_row(logits + off, V, &p, n_top, id, val, id + 1, val + 3, val + 3 + n_top, s);
        if (seen) /* after the row's draw: the row alone reads and writes its state */
            seen[off + id[0]] = 1;
        if (counts)
            counts[off + id[0]] += 1.f;
    }
    return failed ? -1 : 0;
}
