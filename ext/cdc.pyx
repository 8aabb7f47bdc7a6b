# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Streaming FastCDC driver over the C kernels in cdc_kernel.c / cdc_avx512.c.

Thin on purpose: parameters (gear table, masks) are computed in mover.chunking.params, the
scan loops live in C; this module only walks chunk starts across the buffers it is fed.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memmove

cdef extern from "cdc_kernel.h" nogil:
    ctypedef struct cdc_table:
        pass
    int CDC_KERNEL_SCALAR
    int CDC_KERNEL_AVX512
    int CDC_WINDOW
    void cdc_table_init(cdc_table *t, const uint64_t *gear, uint64_t mask_s, uint64_t mask_l)
    int64_t cdc_scan_scalar(const cdc_table *t, const uint8_t *buf, int64_t frm, int64_t to,
                            int64_t strict_until)
    int64_t cdc_scan_avx512(const cdc_table *t, const uint8_t *buf, int64_t frm, int64_t to,
                            int64_t strict_until)
    int cdc_kernel_available(int kernel)
    int64_t cdc_gear_loop(const uint64_t *gear, const uint8_t *buf, int64_t length, uint64_t mask)
    int cdc_is_zero(const uint8_t *buf, size_t length)

cdef enum:
    # Below this many bytes the GIL is kept: releasing it costs more than the scan.
    GIL_MINSIZE = 4096
    # History kept between feeds: the window minus the byte under test.
    HISTORY = 63
    # Positions closer than HISTORY to a buffer's start are scanned in a scratch copy with
    # the previous bytes in front; the scratch holds HISTORY + SEAM bytes.
    SEAM = 63

KERNELS = {"scalar": CDC_KERNEL_SCALAR, "avx512": CDC_KERNEL_AVX512}


def available_kernels():
    """Names of the kernels this CPU can run, fastest last."""
    return [name for name, k in KERNELS.items() if cdc_kernel_available(k)]


ctypedef int64_t (*scan_fn)(const cdc_table *, const uint8_t *, int64_t, int64_t, int64_t) noexcept nogil


cdef class Chunker:
    """Streaming content-defined chunker.

    ``feed(data)`` returns the stream offsets where chunks end among the bytes fed so far
    (each offset is the exclusive end of a chunk); ``finish()`` returns the end of the last,
    short chunk if any bytes are pending. The offsets do not depend on how the stream is
    split into buffers. ``data`` must not be resized while ``feed`` runs; holding a buffer
    export for the call guarantees that (bytearray and mmap refuse to resize while exported),
    which is what makes releasing the GIL on it safe.
    """

    cdef cdc_table table
    cdef scan_fn scan
    cdef readonly int64_t min_size, avg_size, max_size
    cdef readonly str kernel
    cdef int64_t pos            # stream offset of the next byte to be fed
    cdef int64_t chunk_start    # stream offset where the current chunk starts
    cdef uint8_t history[HISTORY]   # the last min(pos, HISTORY) bytes, right-aligned
    cdef uint8_t scratch[HISTORY + SEAM]

    def __init__(self, bytes gear, uint64_t mask_s, uint64_t mask_l, int64_t min_size,
                 int64_t avg_size, int64_t max_size, str kernel="scalar"):
        if len(gear) != 256 * 8:
            raise ValueError("gear table must be 256 little-endian uint64 values")
        if not (CDC_WINDOW <= min_size <= avg_size <= max_size):
            raise ValueError(f"need {CDC_WINDOW} <= min <= avg <= max")
        if kernel not in KERNELS:
            raise ValueError(f"unknown chunker kernel {kernel!r}; known: {', '.join(KERNELS)}")
        if not cdc_kernel_available(KERNELS[kernel]):
            raise ValueError(f"chunker kernel {kernel!r} is not supported by this CPU")
        cdef uint64_t table[256]
        cdef const uint8_t[::1] g = gear
        memcpy(table, &g[0], 256 * 8)   # the wheel is little-endian on every platform we build
        cdc_table_init(&self.table, table, mask_s, mask_l)
        self.scan = cdc_scan_avx512 if kernel == "avx512" else cdc_scan_scalar
        self.kernel = kernel
        self.min_size = min_size
        self.avg_size = avg_size
        self.max_size = max_size
        self.pos = 0
        self.chunk_start = 0

    @property
    def position(self):
        """Bytes fed so far."""
        return self.pos

    def feed(self, const uint8_t[::1] data not None):
        cdef int64_t n = data.shape[0]
        if n == 0:
            return []
        cdef int64_t cap = n // self.min_size + 2
        cdef int64_t *cuts = <int64_t *>PyMem_Malloc(cap * sizeof(int64_t))
        if cuts == NULL:
            raise MemoryError()
        cdef int64_t count = 0
        cdef const uint8_t *ptr = &data[0]
        try:
            if n >= GIL_MINSIZE:
                with nogil:
                    count = self._feed(ptr, n, cuts)
            else:
                count = self._feed(ptr, n, cuts)
            return [cuts[i] for i in range(count)]
        finally:
            PyMem_Free(cuts)

    def finish(self):
        """End of stream: the last chunk's end, if it has any bytes; the chunker is reset."""
        end = self.pos
        pending = end > self.chunk_start
        self.pos = 0
        self.chunk_start = 0
        return [end] if pending else []

    cdef int64_t _feed(self, const uint8_t *data, int64_t n, int64_t *cuts) noexcept nogil:
        cdef int64_t base = self.pos
        cdef int64_t end = base + n
        cdef int64_t count = 0
        cdef int64_t p0, to, hit, seam_end, seam_len, strict_until
        while True:
            p0 = self.chunk_start + self.min_size - 1
            if p0 < base:
                p0 = base
            if p0 >= end:
                break
            to = self.chunk_start + self.max_size          # exclusive: the forced cut's end
            if to > end:
                to = end
            strict_until = self.chunk_start + self.avg_size - 1
            hit = -1
            if p0 - base < HISTORY:
                # Seam: p0 - 63 lies in the previous buffer. Since min_size >= 64 and every
                # chunk starts at or after offset 0, p0 - 63 >= 0: the history covers it.
                seam_end = base + HISTORY if base + HISTORY < to else to
                seam_len = seam_end - base
                memcpy(self.scratch, self.history, HISTORY)
                memcpy(self.scratch + HISTORY, data, seam_len)
                hit = cdc_scan_scalar(&self.table, self.scratch, p0 - base + HISTORY,
                                      seam_end - base + HISTORY, strict_until - base + HISTORY)
                if hit >= 0:
                    hit = hit - HISTORY + base
                p0 = seam_end
            if hit < 0 and p0 < to:
                hit = self.scan(&self.table, data, p0 - base, to - base, strict_until - base)
                if hit >= 0:
                    hit += base
            if hit < 0 and to == self.chunk_start + self.max_size:
                hit = to - 1
            if hit < 0:
                break
            cuts[count] = hit + 1
            count += 1
            self.chunk_start = hit + 1
        self._remember(data, n)
        self.pos = end
        return count

    cdef void _remember(self, const uint8_t *data, int64_t n) noexcept nogil:
        if n >= HISTORY:
            memcpy(self.history, data + n - HISTORY, HISTORY)
        else:
            memmove(self.history, self.history + n, HISTORY - n)
            memcpy(self.history + HISTORY - n, data, n)


def gear_loop(bytes gear, const uint8_t[::1] data not None, uint64_t mask):
    """The minimal byte-serial gear-hash loop (benchmark floor); returns the mask hits."""
    cdef uint64_t table[256]
    cdef const uint8_t[::1] g = gear
    memcpy(table, &g[0], 256 * 8)
    cdef int64_t hits
    with nogil:
        hits = cdc_gear_loop(table, &data[0], data.shape[0], mask)
    return hits


def is_zero(const uint8_t[::1] data not None):
    """True when every byte of data is zero (an empty buffer is)."""
    cdef size_t n = data.shape[0]
    if n == 0:
        return True
    cdef int r
    # Most chunks are not zero and show it in their first bytes: answer those without giving
    # up the GIL, whose hand-over to a busy worker thread costs more than the test.
    if cdc_is_zero(&data[0], min(n, <size_t>64)) == 0:
        return False
    if n >= GIL_MINSIZE:
        with nogil:
            r = cdc_is_zero(&data[0], n)
    else:
        r = cdc_is_zero(&data[0], n)
    return r != 0
