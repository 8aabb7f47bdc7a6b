/* FastCDC scan kernels: plain C, no Python.
 *
 * The cut test is a pure window function (repository format v1, see docs/format.md):
 *
 *   H(p) = sum_{j=0..63} gear[buf[p - j]] << j   (mod 2^64)
 *
 * depends only on the 64 bytes ending at p, so a scan may start anywhere with no state carried
 * over, which is what lets the vector kernel test 32 positions at once and the streaming driver
 * resume across buffer boundaries. A chunk may end at p (buf[p] is its last byte) when
 * (H(p) & mask) == 0, with mask_s (strict) before the average size and mask_l (loose) after.
 *
 * The masks are laid out so that their low 16 bits are nested (low16(mask_l) is a subset of
 * low16(mask_s)): the low 16 bits of H depend only on the last 16 bytes, so a kernel may filter
 * on them with 16-bit lanes and confirm the rare candidates with the full 64-bit hash.
 */
#ifndef MOVER_CDC_KERNEL_H
#define MOVER_CDC_KERNEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t gear[256];
    uint64_t mask_s;
    uint64_t mask_l;
    /* Byte planes of the low 16 bits of gear[], for the vector kernel's table lookups. */
    uint8_t gear_lo[256];
    uint8_t gear_hi[256];
} cdc_table;

enum { CDC_KERNEL_SCALAR = 0, CDC_KERNEL_AVX512 = 1 };

/* Bytes of history a scan needs before `from`. */
#define CDC_WINDOW 64

void cdc_table_init(cdc_table *t, const uint64_t gear[256], uint64_t mask_s, uint64_t mask_l);

/* H(p) computed directly; buf[p-63 .. p] must be readable. */
uint64_t cdc_window_hash(const cdc_table *t, const uint8_t *buf, int64_t p);

/* First p in [from, to) where a chunk may end, or -1. Positions p < strict_until are tested with
 * mask_s, the others with mask_l. buf[from-63 .. to-1] must be readable; nothing outside it is
 * read. Every kernel returns exactly what the scalar kernel returns. */
int64_t cdc_scan_scalar(const cdc_table *t, const uint8_t *buf, int64_t from, int64_t to,
                        int64_t strict_until);
int64_t cdc_scan_avx512(const cdc_table *t, const uint8_t *buf, int64_t from, int64_t to,
                        int64_t strict_until);

/* 1 when the CPU and OS support the kernel. */
int cdc_kernel_available(int kernel);

/* The minimal byte-serial gear loop, for benchmarks only: the floor a scalar kernel is
 * compared with. Returns the number of positions whose hash matches mask. */
int64_t cdc_gear_loop(const uint64_t gear[256], const uint8_t *buf, int64_t len, uint64_t mask);

/* 1 when buf[0 .. len-1] are all zero. */
int cdc_is_zero(const uint8_t *buf, size_t len);

#endif
