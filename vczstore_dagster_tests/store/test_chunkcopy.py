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


def test_bytes_in_flight_are_bounded(tmp_path, monkeypatch):
    """With a budget smaller than two chunks, chunks go one at a time, and nothing is lost."""
    from vczstore_dagster.store import chunkcopy

    rng = np.random.default_rng(2)
    values = rng.random((64, 64)).astype(np.float32)
    src = _source(tmp_path / "src.zarr", values, (16, 16))
    size = max(p.stat().st_size for p in (tmp_path / "src.zarr" / "c").rglob("*") if p.is_file())
    monkeypatch.setattr(chunkcopy, "MAX_BYTES_IN_FLIGHT", size + 1)
    in_flight, peak = [0], [0]
    original = chunkcopy._ByteBudget.take

    async def take(self, n):
        got = await original(self, n)
        in_flight[0] += got
        peak[0] = max(peak[0], in_flight[0])
        return got

    async def give(self, n):
        in_flight[0] -= n
        async with self.changed:
            self.used -= n
            self.changed.notify_all()

    monkeypatch.setattr(chunkcopy._ByteBudget, "take", take)
    monkeypatch.setattr(chunkcopy._ByteBudget, "give", give)
    session, dst = _icechunk_dst(tmp_path, src)
    chunkcopy.copy_chunks(chunkcopy.column_copies(dst, src, 1, range(4), 0))
    assert 0 < peak[0] <= size + 1
    np.testing.assert_array_equal(dst[...], values)
