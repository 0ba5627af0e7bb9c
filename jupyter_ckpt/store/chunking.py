"""Cutting blobs into content-defined chunks, and the encoding of a stored chunk.

Chunking works page by page (4 KiB, whatever the host's page size), reading the blob in
large windows and handing out zero-copy views:

- A page of zeros is never part of a chunk: it ends the chunk before it, and the ranges of
  zero pages are simply absent from the chunk list (the blob has a hole there).
- Otherwise a chunk ends after a page whose xxh3-64 has its low `mask_bits` bits all zero,
  once the chunk holds at least `min_size` bytes, and always at `max_size` bytes.

Boundaries therefore depend on the content of the pages only, not on their offset in the
blob: when a memory run grows or shrinks by a page, everything after it shifts in the
pages blob, and the chunking falls back in step at the next boundary page, so the chunks
after it are the same as in the previous snapshot and are stored once.

A stored chunk is a 4-byte header and a payload: b"JCz1" + one zstd frame (with the
content size) or b"JCr1" + the raw bytes (for incompressible data, or with compression
off). Its key is the xxh3-128 of the raw bytes, so the same content dedups whatever codec
wrote it, and every read is checked against the key.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator

import xxhash
import zstandard

from .errors import BadImage, CorruptData

PAGE = 4096
WINDOW = 16 << 20  # bytes read from a blob at a time
HEADER_ZSTD = b"JCz1"
HEADER_RAW = b"JCr1"


@dataclass(frozen=True)
class ChunkParams:
    """How blobs are cut. Fixed for a store's lifetime (kept in its config): changing them
    would change every boundary and defeat deduplication against older snapshots."""

    # Measured on ipykernel images (390 MiB, numpy arrays and a Python heap): after a
    # trivial cell, 64K/1M stored 9.3 MiB new, 32K/512K 7.8, 16K/256K 6.1, 4K/64K 2.9, for
    # 1x, 1.9x, 3.6x and 16x as many chunks (objects, and per-chunk work) per snapshot.
    min_size: int = 32 << 10
    max_size: int = 512 << 10
    mask_bits: int = 5  # a boundary page every 2**5 pages on average, past min_size

    def __post_init__(self) -> None:
        if not (PAGE <= self.min_size <= self.max_size and self.min_size % PAGE == 0
                and self.max_size % PAGE == 0 and self.max_size <= WINDOW
                and 0 <= self.mask_bits <= 20):
            raise ValueError(f"invalid chunk parameters {self}")

    def to_dict(self) -> dict[str, int]:
        return {"page": PAGE, "min_size": self.min_size, "max_size": self.max_size,
                "mask_bits": self.mask_bits}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ChunkParams":
        if d.get("page") != PAGE:
            raise ValueError(f"store chunks pages of {d.get('page')} bytes, this reader {PAGE}")
        return cls(min_size=d["min_size"], max_size=d["max_size"], mask_bits=d["mask_bits"])


_ZERO_PAGE = bytes(PAGE)
_ZERO_PAGE_H = xxhash.xxh3_64_intdigest(_ZERO_PAGE)
_ZERO_RUN = 64 << 10  # inside a run of zero pages, skip this much at a time when possible
_ZERO_RUN_BYTES = bytes(_ZERO_RUN)
_ZERO_RUN_H = xxhash.xxh3_64_intdigest(_ZERO_RUN_BYTES)


def _readinto_full(fd: int, view: memoryview, offset: int) -> int:
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


class Cutter:
    """The chunker itself, fed a blob's bytes in order, piece by piece (from a file, or as
    a dump produces them): the chunks are the same however the blob is cut into pieces.
    Every piece but the last must be whole pages. Chunks are (blob offset, bytes) with
    zero pages left out; a chunk is a view of the piece it ends in (kept alive by the
    view) unless it spans pieces, when its parts are joined into new bytes."""

    def __init__(self, params: ChunkParams):
        self._mask = (1 << params.mask_bits) - 1
        self._min, self._max = params.min_size, params.max_size
        self.offset = 0  # bytes fed so far
        self._parts: list[memoryview] = []  # the open chunk's bytes from earlier pieces
        self._held = 0  # their length
        self._at = 0  # blob offset of the open chunk, when _parts holds some of it

    def feed(self, mv: memoryview, last: bool = False) -> Iterator[tuple[int, bytes | memoryview]]:
        """The chunks that end in `mv`, the blob's next bytes (`last`: its final ones)."""
        h64 = xxhash.xxh3_64_intdigest
        page_size, zero_page, zero_h = PAGE, _ZERO_PAGE, _ZERO_PAGE_H
        run, zero_run, zero_run_h = _ZERO_RUN, _ZERO_RUN_BYTES, _ZERO_RUN_H
        mask, min_size, max_size = self._mask, self._min, self._max
        end = len(mv)
        if end % page_size and not last:
            raise ValueError("only the last piece of a blob may end inside a page")
        base = self.offset
        self.offset += end
        start = 0 if self._parts else -1  # offset in mv of the open chunk, -1: none
        held = self._held  # bytes of the open chunk before mv[start]
        o = 0
        while o < end:
            stop = o + page_size
            if stop > end:
                stop = end
            page = mv[o:stop]
            h = h64(page)
            # (bytes(view) == bytes is a memcmp; comparing a memoryview goes byte by byte)
            if h == zero_h and bytes(page) == zero_page or stop - o < page_size \
                    and not any(page):
                if start >= 0:
                    yield self._chunk(base, mv, start, o)
                    start, held = -1, 0
                o = stop
                # a run of zeros: step over whole zero blocks while there are some
                while o + run <= end and h64(mv[o:o + run]) == zero_run_h \
                        and bytes(mv[o:o + run]) == zero_run:
                    o += run
                continue
            if start < 0:
                start = o
            o = stop
            if held + o - start >= max_size or (not h & mask and held + o - start >= min_size):
                yield self._chunk(base, mv, start, o)
                start, held = -1, 0
        if start >= 0:
            if last:
                if held + end - start:
                    yield self._chunk(base, mv, start, end)
            else:
                if not self._parts:
                    self._at = base + start
                self._parts.append(mv[start:end])
                self._held += end - start

    def _chunk(self, base: int, mv: memoryview, start: int, stop: int
               ) -> tuple[int, bytes | memoryview]:
        if not self._parts:
            return base + start, mv[start:stop]
        data = b"".join([*self._parts, mv[start:stop]])
        self._parts, self._held = [], 0
        return self._at, data


def cut_blob(fd: int, size: int, params: ChunkParams, digest: "xxhash.xxh3_128",
             name: str = "blob") -> Iterator[tuple[int, bytes | memoryview]]:
    """Chunks of the `size` bytes of file `fd`, as (blob offset, bytes). Zero pages are left
    out. Every byte read is fed to `digest` in order. The views stay valid as long as they
    are referenced (each window is a fresh buffer)."""
    cutter = Cutter(params)
    read = 0  # bytes of the blob read so far
    while read < size:
        want = min(WINDOW, size - read)
        mv = memoryview(bytearray(want))
        if _readinto_full(fd, mv, read) != want:
            raise BadImage(f"{name}: file is shorter than its recorded size {size}")
        digest.update(mv)
        read += want
        yield from cutter.feed(mv, last=read >= size)


class Codec:
    """Encodes chunks for storage and decodes them back. Safe to share between threads:
    each thread gets its own zstd contexts (a context is not thread-safe)."""

    def __init__(self, compression: str = "zstd", level: int = 1):
        if compression not in ("zstd", "none"):
            raise ValueError(f"unknown compression {compression!r} (zstd or none)")
        self.compression = compression
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def encode(self, data: bytes | memoryview) -> bytes:
        if self.compression == "zstd":
            packed = self._compressor().compress(data)
            if len(packed) < len(data):
                return HEADER_ZSTD + packed
        return HEADER_RAW + bytes(data)

    def decode(self, obj: bytes, size: int, what: str) -> bytes:
        """The raw bytes of a stored object that must hold `size` bytes."""
        head, payload = obj[:4], memoryview(obj)[4:]
        if head == HEADER_RAW:
            data = bytes(payload)
        elif head == HEADER_ZSTD:
            try:
                data = self._decompressor().decompress(payload, max_output_size=size)
            except zstandard.ZstdError as err:
                raise CorruptData(f"{what}: cannot decompress ({err})") from None
        else:
            raise CorruptData(f"{what}: unknown encoding {bytes(head)!r}")
        if len(data) != size:
            raise CorruptData(f"{what}: {len(data)} bytes, expected {size}")
        return data


def encode_document(data: bytes) -> bytes:
    """A metadata document (chunk lists): zstd with a frame checksum."""
    return HEADER_ZSTD + zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data)


def decode_document(obj: bytes, what: str) -> bytes:
    head, payload = obj[:4], obj[4:]
    if head == HEADER_RAW:
        return payload
    if head != HEADER_ZSTD:
        raise CorruptData(f"{what}: unknown encoding {head!r}")
    try:
        with zstandard.ZstdDecompressor().stream_reader(payload) as r:
            return r.read()
    except zstandard.ZstdError as err:
        raise CorruptData(f"{what}: cannot decompress ({err})") from None
