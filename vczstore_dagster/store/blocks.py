"""Rewrite arrays one block at a time, on every core, with memory bounded by the blocks in flight.

A block is one variant chunk × one sample-chunk column of one array (all its trailing chunks):
a read, a change in memory and a write of whole chunks, so two blocks never touch the same chunk
and can run side by side. Decoding and encoding (blosc, zstd) release the GIL, so each worker
keeps a core busy; a block of a float field is tens of MB, so at most ``workers`` of them are held.

A :class:`Block` is a description as well as a callable: the array it writes, its position and a
module-level ``rewrite`` function, so that a Dask worker can run it against its own session
(:mod:`vczstore_dagster.store.cluster`). ``column_blocks`` makes plain closures, for local use.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from vczstore_dagster.store.chunkcodec import read_by_source_chunk
from vczstore_dagster.store.errors import InvalidInputError


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of ``target``: ``rewrite(target, samples, variants)`` reads it, changes it and
    writes its whole chunks, returning how many. ``rewrite`` is a module-level function (or a
    ``functools.partial`` of one over picklable values: source arrays, indexes, fill values)."""

    target: Any  # the zarr array written; its metadata may differ from the stored one
    samples: slice
    variants: slice | None  # None for 1-d arrays (sample_id)
    rewrite: Callable[[Any, slice, slice | None], int]

    def __call__(self) -> int:
        return self.rewrite(self.target, self.samples, self.variants)


def default_workers() -> int:
    """``VCZSTORE_WORKERS`` when set (to share a machine), else one per core this process may use."""
    setting = os.environ.get("VCZSTORE_WORKERS", "").strip()
    if setting:
        try:
            return max(1, int(setting))
        except ValueError:
            raise InvalidInputError(f"VCZSTORE_WORKERS={setting!r}: expected a whole number") from None
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _positions(array, axis: int, lo: int, hi: int) -> list[tuple[slice, slice | None]]:
    """``(samples, variants)`` of each block of samples ``lo:hi`` (within one sample-chunk column)
    of ``array``: one per variant chunk (``variants`` is None for 1-d arrays)."""
    samples = slice(lo, hi)
    if axis == 0:
        return [(samples, None)]
    n, step = array.shape[0], array.chunks[0]
    return [(samples, slice(v0, min(n, v0 + step))) for v0 in range(0, n, step)]


def array_blocks(array, axis: int, lo: int, hi: int, rewrite) -> list[Block]:
    """The :class:`Block` s of samples ``lo:hi`` of ``array``, each ``rewrite(array, samples, variants)``."""
    return [Block(array, samples, variants, rewrite)
            for samples, variants in _positions(array, axis, lo, hi)]


def column_blocks(array, axis: int, lo: int, hi: int,
                  rewrite: Callable[[slice, slice | None], int]) -> list[Callable[[], int]]:
    """The same blocks as closures ``rewrite(samples, variants)``, for work that stays local."""
    return [functools.partial(rewrite, samples, variants)
            for samples, variants in _positions(array, axis, lo, hi)]


def seen_as(array, meta):
    """``array`` read and written through ``meta``, which is never written to the store."""
    import zarr
    from zarr.core.array import AsyncArray

    return zarr.Array(AsyncArray(metadata=meta, store_path=array.async_array.store_path))


def trailing_chunks(array) -> int:
    """Chunks per (variant chunk, sample chunk) position: one per chunk of the trailing dims."""
    n = 1
    for size, chunk in zip(array.shape[2:], array.chunks[2:], strict=True):
        n *= -(-size // chunk)
    return n


def run_blocks(blocks: Iterable[Callable[[], int]], *, on_block: Callable[[int], None] | None = None,
               workers: int | None = None, progress: str | None = None) -> int:
    """Run every block, ``workers`` at a time (default: one per core); returns the chunks written.
    The first failure stops the rest and is raised. ``progress``: a tqdm bar with that label,
    counting blocks (``blocks`` must then be a list)."""
    if progress is not None:
        from tqdm import tqdm

        with tqdm(total=len(blocks), unit="block", desc=progress) as bar:

            def tick(n: int) -> None:
                bar.update(1)
                if on_block is not None:
                    on_block(n)

            return run_blocks(blocks, workers=workers, on_block=tick)
    workers = workers or default_workers()
    limit_retained_memory()
    written = 0

    def done(future):
        nonlocal written
        n = future.result()
        release_freed_memory()
        written += n
        if on_block is not None:
            on_block(n)

    with ThreadPoolExecutor(workers, thread_name_prefix="vczstore-block") as pool:
        pending = set()
        try:
            for block in blocks:
                if len(pending) >= workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        done(f)
                pending.add(pool.submit(block))
            for f in list(pending):
                pending.discard(f)
                done(f)
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    return written


def reencode_blocks(src, dst) -> list[Block]:
    """The blocks that decode all of sample array ``src`` (samples on axis 1) and encode it into
    ``dst`` (same shape and chunks; its own codec and dtype)."""
    s, n = dst.chunks[1], dst.shape[1]
    rewrite = functools.partial(_decode_into, src=src)
    return [b for lo in range(0, n, s) for b in array_blocks(dst, 1, lo, min(lo + s, n), rewrite)]


def _decode_into(dst, samples, variants, *, src) -> int:
    dst[variants, samples] = read_by_source_chunk(src, variants, samples)
    return trailing_chunks(dst)


def release_freed_memory() -> None:
    """Hand memory freed by the codec threads back to the OS (glibc keeps it otherwise, and a
    long rewrite's peak RSS grows with it). A no-op where glibc is missing."""
    libc = _glibc()
    if libc:
        libc.malloc_trim(0)


def limit_retained_memory() -> None:
    """Have glibc map every allocation of 4 MB or more on its own and unmap it when freed. By
    default glibc raises that threshold to the size of the last large block freed (up to 32 MB),
    so the encoded chunks (tens of MB, allocated in one thread, freed in another) pile up in the
    threads' arenas, out of malloc_trim's reach: 60-100 MB more peak RSS on a rewrite of full-size
    chunks, for no gain in speed (measured). Process-wide and idempotent."""
    global _tuned
    libc = _glibc()
    if libc and not _tuned:
        libc.mallopt(-3, 4 * 2**20)  # M_MMAP_THRESHOLD
        _tuned = True


def _glibc():
    global _libc
    if _libc is None:
        try:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
            _libc.malloc_trim, _libc.mallopt  # noqa: B018 (glibc, not musl)
        except (OSError, AttributeError):
            _libc = False
    return _libc


_libc = None
_tuned = False
