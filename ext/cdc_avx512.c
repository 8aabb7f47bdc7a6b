/* AVX-512 (BW + VBMI) FastCDC kernel: 64 positions per iteration.
 *
 * The low 16 bits of H(p) are sum_{j<16} g16[buf[p-j]] << j (mod 2^16), g16 = low 16 bits of
 * gear[]. Per 64 bytes: one byte permute so that the later unpacks come out in order, two
 * 128-entry byte lookups (vpermi2b) per byte plane of g16, unpack into 16-bit lanes, then a
 * log-step scan S_{2k}(p) = S_k(p) + (S_k(p-k) << k), k = 1, 2, 4, 8, whose lanes from before
 * the vector come from the previous one. Lanes where low16(H) & low16(mask_l) == 0 are
 * candidates; low16(mask_l) is a subset of both masks, so no cut is missed, and each candidate
 * is confirmed with the full hash (rare: at most one in 2^popcount(low16(mask_l)) positions).
 */
#include "cdc_kernel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define CDC_PREFETCH_AHEAD 4096
#define TARGET __attribute__((target("avx512f,avx512bw,avx512vbmi")))

/* words[i] = i >= k ? cur[i-k] : prev[32+i-k], as a vpermt2w index (bit 5 picks prev). */
TARGET static inline __m512i shift_index(int k) {
    uint16_t idx[32];
    for (int i = 0; i < 32; i++) idx[i] = (uint16_t)(i >= k ? i - k : (32 | (32 + i - k)));
    return _mm512_loadu_si512(idx);
}

TARGET static inline __m512i lookup(__m512i bytes, __m512i t0, __m512i t1, __m512i t2,
                                    __m512i t3) {
    __m512i low = _mm512_permutex2var_epi8(t0, bytes, t1);
    __m512i high = _mm512_permutex2var_epi8(t2, bytes, t3);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(bytes), low, high);
}

TARGET int64_t cdc_scan_avx512(const cdc_table *t, const uint8_t *buf, int64_t from, int64_t to,
                               int64_t strict_until) {
    /* Short ranges: the vector set-up is not worth it. */
    if (to - from < 256) return cdc_scan_scalar(t, buf, from, to, strict_until);

    const __m512i lo0 = _mm512_loadu_si512(t->gear_lo), lo1 = _mm512_loadu_si512(t->gear_lo + 64);
    const __m512i lo2 = _mm512_loadu_si512(t->gear_lo + 128),
                  lo3 = _mm512_loadu_si512(t->gear_lo + 192);
    const __m512i hi0 = _mm512_loadu_si512(t->gear_hi), hi1 = _mm512_loadu_si512(t->gear_hi + 64);
    const __m512i hi2 = _mm512_loadu_si512(t->gear_hi + 128),
                  hi3 = _mm512_loadu_si512(t->gear_hi + 192);

    /* Byte order such that unpacklo gives positions 0..31 and unpackhi 32..63 in order: the
     * unpacks take bytes 0-7 (lo) and 8-15 (hi) of each 128-bit lane. */
    uint8_t order[64];
    for (int lane = 0; lane < 4; lane++)
        for (int k = 0; k < 8; k++) {
            order[16 * lane + k] = (uint8_t)(8 * lane + k);
            order[16 * lane + 8 + k] = (uint8_t)(32 + 8 * lane + k);
        }
    const __m512i perm = _mm512_loadu_si512(order);
    const __m512i sh1 = shift_index(1), sh2 = shift_index(2), sh4 = shift_index(4),
                  sh8 = shift_index(8);
    const __m512i filter = _mm512_set1_epi16((short)(uint16_t)(t->mask_l & 0xffff));

    __m512i x_prev = _mm512_setzero_si512(), s1_prev = x_prev, s2_prev = x_prev, s4_prev = x_prev;

    /* Start 16 positions early so that every lane from `from` on has its 16-byte window. */
    int64_t base = from - 16;
    while (base < to) {
        int64_t avail = to - base;
        __m512i bytes;
        if (avail >= 64) {
            bytes = _mm512_loadu_si512(buf + base);
        } else {
            /* Masked load: bytes at or past `to` are neither read nor tested. */
            bytes = _mm512_maskz_loadu_epi8((__mmask64)((1ULL << avail) - 1), buf + base);
        }
        _mm_prefetch((const char *)(buf + base + CDC_PREFETCH_AHEAD), _MM_HINT_T0);
        bytes = _mm512_permutexvar_epi8(perm, bytes);
        __m512i glo = lookup(bytes, lo0, lo1, lo2, lo3);
        __m512i ghi = lookup(bytes, hi0, hi1, hi2, hi3);
        __m512i xs[2] = {_mm512_unpacklo_epi8(glo, ghi), _mm512_unpackhi_epi8(glo, ghi)};

        for (int half = 0; half < 2; half++) {
            __m512i x = xs[half];
            __m512i s1 = _mm512_add_epi16(
                x, _mm512_slli_epi16(_mm512_permutex2var_epi16(x, sh1, x_prev), 1));
            __m512i s2 = _mm512_add_epi16(
                s1, _mm512_slli_epi16(_mm512_permutex2var_epi16(s1, sh2, s1_prev), 2));
            __m512i s4 = _mm512_add_epi16(
                s2, _mm512_slli_epi16(_mm512_permutex2var_epi16(s2, sh4, s2_prev), 4));
            __m512i s8 = _mm512_add_epi16(
                s4, _mm512_slli_epi16(_mm512_permutex2var_epi16(s4, sh8, s4_prev), 8));
            x_prev = x;
            s1_prev = s1;
            s2_prev = s2;
            s4_prev = s4;

            uint32_t cand = (uint32_t)_mm512_testn_epi16_mask(s8, filter);
            if (__builtin_expect(cand != 0, 0)) {
                int64_t first = base + 32 * half;
                while (cand) {
                    int64_t p = first + __builtin_ctz(cand);
                    cand &= cand - 1;
                    if (p < from) continue; /* warm-up lanes */
                    if (p >= to) return -1;
                    uint64_t mask = p < strict_until ? t->mask_s : t->mask_l;
                    if ((cdc_window_hash(t, buf, p) & mask) == 0) return p;
                }
            }
        }
        base += 64;
    }
    return -1;
}

#else

int64_t cdc_scan_avx512(const cdc_table *t, const uint8_t *buf, int64_t from, int64_t to,
                        int64_t strict_until) {
    return cdc_scan_scalar(t, buf, from, to, strict_until);
}

#endif
