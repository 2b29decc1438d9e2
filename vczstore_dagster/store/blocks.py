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
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

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


def rewrite_chunks(array, samples: slice, variants: slice, change: Callable[[Any], None]) -> int | None:
    """Apply ``change(values)`` in place to each chunk of block ``(variants, samples)`` of ``array``
    (samples on axis 1, the block on chunk boundaries) and write it back whole; returns the chunks
    written. Each chunk's stored bytes are decoded with the array's codec straight into a buffer
    this thread reuses, and encoded again with the codec ``array``'s metadata gives (its level):
    none of zarr's per-call indexing, and no fresh pages to fault in for each decoded chunk.
    None when the array's encoding is not one compressor over the chunk's bytes (strings,
    filters, transposes): the caller goes through zarr."""
    import itertools

    import numpy as np
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    codec = _chunk_codec(array)
    if codec is None or variants is None:
        return None
    meta, chunks = array.metadata, array.chunks
    if samples.start % chunks[1] or variants.start % chunks[0]:
        raise ValueError(f"block {variants}, {samples} of {array.path} is not on chunk boundaries")
    dtype = np.dtype(array.dtype)
    size = int(np.prod(chunks)) * dtype.itemsize
    proto = default_buffer_prototype()
    store_path = array.async_array.store_path
    trailing = [range(-(-n // c)) for n, c in zip(array.shape[2:], chunks[2:], strict=True)]
    written = 0
    for rest in itertools.product(*trailing):
        coords = (variants.start // chunks[0], samples.start // chunks[1], *rest)
        where = store_path / meta.encode_chunk_key(coords)
        raw = sync(where.get(prototype=proto))
        values = _buffer(size).view(dtype).reshape(chunks)
        if raw is None:  # never written: the array's fill value
            values[...] = _zarr_fill(array)
        else:
            codec.decode(raw.as_numpy_array(), out=values)
        change(values)
        encoded = codec.encode(values if meta.zarr_format == 2 else values.reshape(-1).view(np.uint8))
        sync(where.set(proto.buffer.from_bytes(encoded)))
        written += 1
    return written


def _chunk_codec(array):
    """The numcodecs compressor that is an array's whole chunk encoding (what bio2zarr writes for
    numeric fields: little-endian bytes, then blosc or zstd), configured as zarr configures it;
    None for anything else."""
    import numcodecs
    import numpy as np

    meta = array.metadata
    if getattr(array.dtype, "kind", "O") not in "biuf" or np.dtype(array.dtype).byteorder == ">":
        return None
    if meta.zarr_format == 2:
        ok = not meta.filters and meta.order == "C"
        codec = meta.compressor if ok else None
        return codec if isinstance(codec, numcodecs.Blosc | numcodecs.Zstd) else None
    codecs = [c.to_dict() for c in meta.codecs]
    if len(codecs) != 2 or codecs[0]["name"] != "bytes":
        return None
    if (codecs[0].get("configuration") or {}).get("endian", "little") != "little":
        return None
    name, config = codecs[1]["name"], dict(codecs[1].get("configuration") or {})
    if name == "blosc":
        shuffle = ["noshuffle", "shuffle", "bitshuffle"].index(config["shuffle"])
        return numcodecs.Blosc.from_config({**config, "shuffle": shuffle})
    if name == "zstd":
        return numcodecs.Zstd.from_config(config)
    return None


def _zarr_fill(array):
    """What zarr reads for a chunk never written."""
    from vczstore_dagster.store import schema

    fill = array.metadata.fill_value
    return schema.default_fill(array) if fill is None else fill


_buffers = threading.local()


def _buffer(size: int):
    """A byte buffer of at least ``size`` bytes, one per thread, reused from chunk to chunk."""
    import numpy as np

    buf = getattr(_buffers, "buf", None)
    if buf is None or buf.nbytes < size:
        _buffers.buf = buf = np.empty(size, dtype=np.uint8)
    return buf[:size]


def release_freed_memory() -> None:
    """Hand memory freed by the codec threads back to the OS (glibc keeps it otherwise, and a
    long rewrite's peak RSS grows with it). A no-op where glibc's malloc_trim is missing."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def read_by_source_chunk(array, variants: slice, samples: slice):
    """``array[variants, samples]``, decoding one of ``array``'s sample chunks at a time: a block
    that spans several source chunks then holds one of them decoded, not all."""
    return SourceRow(array, variants).read(samples.start, samples.stop)


class SourceRow:
    """Samples of variant chunk ``variants`` of ``array`` (samples on axis 1), read in increasing
    order: each of its sample chunks is decoded once, straight into place where a read wants all
    of it; a chunk that a read wants only the start of is kept for the next read."""

    def __init__(self, array, variants: slice):
        self.array, self.variants = array, variants
        self._kept: tuple[int, object] | None = None  # (chunk index, its decoded values)

    def read(self, a: int, b: int):
        import numpy as np

        array, step, n = self.array, self.array.chunks[1], self.array.shape[1]
        out = np.empty((self.variants.stop - self.variants.start, b - a, *array.shape[2:]),
                       dtype=array.dtype)
        x = a
        while x < b:
            k = x // step
            k0, k1 = k * step, min(n, (k + 1) * step)
            y = min(b, k1)
            part = out[:, x - a : y - a]
            if self._kept is not None and self._kept[0] == k:
                part[...] = self._kept[1][:, x - k0 : y - k0]
                if y == k1:
                    self._kept = None
            elif y < k1:  # the rest of this chunk belongs to the next read
                self._kept = (k, self._decode(k0, k1))
                part[...] = self._kept[1][:, x - k0 : y - k0]
            else:
                self._decode(x, y, out=part)
            x = y
        return out

    def _decode(self, a: int, b: int, out=None):
        import numpy as np
        from zarr.core.buffer import default_buffer_prototype

        array = self.array
        if out is None:
            out = np.empty((self.variants.stop - self.variants.start, b - a, *array.shape[2:]),
                           dtype=array.dtype)
        nd_buffer = default_buffer_prototype().nd_buffer
        array.get_basic_selection((self.variants, slice(a, b)), out=nd_buffer.from_numpy_array(out))
        return out
