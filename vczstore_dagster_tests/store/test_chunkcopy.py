"""The encoded-chunk copy: local chunk files (memory-mapped) into Icechunk and plain Zarr, chunks
the source never wrote (the fill value) cleared at the destination, and memory bounded by bytes."""

from __future__ import annotations

import numpy as np
import pytest


def _source(path, values, chunks):
    import zarr

    src = zarr.create_array(str(path), shape=values.shape, chunks=chunks, dtype=values.dtype,
                            fill_value=-1, compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=3))
    src[...] = values
    return src


def _icechunk_dst(tmp_path, like):
    import icechunk
    import zarr

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    session = repo.writable_session("main")
    root = zarr.open_group(session.store, mode="w")
    return session, root.create_array("a", shape=like.shape, chunks=like.chunks, dtype=like.dtype,
                                      fill_value=-1, compressors=like.compressors)


@pytest.mark.parametrize("backend", ["icechunk", "zarr"])
def test_copy_reads_back_the_same_values(tmp_path, backend):
    import zarr

    from vczstore_dagster.store.chunkcopy import column_copies, copy_chunks

    rng = np.random.default_rng(1)
    values = rng.integers(0, 100, size=(12, 9), dtype=np.int32)
    values[:, 3:6] = -1  # a column of fill: zarr writes no chunk files for it
    src = _source(tmp_path / "src.zarr", values, (4, 3))
    empty = tmp_path / "src.zarr" / "c" / "0" / "1"
    assert not empty.exists(), "the test needs a chunk the source never wrote"
    if backend == "icechunk":
        session, dst = _icechunk_dst(tmp_path, src)
    else:
        dst = zarr.create_array(str(tmp_path / "dst.zarr"), shape=src.shape, chunks=src.chunks,
                                dtype=src.dtype, fill_value=-1, compressors=src.compressors)
    dst[...] = 7  # stale values where the source has none must not survive the copy
    copies = column_copies(dst, src, 1, range(3), 0)
    ticks = []
    copied = copy_chunks(copies, lambda: ticks.append(1))
    assert len(ticks) == len(copies) == 9
    files = [p for p in (tmp_path / "src.zarr" / "c").rglob("*") if p.is_file()]
    assert copied == sum(p.stat().st_size for p in files)
    np.testing.assert_array_equal(dst[...], values)


def test_copy_into_shifted_columns(tmp_path):
    from vczstore_dagster.store.chunkcopy import column_copies, copy_chunks

    values = np.arange(8 * 6, dtype=np.int32).reshape(8, 6)
    src = _source(tmp_path / "src.zarr", values, (4, 3))
    session, dst = _icechunk_dst(tmp_path, src)
    dst.resize((8, 12))
    copy_chunks(column_copies(dst, src, 1, [2, 3], 2))  # source columns 0 and 1 → 2 and 3
    np.testing.assert_array_equal(dst[:, 6:], values)
    assert (dst[:, :6] == -1).all()


def test_byte_budget_waits_until_bytes_are_given_back():
    """The real budget: a take that would pass the limit waits for a give; a chunk larger than
    the whole budget takes all of it, so it goes alone."""
    import asyncio

    from vczstore_dagster.store.chunkcopy import _ByteBudget

    async def scenario():
        budget = _ByteBudget(10)
        assert await budget.take(6) == 6
        second = asyncio.create_task(budget.take(6))
        await asyncio.sleep(0.05)
        assert not second.done() and budget.used == 6  # 6 + 6 > 10: it waits
        await budget.give(6)
        assert await asyncio.wait_for(second, 5) == 6 and budget.used == 6
        await budget.give(6)
        assert await budget.take(25) == 10 and budget.used == 10
        third = asyncio.create_task(budget.take(1))
        await asyncio.sleep(0.05)
        assert not third.done()
        await budget.give(10)
        assert await asyncio.wait_for(third, 5) == 1

    asyncio.run(scenario())


def test_bytes_in_flight_are_bounded(tmp_path, monkeypatch):
    """Copies into a real local store that takes its time writing: with a budget of one chunk,
    one chunk is written at a time (with a large one, several at once), and nothing is lost."""
    import asyncio

    import zarr
    from zarr.storage import LocalStore

    from vczstore_dagster.store import chunkcopy

    class SlowStore(LocalStore):
        """Writes for real, after a short wait, and records the bytes being written at once."""

        writing = peak = 0

        async def set(self, key, value):
            SlowStore.writing += len(value)
            SlowStore.peak = max(SlowStore.peak, SlowStore.writing)
            await asyncio.sleep(0.005)
            await super().set(key, value)
            SlowStore.writing -= len(value)

    rng = np.random.default_rng(2)
    values = rng.random((64, 64)).astype(np.float32)
    src = _source(tmp_path / "src.zarr", values, (16, 16))
    size = max(p.stat().st_size for p in (tmp_path / "src.zarr" / "c").rglob("*") if p.is_file())
    peaks = {}
    for budget in (64 * size, size + 1):
        monkeypatch.setattr(chunkcopy, "MAX_BYTES_IN_FLIGHT", budget)
        SlowStore.peak = 0
        dst = zarr.create_array(SlowStore(str(tmp_path / f"dst-{budget}.zarr")), shape=src.shape,
                                chunks=src.chunks, dtype=src.dtype, fill_value=-1,
                                compressors=src.compressors)
        chunkcopy.copy_chunks(chunkcopy.column_copies(dst, src, 1, range(4), 0))
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / f"dst-{budget}.zarr"))[...],
                                      values)
        peaks[budget] = SlowStore.peak
    assert peaks[64 * size] > 2 * size, "positive control: unbounded copies overlap"
    assert 0 < peaks[size + 1] <= size + 1, peaks
