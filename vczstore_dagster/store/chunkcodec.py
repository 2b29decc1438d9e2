"""Chunks read and written through their codec directly, for the rewrites that touch every byte.

bio2zarr encodes a numeric field as its little-endian bytes under one compressor (blosc or zstd).
For such an array a chunk's stored bytes are decoded straight into a buffer that the thread
reuses from chunk to chunk, changed there, encoded and written whole: none of zarr's per-call
indexing, and no fresh pages to fault in for every decoded chunk (on a VM, zeroing and mapping
the pages of a 40 MB chunk costs a sizeable part of decoding it). Encoding uses the compressor of
the ``array`` object given, so a :func:`~vczstore_dagster.store.recompress.fast_level` view writes
at the fast level. Anything else (strings, filters, transposes, trailing dimensions in several
chunks) goes through zarr as before: :func:`chunk_codec` is None for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

_buffers = threading.local()


def chunk_codec(array):
    """The numcodecs compressor that is ``array``'s whole chunk encoding, configured as zarr
    configures it (samples on axis 1, trailing dimensions in one chunk); None for anything else."""
    import numcodecs

    meta = array.metadata
    if getattr(array.dtype, "kind", "O") not in "biuf" or np.dtype(array.dtype).byteorder == ">":
        return None
    if array.ndim < 2 or any(c < n for n, c in zip(array.shape[2:], array.chunks[2:], strict=True)):
        return None
    if meta.zarr_format == 2:
        codec = meta.compressor if not meta.filters and meta.order == "C" else None
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


def buffer(array, slot: str):
    """A chunk-shaped buffer for ``array``, one per thread and ``slot``, reused from chunk to chunk."""
    size = int(np.prod(array.chunks)) * np.dtype(array.dtype).itemsize
    held = getattr(_buffers, slot, None)
    if held is None or held.nbytes < size:
        held = np.empty(size, dtype=np.uint8)
        setattr(_buffers, slot, held)
    return held[:size].view(array.dtype).reshape(array.chunks)


def read_chunk(array, codec, coords, out) -> None:
    """Decode chunk ``coords`` of ``array`` into ``out`` (chunk-shaped); a chunk never written
    reads as the array's fill value."""
    from zarr.core.sync import sync

    from vczstore_dagster.store.chunkcopy import local_path, map_file

    key = array.metadata.encode_chunk_key(tuple(coords))
    path = local_path(array.async_array.store_path, key)
    if path is not None:  # a local file: decoded straight from the page cache
        raw = map_file(path)
    else:
        raw = sync((array.async_array.store_path / key).get(prototype=_prototype()))
        raw = None if raw is None else raw.as_numpy_array()
    if raw is None:
        fill = array.metadata.fill_value
        if fill is None:  # Zarr 2 without a fill value
            from vczstore_dagster.store import schema

            fill = schema.default_fill(array)
        out[...] = fill
    else:
        codec.decode(raw, out=out)
        if hasattr(raw, "close"):
            try:
                raw.close()
            except BufferError:  # a view the codec made is still alive: unmapped when it goes
                pass


def write_chunk(array, codec, coords, values) -> None:
    """Encode chunk-shaped ``values`` (as zarr hands them to the compressor) and write them whole."""
    from zarr.core.sync import sync

    data = values if array.metadata.zarr_format == 2 else values.reshape(-1).view(np.uint8)
    where = array.async_array.store_path / array.metadata.encode_chunk_key(tuple(coords))
    sync(where.set(_prototype().buffer.from_bytes(codec.encode(data))))


def rewrite_chunks(array, samples: slice, variants: slice | None,
                   change: Callable[[Any], None]) -> int | None:
    """Apply ``change(values)`` in place to each chunk of block ``(variants, samples)`` of
    ``array`` (on chunk boundaries) and write it back; returns the chunks written, or None when
    the array is not one :func:`chunk_codec` handles (the caller goes through zarr)."""
    codec = chunk_codec(array)
    if codec is None or variants is None:
        return None
    chunks = array.chunks
    if samples.start % chunks[1] or variants.start % chunks[0]:
        raise ValueError(f"block {variants}, {samples} of {array.path} is not on chunk boundaries")
    values = buffer(array, "chunk")
    coords = (variants.start // chunks[0], samples.start // chunks[1], *[0] * (array.ndim - 2))
    read_chunk(array, codec, coords, values)
    change(values)
    write_chunk(array, codec, coords, values)
    return 1


class SourceRow:
    """Samples of variant chunk ``variants`` of ``array`` (samples on axis 1), read in increasing
    order: each of its sample chunks is decoded once (the last one is kept for the next read)."""

    def __init__(self, array, variants: slice):
        self.array, self.variants = array, variants
        v = array.chunks[0]  # decoded whole when the rows are one of its variant chunks
        one = variants.start % v == 0 and variants.stop <= variants.start + v
        self.codec = chunk_codec(array) if one else None
        self._index, self._values = None, None  # the sample chunk held decoded, and its values

    def read(self, a: int, b: int):
        out = np.empty((self.variants.stop - self.variants.start, b - a, *self.array.shape[2:]),
                       dtype=self.array.dtype)
        self.read_into(a, b, out)
        return out

    def read_into(self, a: int, b: int, out) -> None:
        """Samples ``a:b`` into ``out`` (rows × ``b - a`` samples × trailing dimensions)."""
        array, step = self.array, self.array.chunks[1]
        rows = self.variants.stop - self.variants.start
        x = a
        while x < b:
            k = x // step
            y = min(b, (k + 1) * step, array.shape[1])
            if self._index != k:
                self._values, self._index = self._decode(k), k
            out[:, x - a : y - a] = self._values[:rows, x - k * step : y - k * step]
            x = y

    def _decode(self, k: int):
        array, step = self.array, self.array.chunks[1]
        if self.codec is not None:
            values = buffer(array, "source")
            read_chunk(array, self.codec, (self.variants.start // array.chunks[0], k,
                                           *[0] * (array.ndim - 2)), values)
            return values
        return np.asarray(array.get_basic_selection(
            (self.variants, slice(k * step, min(array.shape[1], (k + 1) * step)))))


def read_by_source_chunk(array, variants: slice, samples: slice):
    """``array[variants, samples]``, decoding one of ``array``'s sample chunks at a time: a block
    that spans several source chunks then holds one of them decoded, not all."""
    return SourceRow(array, variants).read(samples.start, samples.stop)


def regrid_row(dst, samples: slice, variants: slice, src, src_start: int) -> int | None:
    """Write samples ``samples`` of variant chunk ``variants`` of ``dst`` from ``src``'s samples
    ``src_start`` on, one ``dst`` chunk at a time, each ``src`` chunk decoded once: two chunk
    buffers per thread whatever the width. A partly covered ``dst`` chunk keeps what it holds
    beside the range. Returns the chunks written, or None when either array's encoding, dtype or
    trailing shape asks for zarr."""
    codec = chunk_codec(dst)
    if (codec is None or chunk_codec(src) is None or np.dtype(src.dtype) != np.dtype(dst.dtype)
            or src.shape[2:] != dst.shape[2:] or src.chunks[0] != dst.chunks[0]):
        return None
    row = SourceRow(src, variants)
    s, rows = dst.chunks[1], variants.stop - variants.start
    column = buffer(dst, "column")
    lo, written = samples.start, 0
    while lo < samples.stop:
        c = lo // s
        hi = min(samples.stop, (c + 1) * s)
        coords = (variants.start // dst.chunks[0], c, *[0] * (dst.ndim - 2))
        if lo > c * s or hi < (c + 1) * s or rows < dst.chunks[0]:
            read_chunk(dst, codec, coords, column)  # what the range does not cover stays
        row.read_into(src_start + lo - samples.start, src_start + hi - samples.start,
                      column[:rows, lo - c * s : hi - c * s])
        write_chunk(dst, codec, coords, column)
        written += 1
        lo = hi
    return written


def _prototype():
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype()
