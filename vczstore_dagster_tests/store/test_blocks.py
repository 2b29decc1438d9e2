"""The block runner that every re-encode goes through: all blocks run, failures surface, the
worker count is the operator's to set, and reads split by source chunk return the same values."""

from __future__ import annotations

import threading

import numpy as np
import pytest


def test_every_block_runs_once_and_counts_add_up():
    from vczstore_dagster.store.blocks import run_blocks

    seen, lock = [], threading.Lock()

    def block(i):
        def run():
            with lock:
                seen.append(i)
            return i % 3 + 1
        return run

    reported = []
    written = run_blocks((block(i) for i in range(50)), on_block=reported.append, workers=4)
    assert sorted(seen) == list(range(50))
    assert written == sum(i % 3 + 1 for i in range(50)) == sum(reported)


def test_first_failure_is_raised_and_later_blocks_do_not_start():
    from vczstore_dagster.store.blocks import run_blocks
    from vczstore_dagster.store.errors import InvalidInputError

    started = []

    def block(i):
        def run():
            started.append(i)
            if i == 3:
                raise InvalidInputError("block 3: a value does not fit")
            return 1
        return run

    with pytest.raises(InvalidInputError, match="block 3"):
        run_blocks((block(i) for i in range(1000)), workers=2)
    assert len(started) < 1000


@pytest.mark.parametrize("setting, expected", [("1", 1), ("3", 3), (" 2 ", 2), ("0", 1)])
def test_workers_from_the_environment(monkeypatch, setting, expected):
    from vczstore_dagster.store.blocks import default_workers

    monkeypatch.setenv("VCZSTORE_WORKERS", setting)
    assert default_workers() == expected


def test_bad_workers_setting_names_the_variable(monkeypatch):
    from vczstore_dagster.store.blocks import default_workers
    from vczstore_dagster.store.errors import InvalidInputError

    monkeypatch.setenv("VCZSTORE_WORKERS", "two")
    with pytest.raises(InvalidInputError, match="VCZSTORE_WORKERS='two'"):
        default_workers()


def test_read_by_source_chunk_matches_a_plain_read(tmp_path):
    import zarr

    from vczstore_dagster.store.blocks import read_by_source_chunk

    values = np.arange(10 * 25 * 2, dtype=np.int32).reshape(10, 25, 2)
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=values.shape, chunks=(4, 7, 2),
                              dtype=values.dtype)
    array[...] = values
    for lo, hi in [(0, 25), (3, 9), (7, 14), (13, 20), (5, 6), (21, 25)]:
        got = read_by_source_chunk(array, slice(4, 8), slice(lo, hi))
        np.testing.assert_array_equal(got, values[4:8, lo:hi])
