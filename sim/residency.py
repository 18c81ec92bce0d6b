"""Operand residency: which keyed address ranges of an operand memory hold valid data, as the planner and the
host driver believe it (``docs/protocol.md`` §5). Each memory is managed as keyed address ranges with LRU
eviction; every key carries a content digest, so a stale key costs a re-send, never a wrong result.

Members
-------
content_digest
    The content digest that residency keys carry.
ResidentMemory
    Address-range allocator with LRU eviction for one operand memory.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

__all__ = ["content_digest", "ResidentMemory"]


def content_digest(array):
    """The content digest residency keys carry (16-byte BLAKE2b of the array's bytes)."""
    return hashlib.blake2b(np.ascontiguousarray(array).tobytes(), digest_size=16).digest()



class ResidentMemory:
    """Which keyed address ranges of a ``depth``-entry operand memory hold valid data (LRU eviction).

    A range should be recorded only once the device has acknowledged the write that filled it: :meth:`reserve`
    finds the addresses (forgetting every range the write will overwrite), :meth:`commit` records them
    afterwards; :meth:`allocate` does both at once (the planner, whose consumer forgets everything when any
    command of a schedule fails).

    Members
    -------
    lookup(key, digest) -> address or None
        Address of a resident range with this key and content digest (and marks it recently used).
    reserve(key, length) -> address
        Addresses for ``length`` entries under ``key``: forgets ``key``'s old range and evicts least recently
        used ranges until a gap fits. Records nothing.
    commit(key, digest, start, length)
        Records ``key`` at ``start``.
    allocate(key, digest, length) -> address
        ``reserve`` then ``commit``.
    clear()
        Forget everything (after a reset, a failed command or a resynchronisation).
    """

    def __init__(self, depth):
        self.depth = depth
        self._ranges = OrderedDict()      # key -> (start, length, digest), least recently used first

    def lookup(self, key, digest):
        entry = self._ranges.get(key)
        if entry is None or entry[2] != digest:
            return None
        self._ranges.move_to_end(key)
        return entry[0]

    def _gap(self, length):
        spans = sorted((s, s + n) for s, n, _ in self._ranges.values())
        pos = 0
        for start, end in spans:
            if start - pos >= length:
                return pos
            pos = max(pos, end)
        return pos if self.depth - pos >= length else None

    def reserve(self, key, length):
        if not 1 <= length <= self.depth:
            raise ValueError(f"Cannot allocate {length} entries in a memory of depth {self.depth}")
        self._ranges.pop(key, None)
        while (start := self._gap(length)) is None:
            self._ranges.popitem(last=False)
        return start

    def commit(self, key, digest, start, length):
        if start < 0 or start + length > self.depth:
            raise ValueError(f"Range {start}+{length} does not fit a memory of depth {self.depth}")
        for other, (s, n, _) in list(self._ranges.items()):
            if other != key and s < start + length and start < s + n:
                del self._ranges[other]          # overwritten by this write
        self._ranges.pop(key, None)
        self._ranges[key] = (start, length, digest)

    def allocate(self, key, digest, length):
        start = self.reserve(key, length)
        self.commit(key, digest, start, length)
        return start

    def clear(self):
        self._ranges.clear()

    def __len__(self):
        return len(self._ranges)


