/* Quantized rows back to float32, for an embedding lookup (included by decode.c; tk_dequantize_rows).
 *
 * Why: a decode step looks up one embedding row per batch row. quant.py's torch dequantizers take
 * ~20 tensor ops for that, each a few microseconds once the step has streamed the weights through
 * every cache, and each lets the GIL go (in the playground, each then waits to get it back). Here
 * it is one call.
 *
 * The arithmetic is quant.py's, op for op, so the floats are the same bits: float32 products and
 * differences each rounded on its own (no fused multiply-add: fp-contract is off for this file's
 * functions), the fp16 scales widened exactly. Layouts: engine/quant.py's comments.
 */

#define DQ_NOFMA __attribute__((optimize("fp-contract=off")))

/* One block of `type` at w -> its elements (32, or 256 for the K-types) at y. */
static DQ_NOFMA void dequantize_block(int type, const uint8_t *w, float *y) {
    switch (type) {
    case T_Q8_0: {
        const float d = fp16(w);
        for (int i = 0; i < 32; i++)
            y[i] = d * (float)(int8_t)w[2 + i];
        return;
    }
    case T_Q4_0:
    case T_Q4_1:
    case T_Q5_0:
    case T_Q5_1: {
        /* element i < 16: low nibble of quant byte i; i >= 16: high nibble of byte i - 16; q5's
         * fifth bit of element i is bit i of the 32-bit little-endian qh */
        const int has_min = type == T_Q4_1 || type == T_Q5_1, five = type == T_Q5_0 || type == T_Q5_1;
        const float d = fp16(w), m = has_min ? fp16(w + 2) : 0.f;
        const uint8_t *qh = w + (has_min ? 4 : 2), *qs = qh + (five ? 4 : 0);
        const float offset = has_min ? 0.f : five ? 16.f : 8.f;
        for (int i = 0; i < 32; i++) {
            int q = i < 16 ? qs[i] & 0xF : qs[i - 16] >> 4;
            if (five)
                q |= ((qh[i / 8] >> (i % 8)) & 1) << 4;
            y[i] = has_min ? d * (float)q + m : d * ((float)q - offset);
        }
        return;
    }
    case T_Q4_K:
    case T_Q5_K: {
        /* 4 chunks of 64: chunk c's 32 quant bytes give sub-block 2c (low nibbles) and 2c + 1 (high);
         * q5_k's fifth bit of element l of sub-block j is bit j of qh[l] */
        const int five = type == T_Q5_K;
        const float d = fp16(w), dmin = fp16(w + 2);
        const uint8_t *qh = w + 16, *qs = w + (five ? 48 : 16);
        uint8_t sc[8], mn[8];
        scale_min_k4(w + 4, sc, mn);
        for (int j = 0; j < 8; j++) {
            const float a = d * (float)sc[j], b = dmin * (float)mn[j];
            for (int l = 0; l < 32; l++) {
                int q = j % 2 ? qs[32 * (j / 2) + l] >> 4 : qs[32 * (j / 2) + l] & 0xF;
                if (five)
                    q |= ((qh[l] >> j) & 1) << 4;
                y[32 * j + l] = a * (float)q - b;
            }
        }
        return;
    }
    default: { /* T_Q6_K: two halves of 128; element l + 32 k of half h (k = 0..3) takes the low
                * (k < 2) or high nibble of ql[64 h + l + 32 (k % 2)] and bits 2k, 2k+1 of
                * qh[32 h + l]; sub-blocks of 16 with int8 scales */
        const uint8_t *ql = w, *qh = w + 128;
        const int8_t *sc = (const int8_t *)(w + 192);
        const float d = fp16(w + 208);
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++) {
                    const int byte = ql[64 * h + l + 32 * (k % 2)];
                    const int q = ((k < 2 ? byte & 0xF : byte >> 4) | (((qh[32 * h + l] >> (2 * k)) & 3) << 4)) - 32;
                    const int e = 128 * h + 32 * k + l;
                    y[e] = d * (float)sc[e / 16] * (float)q;
                }
        return;
    }
    }
}

/* out (B, n) = rows ids[0..B) of W (`rows` rows of n elements of a quantized `type`, plain layout,
 * each row_bytes(type, n) apart) as float32; n a multiple of the type's block. Returns 0, -1 for a
 * type it does not know, -2 for an id outside [0, rows) (nothing read). */
int tk_dequantize_rows(int type, const uint8_t *W, int64_t rows, int n, const int64_t *ids, int B, float *out) {
    const int block = block_elems(type), bytes = (int)row_bytes(type, block);
    if (!is_quant(type) || bytes <= 0 || (type & T_LAYOUT)) /* float rows are no blocks: -1 */
        return -1;
    for (int b = 0; b < B; b++)
        if (ids[b] < 0 || ids[b] >= rows)
            return -2;
    for (int b = 0; b < B; b++) {
        const uint8_t *w = W + ids[b] * row_bytes(type, n);
        for (int i = 0; i < n / block; i++)
            dequantize_block(type, w + (int64_t)i * bytes, out + (int64_t)b * n + (int64_t)i * block);
    }
    return 0;
}
