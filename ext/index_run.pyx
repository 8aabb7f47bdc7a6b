# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Sorted runs of index records on disk, searched through a sparse table of fences.

A record is 48 bytes: id[32] | pack number u32 | offset u32 | length u32 | kind u8 | pad[3]
(little-endian). A run is a file of records sorted by id; the first id of every BLOCK-th record
(a fence) is kept in memory, so a run of n records costs n / BLOCK * 32 bytes of memory and a
lookup is a binary search over the fences, one pread of at most BLOCK records and a binary
search inside them, all without the GIL. The policy (when to write, merge and drop runs) lives
in mover.content.index; this module only sorts, groups, converts and searches.
"""

from libc.errno cimport EINTR, errno
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from libc.string cimport memcmp, memcpy
from posix.unistd cimport close, pread

cdef enum:
    RECORD = 48
    ID = 32
    # A row of an index file: id[32] u32 pack u32 offset u32 length u8 kind.
    FILE_ROW = 45
    # Records per fence: one pread of 12 KiB per lookup and 32 bytes of memory per 256 chunks.
    BLOCK = 256

RECORD_SIZE = RECORD
BLOCK_RECORDS = BLOCK


cdef int _cmp_id(const void *a, const void *b) noexcept nogil:
    return memcmp(a, b, ID)


def sort_unique(bytearray records):
    """Sorts records by id in place, keeps one record per id, truncates; returns the count."""
    cdef Py_ssize_t n = len(records) // RECORD
    cdef Py_ssize_t i, kept = 0
    cdef uint8_t *p = <uint8_t *> (<char *> records)
    if n == 0:
        return 0
    with nogil:
        qsort(p, n, RECORD, _cmp_id)
        kept = 1
        for i in range(1, n):
            if memcmp(p + i * RECORD, p + (kept - 1) * RECORD, ID) != 0:
                if kept != i:
                    memcpy(p + kept * RECORD, p + i * RECORD, RECORD)
                kept += 1
    del records[kept * RECORD:]
    return kept


def group_by_first_byte(const uint8_t[::1] records):
    """(records reordered so that equal first id bytes are adjacent, 257 record boundaries).

    A counting sort: lets a builder append each group to its bucket file in one write."""
    cdef Py_ssize_t n = records.shape[0] // RECORD
    cdef Py_ssize_t i
    cdef Py_ssize_t counts[257]
    cdef Py_ssize_t pos[256]
    cdef int b
    out = bytearray(n * RECORD)
    cdef uint8_t *dst = <uint8_t *> (<char *> out)
    for b in range(257):
        counts[b] = 0
    with nogil:
        for i in range(n):
            counts[records[i * RECORD] + 1] += 1
        for b in range(256):
            counts[b + 1] += counts[b]
            pos[b] = counts[b]
        for i in range(n):
            b = records[i * RECORD]
            memcpy(dst + pos[b] * RECORD, &records[i * RECORD], RECORD)
            pos[b] += 1
    return out, [counts[b] for b in range(257)]


def convert_rows(const uint8_t[::1] rows, Py_ssize_t count, const uint32_t[::1] pack_map):
    """Index-file rows -> records, each file-local pack number replaced by pack_map[number]."""
    cdef Py_ssize_t i
    cdef uint32_t local
    if rows.shape[0] < count * FILE_ROW:
        raise ValueError("index rows are truncated")
    out = bytearray(count * RECORD)
    cdef uint8_t *dst = <uint8_t *> (<char *> out)
    cdef const uint8_t *src
    cdef Py_ssize_t npacks = pack_map.shape[0]
    for i in range(count):
        src = &rows[i * FILE_ROW]
        memcpy(&local, src + ID, 4)
        if local >= npacks:
            raise ValueError("an index row names a pack the file does not list")
        memcpy(dst + i * RECORD, src, ID)
        memcpy(dst + i * RECORD + ID, &pack_map[local], 4)
        memcpy(dst + i * RECORD + ID + 4, src + ID + 4, 9)
    return out


def fences_of(const uint8_t[::1] records, Py_ssize_t first_index):
    """The fences among records whose global position in their run starts at first_index."""
    cdef Py_ssize_t n = records.shape[0] // RECORD
    cdef Py_ssize_t i = (BLOCK - first_index % BLOCK) % BLOCK
    out = bytearray()
    while i < n:
        out += records[i * RECORD : i * RECORD + ID]
        i += BLOCK
    return bytes(out)


def flag_packs(const uint8_t[::1] records, const uint8_t[::1] pack_flags):
    """Records whose pack number has a non-zero flag, concatenated."""
    cdef Py_ssize_t n = records.shape[0] // RECORD
    cdef Py_ssize_t i, kept = 0
    cdef uint32_t pack
    out = bytearray(records.shape[0])
    cdef uint8_t *dst = <uint8_t *> (<char *> out)
    with nogil:
        for i in range(n):
            memcpy(&pack, &records[i * RECORD + ID], 4)
            if pack < <uint32_t> pack_flags.shape[0] and pack_flags[pack]:
                memcpy(dst + kept * RECORD, &records[i * RECORD], RECORD)
                kept += 1
    del out[kept * RECORD:]
    return out


cdef int _cmp_u64(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const uint64_t *> a)[0]
    cdef uint64_t y = (<const uint64_t *> b)[0]
    return (x > y) - (x < y)


def sort_unique_u64(uint64_t[::1] values):
    """Sorts in place and moves one of each value to the front; returns how many (the caller
    truncates). For the live-chunk prefixes prune collects across snapshots."""
    cdef Py_ssize_t n = values.shape[0], i, kept = 0
    if n == 0:
        return 0
    with nogil:
        qsort(&values[0], n, 8, _cmp_u64)
        kept = 1
        for i in range(1, n):
            if values[i] != values[kept - 1]:
                values[kept] = values[i]
                kept += 1
    return kept


cdef inline uint64_t _prefix(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


def prefix_of(const uint8_t[::1] chunk_id):
    """The 8-byte prefix of an id as prune's live set stores it (native byte order)."""
    return _prefix(&chunk_id[0])


def account(
    const uint8_t[::1] records,
    const uint64_t[::1] live,
    uint64_t[::1] total_bytes,
    uint64_t[::1] live_bytes,
    bytearray live_flags,
):
    """Adds each record's length to its pack's total and, when its id's prefix is in the sorted
    `live`, to its pack's live bytes; live_flags gets one byte per record (1: live).

    A prefix match between different ids keeps a dead blob alive: the safe direction."""
    cdef Py_ssize_t n = records.shape[0] // RECORD
    cdef Py_ssize_t i, lo, hi, mid
    cdef uint32_t pack, length
    cdef uint64_t key
    cdef Py_ssize_t nlive = live.shape[0]
    cdef Py_ssize_t npacks = total_bytes.shape[0]
    if len(live_flags) < n:
        raise ValueError("live_flags is too short")
    cdef uint8_t *flags = <uint8_t *> (<char *> live_flags)
    with nogil:
        for i in range(n):
            memcpy(&pack, &records[i * RECORD + ID], 4)
            memcpy(&length, &records[i * RECORD + ID + 8], 4)
            if pack >= npacks:
                continue
            total_bytes[pack] += length
            key = _prefix(&records[i * RECORD])
            lo = 0
            hi = nlive
            while lo < hi:
                mid = (lo + hi) // 2
                if live[mid] < key:
                    lo = mid + 1
                else:
                    hi = mid
            flags[i] = lo < nlive and live[lo] == key
            if flags[i]:
                live_bytes[pack] += length


cdef class Run:
    """A sorted run file, open for lookups; the descriptor closes with the last reference, so
    a lookup in flight in another thread never reads a closed (or reused) descriptor."""

    cdef int fd
    cdef readonly Py_ssize_t count
    cdef bytes _fences
    cdef Py_ssize_t nfences

    def __cinit__(self, int fd, Py_ssize_t count, bytes fences):
        if len(fences) != ((count + BLOCK - 1) // BLOCK) * ID:
            raise ValueError("fences do not match the record count")
        self.fd = fd
        self.count = count
        self._fences = fences
        self.nfences = len(fences) // ID

    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)

    def find(self, const uint8_t[::1] chunk_id):
        """(pack number, offset, length, kind) or None."""
        cdef uint8_t block[BLOCK * RECORD]
        cdef const uint8_t *fences = <const uint8_t *> (<char *> self._fences)
        cdef const uint8_t *key = &chunk_id[0]
        cdef Py_ssize_t lo = 0, hi = self.nfences, mid, n, want, got
        cdef long r
        cdef int found = 0
        cdef uint32_t pack = 0, offset = 0, length = 0
        cdef uint8_t kind = 0
        if chunk_id.shape[0] != ID:
            raise ValueError("a chunk id is 32 bytes")
        if self.nfences == 0:
            return None
        # The GIL is kept: a lookup is a few microseconds from the page cache, and giving the
        # GIL up and taking it back among busy worker threads cost ~20 us a call (profiled).
        if True:
            # The last fence <= key names the block that may hold it.
            while lo < hi:
                mid = (lo + hi) // 2
                if memcmp(fences + mid * ID, key, ID) <= 0:
                    lo = mid + 1
                else:
                    hi = mid
            if lo > 0:
                mid = lo - 1
                n = self.count - mid * BLOCK
                if n > BLOCK:
                    n = BLOCK
                want = n * RECORD
                got = 0
                while got < want:
                    r = pread(self.fd, block + got, want - got, (mid * BLOCK) * RECORD + got)
                    if r < 0 and errno == EINTR:
                        continue
                    if r <= 0:
                        break
                    got += r
                if got == want:
                    lo = 0
                    hi = n
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if memcmp(block + mid * RECORD, key, ID) < 0:
                            lo = mid + 1
                        else:
                            hi = mid
                    if lo < n and memcmp(block + lo * RECORD, key, ID) == 0:
                        found = 1
                        memcpy(&pack, block + lo * RECORD + ID, 4)
                        memcpy(&offset, block + lo * RECORD + ID + 4, 4)
                        memcpy(&length, block + lo * RECORD + ID + 8, 4)
                        kind = block[lo * RECORD + ID + 12]
                else:
                    found = -1
        if found < 0:
            raise OSError("cannot read an index run: short read")
        if not found:
            return None
        return pack, offset, length, kind

    def read(self, Py_ssize_t first, Py_ssize_t n):
        """Records first .. first+n-1 as bytes (iteration and merging)."""
        cdef Py_ssize_t want, got = 0
        cdef long r
        if first < 0 or n < 0 or first + n > self.count:
            raise ValueError("record range out of the run")
        want = n * RECORD
        out = bytearray(want)
        cdef uint8_t *dst = <uint8_t *> (<char *> out)
        with nogil:
            while got < want:
                r = pread(self.fd, dst + got, want - got, first * RECORD + got)
                if r < 0 and errno == EINTR:
                    continue
                if r <= 0:
                    break
                got += r
        if got != want:
            raise OSError("cannot read an index run: short read")
        return out
