"""SIGKILL an append in the middle of writing chunks, and again at (and during) the commit:
afterwards the store opens and equals the state before or the state after, never a mix, and the
next append works.

The engine pauses at a named point when ``VCZSTORE_TEST_PAUSE_AT=chunks|commit`` is set, after
writing ``VCZSTORE_TEST_PAUSE_MARKER``; the test kills the writer while it waits there.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from vczstore_dagster_tests import helpers

NV = 120
SCHUNK = 8


@pytest.fixture
def crash_setup(make_store, vcf_batch, tmp_path, request):
    """A store of 10 samples (a partial chunk column) and a 20-sample batch laid out for it."""

    def setup(kind):
        first = vcf_batch("K", 10, num_variants=NV)
        store, url = make_store(kind, [first], samples_chunk_size=SCHUNK, variants_chunk_size=40)
        later = vcf_batch("K", 20, start=10, num_variants=NV)
        batch = tmp_path / "later.vcz"
        helpers.convert_like(store, [later], batch)
        moto = request.getfixturevalue("moto_s3") if kind == "s3" else None
        return store, url, first, later, batch, moto

    return setup


def _state(store):
    """What a reader sees at main: the snapshot (Icechunk), sample ids and the ledger's batches."""
    from vczstore_dagster.store import open_store, store_info

    fresh = open_store(store.url, storage_options=None if store.location.is_local
                       else store.location.options)
    info = store_info(fresh)
    return fresh, {
        "snapshot": fresh.main_snapshot(),
        "samples": helpers.sample_ids(fresh),
        "batches": [(b.batch_id, b.sample_start, b.sample_stop) for b in info.batches],
    }


def _kill(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _assert_before(store, before, first):
    fresh, state = _state(store)
    assert state == before, f"store changed by a killed append: {state} != {before}"
    if state["snapshot"] is None:
        # plain Zarr: no snapshot id to vouch for the content; read it all
        helpers.assert_matches_bcftools(fresh, [first], cli=False)
    return fresh


def _assert_after(store, before, first, later):
    fresh, state = _state(store)
    assert state["samples"][: len(before["samples"])] == before["samples"]
    assert len(state["samples"]) == len(before["samples"]) + 20
    assert [b[0] for b in state["batches"]].count("later") == 1
    helpers.assert_matches_bcftools(fresh, [first, later], cli=False)
    return fresh


def _recover_and_append(store, batch, first, later, before):
    """The next writer finds a usable store (no stale lock, no half state) and appends."""
    from vczstore_dagster.store import append_batch, open_store

    fresh = open_store(store.url, storage_options=None if store.location.is_local
                       else store.location.options)
    t0 = time.monotonic()
    append_batch(fresh, batch, batch_id="later")
    assert time.monotonic() - t0 < 60
    _assert_after(fresh, before, first, later)


@pytest.mark.parametrize("kind", ["icechunk", "s3"])
@pytest.mark.parametrize("point", ["chunks", "commit"])
def test_sigkill_append(crash_setup, tmp_path, kind, point):
    store, url, first, later, batch, moto = crash_setup(kind)
    _, before = _state(store)
    keys_before = helpers.storage_keys(store, moto)
    marker = tmp_path / "paused"
    env = {"VCZSTORE_TEST_PAUSE_AT": point, "VCZSTORE_TEST_PAUSE_MARKER": str(marker),
           "VCZSTORE_TEST_PAUSE_SECONDS": "300"}
    process = helpers.start_append(store, batch, "later", env=env)
    with helpers.killing(process):
        helpers.wait_for_file(marker, process, timeout=120)
        written = helpers.storage_keys(store, moto) - keys_before
        new_chunks = [k for k in written if k.startswith("chunks/")]
        # killed in the middle: the writer had already written chunks of the new batch
        assert new_chunks, f"nothing written before the pause at {point}: {sorted(written)[:10]}"
        _kill(process)
    _assert_before(store, before, first)
    _recover_and_append(store, batch, first, later, before)


@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_sigkill_during_commit_is_before_or_after(crash_setup, tmp_path, delay):
    """Killed at a moment inside the commit itself (the pause is short and the kill lands while
    Icechunk commits or moves main): the store is exactly before or exactly after."""
    store, url, first, later, batch, _ = crash_setup("icechunk")
    _, before = _state(store)
    marker = tmp_path / "paused"
    env = {"VCZSTORE_TEST_PAUSE_AT": "commit", "VCZSTORE_TEST_PAUSE_MARKER": str(marker),
           "VCZSTORE_TEST_PAUSE_SECONDS": "0.2"}
    process = helpers.start_append(store, batch, "later", env=env)
    with helpers.killing(process):
        helpers.wait_for_file(marker, process, timeout=120)
        time.sleep(0.2 + delay)
        if process.poll() is None:
            _kill(process)
    _, state = _state(store)
    if state == before:
        _assert_before(store, before, first)
        _recover_and_append(store, batch, first, later, before)
    else:
        _assert_after(store, before, first, later)


@pytest.mark.parametrize("point", ["chunks", "commit"])
def test_sigkill_append_plain_zarr(crash_setup, tmp_path, point):
    """Plain Zarr has no transactions; its commit point is the consolidated metadata. Readers
    must see the state before, and the next append must start from it."""
    store, url, first, later, batch, _ = crash_setup("zarr3")
    _, before = _state(store)
    marker = tmp_path / "paused"
    env = {"VCZSTORE_TEST_PAUSE_AT": point, "VCZSTORE_TEST_PAUSE_MARKER": str(marker),
           "VCZSTORE_TEST_PAUSE_SECONDS": "300"}
    process = helpers.start_append(store, batch, "later", env=env)
    with helpers.killing(process):
        helpers.wait_for_file(marker, process, timeout=120)
        _kill(process)
    _assert_before(store, before, first)
    _recover_and_append(store, batch, first, later, before)
