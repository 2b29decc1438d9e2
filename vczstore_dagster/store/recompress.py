"""Chunks written at a fast level of the store's own codec, and bringing them back to its level.

bio2zarr compresses every array with blosc zstd at level 7 (zstd level 13 inside blosc): float
fields encode at 7-50 MB/s a core, which makes any rewrite of a chunk column slow. Rewrites on an
operator's hot path (removing samples, redacting a release, the columns an append re-encodes) write
their chunks with the same codec at level 1 instead: 10-25× faster for 4-9% more bytes on those
chunks. The arrays' metadata keeps the store's level, and readers decode either level alike (a blosc
or zstd frame does not record its level).

The ledger lists the sample-chunk columns that hold such chunks (``fast_level_columns``); ``info``
reports them with their bytes and what they cost over the store's level; :func:`recompress_store`
(``vczstore recompress``) re-encodes them at the store's level in one commit, off the hot path.
A release keeps the chunks it was tagged with: its own ledger tells which are at the fast level.
"""

from __future__ import annotations

import dataclasses
import time

from vczstore_dagster.store import schema
from vczstore_dagster.store.blocks import array_blocks, seen_as, trailing_chunks
from vczstore_dagster.store.chunkcodec import read_by_source_chunk, rewrite_chunks
from vczstore_dagster.store.cluster import Cluster, ClusterWork, connect, run_work
from vczstore_dagster.store.errors import AuditError, InvalidInputError
from vczstore_dagster.store.ledger import read_ledger, write_ledger
from vczstore_dagster.store.transaction import commit

FAST_LEVEL = 1


def fast_level(array):
    """The same array writing its chunks with its blosc or zstd compressor at level 1; never written
    to the store (the metadata keeps the store's level)."""
    meta = array.metadata
    if meta.zarr_format == 3:
        meta = dataclasses.replace(meta, codecs=tuple(_at_fast_level(c) for c in meta.codecs))
    else:
        meta = dataclasses.replace(meta, compressor=_at_fast_level(meta.compressor))
    return seen_as(array, meta)


def writes_faster(array) -> bool:
    """Whether :func:`fast_level` changes how ``array`` is written (a level above 1)."""
    return fast_level(array).metadata != array.metadata


def _at_fast_level(codec):
    import numcodecs
    from zarr.codecs import BloscCodec, ZstdCodec

    key = "clevel" if isinstance(codec, BloscCodec | numcodecs.Blosc) else "level"
    if isinstance(codec, BloscCodec | ZstdCodec) and getattr(codec, key) > FAST_LEVEL:
        return dataclasses.replace(codec, **{key: FAST_LEVEL})
    if isinstance(codec, numcodecs.Blosc | numcodecs.Zstd) and codec.get_config()[key] > FAST_LEVEL:
        return numcodecs.get_codec({**codec.get_config(), key: FAST_LEVEL})
    return codec


def note_fast_columns(ledger, columns) -> None:
    """Record in ``ledger`` that sample-chunk ``columns`` hold chunks written at the fast level."""
    ledger.fast_level_columns = sorted(set(ledger.fast_level_columns) | {int(c) for c in columns})


# ------------------------------------------------------------------------------------------------
# What they cost (for ``info``)
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FastLevelReport:
    columns: list[int]  # sample-chunk columns holding chunks written at the fast level
    num_columns: int  # sample-chunk columns in the store
    bytes: int  # what the chunks of those columns take now
    extra_bytes: int | None  # estimated cost over the store's level (None: nothing to compare with)


def fast_level_report(group, columns) -> FastLevelReport | None:
    """The stored bytes of ``columns`` and what they cost over the store's level, estimated per
    sample from the columns written at the store's level (removed samples compress better, so
    this leans low after many removals). None when there are no such columns."""
    if not columns:
        return None
    from zarr.core.sync import sync

    n, s = schema.num_samples(group), schema.samples_chunk_size(group)
    columns = [c for c in columns if c * s < n]
    fast_samples = sum(min(n, (c + 1) * s) - c * s for c in columns)
    fast_bytes = extra = 0
    for array in schema.sample_arrays(group).values():
        if not writes_faster(array):
            continue
        here = _bytes([array], columns)
        store_path = array.async_array.store_path
        total = sync(store_path.store.getsize_prefix(store_path.path + "/"))  # and its zarr.json
        fast_bytes += here
        if extra is not None and n > fast_samples:
            per_sample = (total - here) / (n - fast_samples)
            extra += here - per_sample * fast_samples
        else:
            extra = None
    return FastLevelReport(columns, -(-n // s), fast_bytes, None if extra is None else int(extra))


async def _sizes(store, keys):
    import asyncio

    async def size(key):
        try:
            return await store.getsize(key)
        except (FileNotFoundError, KeyError):  # never written: reads as the fill value
            return 0

    return await asyncio.gather(*(size(k) for k in keys))


def _chunk_keys(array, columns) -> list[str]:
    import itertools

    axis = schema.sample_axis(array)
    grid = [range(-(-size // chunk)) for size, chunk in zip(array.shape, array.chunks, strict=True)]
    grid[axis] = [c for c in columns if c < len(grid[axis])]
    return [array.metadata.encode_chunk_key(coords) for coords in itertools.product(*grid)]


# ------------------------------------------------------------------------------------------------
# Recompress
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RecompressResult:
    columns: list[int]  # the columns re-encoded at the store's level
    chunks_rewritten: int
    bytes_before: int  # the chunks of those columns, before and after
    bytes_after: int
    columns_left: list[int]  # still at the fast level (not asked for)
    snapshot_id: str | None
    seconds: float
    cluster: ClusterWork | None = None  # what ran on a Dask cluster


def recompress_store(store, columns=None, *, progress: bool = False,
                     dask_scheduler: str | Cluster | None = None) -> RecompressResult:
    """Re-encode the chunks of the ledger's fast-level ``columns`` (default: all of them) at the
    store's own level, in one commit; the values do not change. A column the ledger does not list
    is refused, the store untouched; nothing to do commits nothing."""
    t0 = time.perf_counter()
    head = store.readonly_group()
    wanted = _columns(head, read_ledger(head).fast_level_columns, columns)
    if not wanted:
        return RecompressResult([], 0, 0, 0, [], None, time.perf_counter() - t0)

    def operation(group, parent):
        ledger = read_ledger(group)
        todo = _columns(group, ledger.fast_level_columns, columns)
        arrays = [a for a in schema.sample_arrays(group).values() if writes_faster(a)]
        before = _bytes(arrays, todo)
        s = schema.samples_chunk_size(group)
        blocks = []
        for array in arrays:
            axis = schema.sample_axis(array)
            for c in todo:
                hi = min((c + 1) * s, array.shape[axis])
                if c * s < hi:
                    blocks += array_blocks(array, axis, c * s, hi, _rewrite)
        chunks, _ = run_work(blocks, cluster=cluster, progress="recompress" if progress else None)
        ledger.fast_level_columns = [c for c in ledger.fast_level_columns if c not in set(todo)]
        write_ledger(group, ledger)
        return todo, chunks, before, _bytes(arrays, todo), ledger.fast_level_columns

    def audit(after, result):
        left = set(read_ledger(after).fast_level_columns)
        if left & set(result[0]):
            raise AuditError("audit: recompressed columns are still listed at the fast level")

    with connect(dask_scheduler) as cluster:
        done = commit(store, operation, audit=audit,
                      message=f"recompress {len(wanted)} sample-chunk column(s)",
                      metadata={"operation": "recompress", "columns": len(wanted)})
        ran = cluster.take_work() if cluster is not None else None
    todo, chunks, before, after, left = done.result
    return RecompressResult(todo, chunks, before, after, left, done.snapshot_id,
                            time.perf_counter() - t0, ran)


def _columns(group, listed, asked) -> list[int]:
    """The columns to recompress: ``asked`` (each must be listed), else every listed one."""
    if asked is None:
        return sorted(listed)
    asked = sorted({int(c) for c in asked})
    listed_set = set(listed)
    for c in asked:
        if c not in listed_set:
            have = ", ".join(map(str, sorted(listed))) or "none"
            raise InvalidInputError(
                f"sample-chunk column {c} holds no chunks written at the fast level "
                f"(columns at the fast level: {have})")
    return asked


def _rewrite(array, samples, variants) -> int:
    written = rewrite_chunks(array, samples, variants, lambda values: None)
    if written is not None:
        return written
    if variants is None:
        array[samples] = array[samples]
        return 1
    array[variants, samples] = read_by_source_chunk(array, variants, samples)
    return trailing_chunks(array)


def _bytes(arrays, columns) -> int:
    from zarr.core.sync import sync

    total = 0
    for array in arrays:
        path = array.async_array.store_path.path
        keys = [f"{path}/{k}" for k in _chunk_keys(array, columns)]
        total += sum(sync(_sizes(array.async_array.store_path.store, keys)))
    return total
