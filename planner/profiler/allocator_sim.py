"""PyTorch's CUDA caching allocator, replayed on a stream of allocations and frees (no GPU).

A trace (planner/profiler/trace.py) counts the bytes live tensors hold: ``max_memory_allocated``.
What the device gives the process is ``max_memory_reserved``: the segments the caching allocator
took from ``cudaMalloc`` and keeps, which also hold the free blocks it could not hand out again.
``CachingAllocator`` replays the default allocator's rules (c10/cuda/CUDACachingAllocator.cpp, torch
2.x, no ``PYTORCH_CUDA_ALLOC_CONF``; one stream):

- a request is rounded up to a multiple of 512 bytes (``round_size``, kMinBlockSize);
- requests of at most 1 MiB (kSmallSize) are served from the small pool, the rest from the large one;
- a free cached block of the same pool is looked up best-fit: the smallest with ``size >= request``
  (``get_free_block``; the pool is ordered by size then address), and split when what is left is at
  least 512 bytes (small pool) or more than 1 MiB (large pool, ``should_split``);
- without one, a new segment is mapped (``get_allocation_size``): 2 MiB (kSmallBuffer) for a small
  request, 20 MiB (kLargeBuffer) for one below 10 MiB (kMinLargeAlloc), else the request rounded up
  to 2 MiB (kRoundLarge);
- a freed block merges with free neighbours of its segment (``free_block``) and goes back to its pool;
- ``empty_cache()`` unmaps every segment that is wholly free (``release_cached_blocks``).

With ``expandable_segments=True`` (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``) it replays
that setting's rules instead (the same file's ``ExpandableSegment``, ``try_allocate_expandable_block``,
``should_split``; the PyTorch docs' "Optimizing memory usage with PYTORCH_CUDA_ALLOC_CONF"): each pool
(small, large) is one segment per stream whose address range is mapped in pages of 2 MiB (small pool,
kSmallBuffer) or 20 MiB (large pool, kLargeBuffer) and grows at its end; a request no free mapped block
fits takes the free block at the end, if there is one, and maps only the pages it still lacks; a block
is split whenever 512 bytes or more remain (both pools: no 1 MiB unsplittable remainder); best fit
prefers a block that is not the growable end; freed memory stays mapped until ``empty_cache()``, which
unmaps the whole pages of the free block at the end (torch also unmaps wholly free pages inside the
segment: not replayed; the replays empty the cache when nothing inside is free). The C++ source is not
in the torch wheel (2.13: only c10/cuda/CUDAAllocatorConfig.h, ``expandable_segments()``); these rules
are read from the PyTorch source and docs as cited.

Not replayed: several streams, the garbage-collection threshold, ``max_split_size_mb`` (all off by
default), and the out-of-memory path (it frees the cache and retries: the replay has no memory limit,
so it reports what the process would reserve with enough memory).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

MIN_BLOCK = 512  # kMinBlockSize
SMALL_SIZE = 1 << 20  # kSmallSize: requests up to 1 MiB use the small pool
SMALL_BUFFER = 2 << 20  # kSmallBuffer: a small-pool segment
LARGE_BUFFER = 20 << 20  # kLargeBuffer: the segment of a 1-10 MiB request
MIN_LARGE_ALLOC = 10 << 20  # kMinLargeAlloc
ROUND_LARGE = 2 << 20  # kRoundLarge


def round_size(n_bytes: int) -> int:
    """``round_size``: at least 512 bytes, a multiple of 512."""
    return MIN_BLOCK if n_bytes < MIN_BLOCK else -(-n_bytes // MIN_BLOCK) * MIN_BLOCK


def allocation_size(n_bytes: int) -> int:
    """``get_allocation_size``: the segment mapped for a request no cached block can serve."""
    if n_bytes <= SMALL_SIZE:
        return SMALL_BUFFER
    if n_bytes < MIN_LARGE_ALLOC:
        return LARGE_BUFFER
    return -(-n_bytes // ROUND_LARGE) * ROUND_LARGE


@dataclass
class _Block:
    segment: int
    offset: int
    size: int
    small: bool
    free: bool = True
    prev: _Block | None = None
    next: _Block | None = None

    def key(self) -> tuple[int, int, int]:
        return (self.size, self.segment, self.offset)


class CachingAllocator:
    """The caching allocator's bookkeeping; ``malloc(key, n_bytes)`` and ``free(key)``; the default rules,
    or with ``expandable_segments`` that setting's (module docstring)."""

    def __init__(self, expandable_segments: bool = False) -> None:
        self.expandable_segments = expandable_segments
        self._tail: dict[bool, _Block | None] = {True: None, False: None}  # expandable: each pool's last block
        self._mapped: dict[bool, int] = {True: 0, False: 0}  # expandable: each pool's mapped bytes
        self._pools: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}  # sorted free keys
        self._by_key: dict[tuple[int, int, int], _Block] = {}
        self._live: dict[int, _Block] = {}
        self._segments: dict[int, int] = {}  # segment id -> size
        self._next_segment = 0
        self.allocated = self.reserved = 0
        self.peak_allocated = self.peak_reserved = 0
        self.segments_mapped = 0
        self.phases: list[tuple[str, int, int]] = []  # (name, peak allocated, peak reserved), by ``replay``

    # -- pool bookkeeping
    def _insert(self, b: _Block) -> None:
        k = b.key()
        bisect.insort(self._pools[b.small], k)
        self._by_key[k] = b

    def _remove(self, b: _Block) -> None:
        k = b.key()
        pool = self._pools[b.small]
        del pool[bisect.bisect_left(pool, k)]
        del self._by_key[k]

    def malloc(self, key: int, n_bytes: int) -> None:
        size = round_size(n_bytes)
        small = size <= SMALL_SIZE
        block = self._best_fit(size, small)
        if block is not None:
            self._remove(block)
        elif self.expandable_segments:
            block = self._grow(size, small)
        else:
            seg_size = allocation_size(size)
            seg = self._next_segment
            self._next_segment += 1
            self._segments[seg] = seg_size
            self.reserved += seg_size
            self.segments_mapped += 1
            block = _Block(seg, 0, seg_size, small)
        remaining = block.size - size
        if (remaining >= MIN_BLOCK) if small or self.expandable_segments else (remaining > SMALL_SIZE):
            rest = _Block(block.segment, block.offset + size, remaining, small, True, block, block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            self._insert(rest)
            if self._tail[small] is block:
                self._tail[small] = rest
        block.free = False
        self._live[key] = block
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        self.peak_reserved = max(self.peak_reserved, self.reserved)

    def _best_fit(self, size: int, small: bool) -> _Block | None:
        """The smallest free block of the pool that fits (``get_free_block``); with expandable segments
        the growable block at the end only when no other fits."""
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1, -1))
        if i == len(pool):
            return None
        block = self._by_key[pool[i]]
        if block is self._tail[small] and i + 1 < len(pool):
            block = self._by_key[pool[i + 1]]
        return block

    def _grow(self, size: int, small: bool) -> _Block:
        """Expandable segments: the free block at the pool's end (or a new one there), grown by the pages
        the request still lacks."""
        page = SMALL_BUFFER if small else LARGE_BUFFER
        tail = self._tail[small]
        if tail is not None and tail.free:
            grow = -(-(size - tail.size) // page) * page
            self._remove(tail)
            tail.size += grow
            block = tail
        else:
            grow = -(-size // page) * page
            block = _Block(int(small), self._mapped[small], grow, small, True, tail, None)
            if tail is not None:
                tail.next = block
            self._tail[small] = block
        self._mapped[small] += grow
        self._segments[int(small)] = self._mapped[small]
        self.reserved += grow
        self.segments_mapped += 1
        return block

    def free(self, key: int) -> None:
        block = self._live.pop(key)
        self.allocated -= block.size
        block.free = True
        for neighbour in (block.prev, block.next):
            if neighbour is not None and neighbour.free:
                self._remove(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        if self.expandable_segments and block.next is None:
            self._tail[block.small] = block  # the segment's last block (one segment per pool)
        self._insert(block)

    def empty_cache(self) -> None:
        """Unmap every wholly free segment (expandable segments: the free end's whole pages)."""
        if self.expandable_segments:
            for small in (True, False):
                self._unmap_free_end(small)
            return
        for small in (True, False):
            for k in list(self._pools[small]):
                b = self._by_key[k]
                if b.prev is None and b.next is None:
                    self._remove(b)
                    self.reserved -= self._segments.pop(b.segment)

    def _unmap_free_end(self, small: bool) -> None:
        tail = self._tail[small]
        if tail is None or not tail.free:
            return
        page = SMALL_BUFFER if small else LARGE_BUFFER
        keep = -(-tail.offset // page) * page  # the first page boundary inside the free end
        unmapped = self._mapped[small] - keep
        if unmapped <= 0:
            return
        self._remove(tail)
        tail.size -= unmapped
        self._mapped[small] = self._segments[int(small)] = keep
        self.reserved -= unmapped
        if tail.size:
            self._insert(tail)
            return
        self._tail[small] = tail.prev
        if tail.prev is not None:
            tail.prev.next = None

    def reset_peaks(self) -> None:
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved


def replay(events, n_resident: int = 0, expandable_segments: bool = False) -> CachingAllocator:
    """Replay ``("malloc", key, n_bytes)``, ``("free", key)``, ``("empty_cache",)``, ``("reset_peaks",)``
    and ``("phase", name)`` events. The first ``n_resident`` events are the residents' mallocs (weights,
    adapters): allocated before the peaks start counting. A phase event closes the phase before it
    (appended to ``phases`` with its peaks) and counts the next one from there. ``expandable_segments``:
    that setting's rules."""
    a = CachingAllocator(expandable_segments)
    for ev in events[:n_resident]:
        a.malloc(ev[1], ev[2])
    a.reset_peaks()
    phase = None
    for ev in events[n_resident:]:
        if ev[0] == "malloc":
            a.malloc(ev[1], ev[2])
        elif ev[0] == "free":
            a.free(ev[1])
        elif ev[0] == "empty_cache":
            a.empty_cache()
        elif ev[0] == "reset_peaks":
            a.reset_peaks()
        elif ev[0] == "phase":
            if phase is not None:
                a.phases.append((phase, a.peak_allocated, a.peak_reserved))
            phase = ev[1]
            a.reset_peaks()
        else:
            raise ValueError(f"unknown allocator event {ev[0]!r}")
    if phase is not None:
        a.phases.append((phase, a.peak_allocated, a.peak_reserved))
    return a
