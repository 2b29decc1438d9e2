"""Copy encoded chunks from one array to another without decoding them.

Chunks of a local source are memory-mapped and handed to the destination store as they are, so
the destination reads them straight from the page cache. Reading them into Python first costs
more than the copy itself: every chunk lands in freshly allocated memory, and faulting in those
pages (tens of MB per chunk of a float field) halves the throughput on a 2-core machine.

What is in flight is bounded by bytes as well as by chunks, so peak memory does not grow with the
chunk size: at most ``MAX_BYTES_IN_FLIGHT`` (or one chunk, when a chunk is larger).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import mmap
import os
from collections.abc import Callable, Iterable

MAX_CHUNKS_IN_FLIGHT = 64
MAX_BYTES_IN_FLIGHT = 128 * 2**20


@dataclasses.dataclass(frozen=True)
class ChunkCopy:
    src: object  # zarr StorePath of the source array
    src_key: str
    dst: object  # zarr StorePath of the destination array
    dst_key: str


def column_copies(dst, src, axis: int, cols: Iterable[int], c0: int) -> list[ChunkCopy]:
    """The chunks of destination columns ``cols`` (along ``axis``), taken from source columns
    ``c - c0``; grid positions the source does not have are skipped."""
    grid = [range(-(-size // ch)) for size, ch in zip(dst.shape, dst.chunks, strict=True)]
    src_grid = [-(-size // ch) for size, ch in zip(src.shape, src.chunks, strict=True)]
    src_path, dst_path = src.async_array.store_path, dst.async_array.store_path
    copies = []
    for c in cols:
        ranges = list(grid)
        ranges[axis] = [c]
        for coords in itertools.product(*ranges):
            scoords = list(coords)
            scoords[axis] = c - c0
            if any(sc >= n for sc, n in zip(scoords, src_grid, strict=True)):
                continue
            copies.append(ChunkCopy(src_path, src.metadata.encode_chunk_key(tuple(scoords)),
                                    dst_path, dst.metadata.encode_chunk_key(coords)))
    return copies


def copy_chunks(copies: list[ChunkCopy], on_chunk: Callable[[], None] | None = None) -> int:
    """Copy every chunk (a missing source chunk deletes the destination's); returns the bytes copied."""
    from zarr.core.sync import sync

    return sync(_copy_all(copies, on_chunk))


async def _copy_all(copies, on_chunk) -> int:
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    budget = _ByteBudget(MAX_BYTES_IN_FLIGHT)
    todo = iter(copies)
    copied = 0

    async def worker():
        nonlocal copied
        for job in todo:
            path = local_path(job.src, job.src_key)
            size = _size(path) if path is not None else None
            taken = await budget.take(size or 0)
            try:
                if path is not None:
                    buf = map_file(path, size)
                    buf = None if buf is None else proto.buffer.from_bytes(buf)
                else:
                    buf = await (job.src / job.src_key).get(prototype=proto)
                if buf is None:
                    await (job.dst / job.dst_key).delete()
                else:
                    await (job.dst / job.dst_key).set(buf)
                    copied += len(buf)
                del buf
            finally:
                await budget.give(taken)
            if on_chunk is not None:
                on_chunk()

    await asyncio.gather(*(worker() for _ in range(min(MAX_CHUNKS_IN_FLIGHT, len(copies)))))
    return copied


def local_path(store_path, key) -> str | None:
    """The file of ``key`` when ``store_path`` is in a local zarr store, else None."""
    from zarr.storage import LocalStore

    store = store_path.store
    if not isinstance(store, LocalStore):
        return None
    return os.path.join(store.root, store_path.path, key)


def _size(path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def map_file(path, size: int | None = -1):
    """The file memory-mapped read-only (``b""`` when empty), or None when it does not exist;
    ``size``: its size when known (None: known to be missing)."""
    if size == -1:
        size = _size(path)
    if size is None:
        return None
    if size == 0:
        return b""
    with open(path, "rb") as f:
        return mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)


class _ByteBudget:
    def __init__(self, limit: int):
        self.limit, self.used = limit, 0
        self.changed = asyncio.Condition()

    async def take(self, n: int) -> int:
        n = min(n, self.limit)
        async with self.changed:
            await self.changed.wait_for(lambda: self.used + n <= self.limit)
            self.used += n
        return n

    async def give(self, n: int) -> None:
        async with self.changed:
            self.used -= n
            self.changed.notify_all()
