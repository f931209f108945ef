/* Kernels over rows of T elements (weights, cached keys or values) against float32 vectors.
 * Included by decode.c once per element type, with T, SUF (name suffix), LOAD(p) (16 elements
 * as a v16) and GET(p, i) (one element as a float) defined. */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define NAME(f) CAT(f, SUF)

/* a . b over n elements. */
static inline float NAME(dot)(const T *a, const float *b, int n) {
    v16 s0 = {0}, s1 = {0}; /* two chains hide the multiply-add latency */
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __builtin_prefetch(a + i + PREFETCH);
        __builtin_prefetch(a + i + PREFETCH + 16);
        s0 += LOAD(a + i) * load16(b + i);
        s1 += LOAD(a + i + 16) * load16(b + i + 16);
    }
    for (; i + 16 <= n; i += 16)
        s0 += LOAD(a + i) * load16(b + i);
    float s = hsum(s0 + s1);
    for (; i < n; i++)
        s += GET(a, i) * b[i];
    return s;
}

/* out[b] = w . x[b] for nb (2..4) rows of x (nb, n): each 16-element chunk of w is loaded once
 * for all of them. Measured (2 threads, AVX-512, SmolLM-135M shape, float32): one weight row at a
 * time is fastest; tiles of 2 or 4 weight rows were 12% slower at one x row and up to a third
 * slower at 2-4 (and one x row is best served by dot()'s two sums). Each row of x keeps dot()'s
 * two sums (even and odd chunks), so out[b] is dot(w, x[b], n) bit for bit; with one sum a row,
 * four rows of the float32 135M model took 3-14 % longer a step (streamed products of 25-38 MB,
 * 2 threads: 8-19 %). */
static inline __attribute__((always_inline)) void NAME(tile)(const T *w, const float *x, int n, const int nb,
                                                             float *out) {
    v16 s0[4] = {{0}}, s1[4] = {{0}};
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __builtin_prefetch(w + i + PREFETCH);
        __builtin_prefetch(w + i + PREFETCH + 16);
        const v16 w0 = LOAD(w + i), w1 = LOAD(w + i + 16);
        for (int b = 0; b < nb; b++) {
            s0[b] += w0 * load16(x + (int64_t)b * n + i);
            s1[b] += w1 * load16(x + (int64_t)b * n + i + 16);
        }
    }
    for (; i + 16 <= n; i += 16) {
        const v16 w0 = LOAD(w + i);
        for (int b = 0; b < nb; b++)
            s0[b] += w0 * load16(x + (int64_t)b * n + i);
    }
    for (int b = 0; b < nb; b++) {
        float s = hsum(s0[b] + s1[b]);
        for (int k = i; k < n; k++)
            s += GET(w, k) * x[(int64_t)b * n + k];
        out[b] = s;
    }
}

/* out[r nb + b] = w_r . x[b] for the four consecutive weight rows w_r = w + r n and nb (2..4) rows
 * of x: each 16-float chunk of x is loaded once for two weight rows at a time. For long rows, where
 * tile() would stream all nb rows of x again for every weight row (they no longer fit in L1 beside
 * it). Each (row, x row) keeps dot()'s two sums (even and odd chunks), so out[r nb + b] is
 * dot(w_r, x[b], n) bit for bit: a row's logits are the same at any batch size (with one sum a
 * pair, as this once summed, a 768-wide GPT-2's log-probs moved by 1.9e-6 between --batch-size 1
 * and 4). Two weight rows, not four: 2 x 4 x 2 sums, 8 chunks of x and 2 of w fit the 32 vector
 * registers. */
static inline __attribute__((always_inline)) void NAME(tile4)(const T *w, const float *x, int n, const int nb,
                                                              float *out) {
    for (int r0 = 0; r0 < 4; r0 += 2) {
        v16 s0[2][4] = {{{0}}}, s1[2][4] = {{{0}}};
        int i = 0;
        for (; i + 32 <= n; i += 32) {
            v16 x0[4], x1[4];
            for (int b = 0; b < nb; b++)
                x0[b] = load16(x + (int64_t)b * n + i), x1[b] = load16(x + (int64_t)b * n + i + 16);
            for (int r = 0; r < 2; r++) {
                const T *wr = w + (int64_t)(r0 + r) * n;
                __builtin_prefetch(wr + i + PREFETCH);
                __builtin_prefetch(wr + i + PREFETCH + 16);
                const v16 w0 = LOAD(wr + i), w1 = LOAD(wr + i + 16);
                for (int b = 0; b < nb; b++) {
                    s0[r][b] += w0 * x0[b];
                    s1[r][b] += w1 * x1[b];
                }
            }
        }
        for (; i + 16 <= n; i += 16)
            for (int r = 0; r < 2; r++) {
                const v16 w0 = LOAD(w + (int64_t)(r0 + r) * n + i);
                for (int b = 0; b < nb; b++)
                    s0[r][b] += w0 * load16(x + (int64_t)b * n + i);
            }
        for (int r = 0; r < 2; r++)
            for (int b = 0; b < nb; b++) {
                float s = hsum(s0[r][b] + s1[r][b]);
                for (int k = i; k < n; k++)
                    s += GET(w, (int64_t)(r0 + r) * n + k) * x[(int64_t)b * n + k];
                out[(r0 + r) * nb + b] = s;
            }
    }
}

/* out[r nb + b] for 4 consecutive weight rows and nb (1..4) rows of x: tile4, or per row. */
static inline void NAME(rows4)(const T *w, const float *x, int n, int nb, float *out) {
    switch (nb) {
    case 2: NAME(tile4)(w, x, n, 2, out); break;
    case 3: NAME(tile4)(w, x, n, 3, out); break;
    case 4: NAME(tile4)(w, x, n, 4, out); break;
    default:
        for (int r = 0; r < 4; r++)
            out[r] = NAME(dot)(w + (int64_t)r * n, x, n);
    }
}

/* out[b] = w . x[b] for all B rows of x (B, n), in groups of up to four. */
static inline void NAME(dot_rows)(const T *w, const float *x, int n, int B, float *out) {
    for (int b = 0; b < B; b += 4, x += (int64_t)4 * n, out += 4) {
        switch (B - b < 4 ? B - b : 4) {
        case 1: out[0] = NAME(dot)(w, x, n); break;
        case 2: NAME(tile)(w, x, n, 2, out); break;
        case 3: NAME(tile)(w, x, n, 3, out); break;
        default: NAME(tile)(w, x, n, 4, out);
        }
    }
}

/* y += a * x over n elements. */
static inline void NAME(axpy)(float *y, float a, const T *x, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
        store16(y + i, load16(y + i) + splat(a) * LOAD(x + i));
    for (; i < n; i++)
        y[i] += a * GET(x, i);
}

#undef NAME
#undef CAT
#undef CAT_
