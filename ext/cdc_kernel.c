/* Scalar FastCDC kernel, the zero test and the benchmark floor loop. */
#include "cdc_kernel.h"

#include <string.h>

/* Measured on the reference VM (2-core EPYC, KVM): without a software prefetch a few KiB
 * ahead, byte-serial loops over data in the page cache ran 4-5x slower; the hardware
 * prefetcher does not keep up there. One prefetch per 64-byte line. */
#define CDC_PREFETCH_AHEAD 4096

void cdc_table_init(cdc_table *t, const uint64_t gear[256], uint64_t mask_s, uint64_t mask_l) {
    for (int i = 0; i < 256; i++) {
        t->gear[i] = gear[i];
        t->gear_lo[i] = (uint8_t)(gear[i] & 0xff);
        t->gear_hi[i] = (uint8_t)((gear[i] >> 8) & 0xff);
    }
    t->mask_s = mask_s;
    t->mask_l = mask_l;
}

uint64_t cdc_window_hash(const cdc_table *t, const uint8_t *buf, int64_t p) {
    uint64_t h = 0;
    for (int64_t i = p - (CDC_WINDOW - 1); i <= p; i++) h = (h << 1) + t->gear[buf[i]];
    return h;
}

/* Test positions [i, end) against one mask; returns the hit or -1, h updated in place. */
static inline int64_t scan_run(const uint64_t *gear, const uint8_t *buf, int64_t i, int64_t end,
                               uint64_t mask, uint64_t *hp) {
    uint64_t h = *hp;
    while (i < end) {
        int64_t block_end = i + 64 < end ? i + 64 : end;
        __builtin_prefetch(buf + i + CDC_PREFETCH_AHEAD);
        for (; i < block_end; i++) {
            h = (h << 1) + gear[buf[i]];
            if (__builtin_expect((h & mask) == 0, 0)) {
                *hp = h;
                return i;
            }
        }
    }
    *hp = h;
    return -1;
}

int64_t cdc_scan_scalar(const cdc_table *t, const uint8_t *buf, int64_t from, int64_t to,
                        int64_t strict_until) {
    if (from >= to) return -1;
    /* Warm up on the 63 bytes before `from`: after them the rolling hash equals H(p). */
    uint64_t h = 0;
    for (int64_t i = from - (CDC_WINDOW - 1); i < from; i++) h = (h << 1) + t->gear[buf[i]];
    int64_t mid = strict_until < from ? from : (strict_until > to ? to : strict_until);
    int64_t hit = scan_run(t->gear, buf, from, mid, t->mask_s, &h);
    if (hit >= 0) return hit;
    return scan_run(t->gear, buf, mid, to, t->mask_l, &h);
}

int64_t cdc_gear_loop(const uint64_t gear[256], const uint8_t *buf, int64_t len, uint64_t mask) {
    uint64_t h = 0;
    int64_t hits = 0;
    for (int64_t i = 0; i < len; i += 64) {
        int64_t end = i + 64 < len ? i + 64 : len;
        __builtin_prefetch(buf + i + CDC_PREFETCH_AHEAD);
        for (int64_t j = i; j < end; j++) {
            h = (h << 1) + gear[buf[j]];
            hits += (h & mask) == 0;
        }
    }
    return hits;
}

int cdc_is_zero(const uint8_t *buf, size_t len) {
    /* Most non-zero regions differ in their first bytes: look there before the long sweep. */
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++)
        if (buf[i]) return 0;
    size_t i = head;
    for (; i + 64 <= len; i += 64) {
        uint64_t w[8];
        memcpy(w, buf + i, 64);
        __builtin_prefetch(buf + i + CDC_PREFETCH_AHEAD);
        if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return 0;
    }
    for (; i < len; i++)
        if (buf[i]) return 0;
    return 1;
}

int cdc_kernel_available(int kernel) {
    switch (kernel) {
    case CDC_KERNEL_SCALAR:
        return 1;
    case CDC_KERNEL_AVX512:
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
        /* libgcc's feature detection also checks that the OS saves the zmm state (XCR0). */
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vbmi");
#else
        return 0;
#endif
    default:
        return 0;
    }
}
